// The ceiling every figure is compared with: a bare Fastify route, no hooks, same machine, same run.
import Fastify from 'fastify';

const app = Fastify({ logger: false });
app.get('/ceiling', async () => ({ status: 'alive' }));
app.post('/ceiling', async () => ({ ok: true }));
const address = await app.listen({ host: '127.0.0.1', port: Number(process.env.PORT ?? 0) });
process.stdout.write(`LISTENING ${address}\n`);
