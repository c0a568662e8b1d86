// `npm run bench -- kit`: /heartbeat and /health against the bare-Fastify ceiling.
import { load, measureCeiling, printRows, startServer } from './lib.ts';

export async function benchKit(databaseUrl: string) {
  const ceiling = await measureCeiling();
  const server = await startServer('bench/tessera-server.ts', ['all'], { DATABASE_URL: databaseUrl });
  try {
    await load({ url: `${server.url}/heartbeat`, durationSec: 1 });
    const heartbeat = await load({ url: `${server.url}/heartbeat` });
    const health = await load({ url: `${server.url}/health` });
    printRows('kit', [
      { name: 'ceiling: bare Fastify GET', figure: ceiling.rps, unit: 'req/s' },
      {
        name: 'GET /heartbeat',
        figure: heartbeat.rps,
        unit: 'req/s',
        ceiling: ceiling.rps,
        note: `p99 ${heartbeat.p99} ms`,
      },
      {
        name: 'GET /health (SELECT 1 each)',
        figure: health.rps,
        unit: 'req/s',
        ceiling: ceiling.rps,
        note: `p99 ${health.p99} ms`,
      },
    ]);
  } finally {
    await server.stop();
  }
}
