// `npm run bench -- kit`: /heartbeat and /health, each beside a bare-Fastify ceiling measured in
// interleaved slices.
import { againstCeiling, printRows, startCeiling, startServer } from './lib.ts';

export async function benchKit(databaseUrl: string) {
  const ceiling = await startCeiling();
  const server = await startServer('bench/tessera-server.ts', ['all'], { DATABASE_URL: databaseUrl });
  try {
    const heartbeat = await againstCeiling(ceiling, { url: `${server.url}/heartbeat` });
    const health = await againstCeiling(ceiling, { url: `${server.url}/health` });
    printRows('kit', [
      {
        name: 'GET /heartbeat',
        figure: heartbeat.figure.rps,
        unit: 'req/s',
        ceiling: heartbeat.ceiling.rps,
        note: `p99 ${heartbeat.figure.p99} ms; ${heartbeat.gc}`,
      },
      {
        name: 'GET /health (SELECT 1 each)',
        figure: health.figure.rps,
        unit: 'req/s',
        ceiling: health.ceiling.rps,
        note: `p99 ${health.figure.p99} ms; ${health.gc}`,
      },
    ]);
  } finally {
    await server.stop();
    await ceiling.stop();
  }
}
