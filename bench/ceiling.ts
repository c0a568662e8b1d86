// The ceiling every figure is compared with: a bare Fastify server, no hooks, same machine, same
// run. Any path answers, so a ceiling can be driven with exactly the requests (paths, bodies,
// headers) of the benchmark it stands beside: the load generator then does the same work for both.
import Fastify from 'fastify';

const app = Fastify({ logger: false });
app.get('/*', async () => ({ status: 'alive' }));
app.post('/*', async () => ({ ok: true }));
const address = await app.listen({ host: '127.0.0.1', port: Number(process.env.PORT ?? 0) });
process.stdout.write(`LISTENING ${address}\n`);
