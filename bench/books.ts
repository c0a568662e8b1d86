// `npm run bench -- books`: GET /books/:id in the single-process default and through
// api → NATS → worker processes, beside the bare-Fastify ceiling of the same run, plus p99 at a
// fixed 1,000 req/s and the write paths (POST /books, POST /checkout). NATS rows need NATS_URL.
import type autocannon from 'autocannon';
import pg from 'pg';
import { createApiKey } from '../src/kit/auth.ts';
import {
  againstCeiling,
  latencyAtRate,
  load,
  printRows,
  type Row,
  type Server,
  startCeiling,
  startServer,
} from './lib.ts';

const BOOKS = 1000;
/**
 * Book worker processes behind the api. One by default: on a 2-core machine an api and a worker
 * process fill the cores; a second worker adds no capacity there and only more processes to
 * schedule (measured: the same ~0.35× throughput, p99 at 1,000 req/s 5.5 ms instead of 3.5 ms).
 * More cores, more workers: BENCH_BOOKS_WORKERS=N.
 */
const WORKERS = Number(process.env.BENCH_BOOKS_WORKERS ?? 1);

async function seed(databaseUrl: string): Promise<{ key: string; ids: string[] }> {
  const pool = new pg.Pool({ connectionString: databaseUrl, max: 2 });
  try {
    const { key } = await createApiKey(pool, 'bench', ['books']);
    const { rows } = await pool.query<{ id: string }>(
      `INSERT INTO books (tags, name, author, rack_id)
       SELECT ARRAY['bench'], 'Bench title ' || i, 'Author ' || (i % 50), 'rack-' || (i % 10)
       FROM generate_series(1, $1) AS i RETURNING id`,
      [BOOKS],
    );
    return { key, ids: rows.map((r) => r.id) };
  } finally {
    await pool.end();
  }
}

/** A request that reads a random book of the seeded ones. */
const randomGet = (ids: string[]): autocannon.Request[] => [
  {
    method: 'GET',
    setupRequest: (req) => ({ ...req, path: `/books/${ids[Math.floor(Math.random() * ids.length)]}` }),
  },
];

/** Checkouts and returns of random books: 200 or an honest 409, both real work. */
const randomCheckout = (ids: string[]): autocannon.Request[] => [
  {
    method: 'POST',
    setupRequest: (req) => ({
      ...req,
      path: '/checkout',
      body: JSON.stringify({
        id: ids[Math.floor(Math.random() * ids.length)],
        info: { status: Math.random() < 0.5 ? 'checked-out' : 'available' },
      }),
    }),
  },
];

/** One deployment's figures; GET and its latency each beside the bare ceiling, measured alike. */
async function measure(
  server: Server,
  ceiling: Server,
  key: string,
  ids: string[],
  label: string,
  target: number,
): Promise<Row[]> {
  const headers = { authorization: `Bearer ${key}`, 'content-type': 'application/json' };
  const url = server.url;
  await load({ url, headers, requests: randomGet(ids), durationSec: 3 }); // warm-up: JIT, pools, key cache
  const get = await againstCeiling(ceiling, { url, headers, requests: randomGet(ids) });
  const path = () => `/books/${ids[Math.floor(Math.random() * ids.length)]}`;
  const bareAtRate = await latencyAtRate({ url: ceiling.url, headers, rate: 1000, path });
  const atRate = await latencyAtRate({ url, headers, rate: 1000, path });
  const checkout = await load({ url, headers, requests: randomCheckout(ids) });
  const create = await load({
    url: `${url}/books`,
    method: 'POST',
    headers,
    body: JSON.stringify({
      tags: ['bench'],
      info: { name: 'Created', author: 'Bench' },
      rack_id: 'rack-new',
    }),
  });
  const errs = (r: { errors: number }) => (r.errors ? `, ${r.errors} errors` : '');
  const g = get.figure;
  return [
    {
      name: `${label}: GET /books/:id (random ids; the ceiling answers the same requests)`,
      figure: g.rps,
      unit: 'req/s',
      ceiling: get.ceiling.rps,
      target: `≥ ${target}×`,
      pass: g.rps / get.ceiling.rps >= target && g.non2xx === 0,
      note: `p50 ${g.p50} ms, p99 ${g.p99} ms${g.non2xx ? `, ${g.non2xx} non-2xx` : ''}${errs(g)}; ${get.gc}`,
    },
    {
      name: `${label}: GET /books/:id at 1,000 req/s, p99`,
      figure: atRate.p99,
      unit: 'ms',
      ceiling: bareAtRate.p99,
      target: 'p99 ≤ 5 ms',
      pass: atRate.p99 <= 5 && atRate.errors === 0,
      note: `p50 ${atRate.p50} ms, max ${atRate.max} ms, ${Math.round(atRate.rate)} req/s${errs(atRate)}; the bare ceiling at the same rate: p50 ${bareAtRate.p50} ms, p99 ${bareAtRate.p99} ms`,
    },
    {
      name: `${label}: POST /checkout (random book, 200 or 409)`,
      figure: checkout.rps,
      unit: 'req/s',
      note: `p99 ${checkout.p99} ms${errs(checkout)}`,
    },
    {
      name: `${label}: POST /books`,
      figure: create.rps,
      unit: 'req/s',
      note: `p99 ${create.p99} ms${create.non2xx ? `, ${create.non2xx} non-2xx` : ''}${errs(create)}`,
    },
  ];
}

export async function benchBooks(databaseUrl: string) {
  const ceiling = await startCeiling();
  const single = await startServer('bench/tessera-server.ts', ['all'], { DATABASE_URL: databaseUrl });
  const rows: Row[] = [];
  let seeded: { key: string; ids: string[] };
  try {
    seeded = await seed(databaseUrl);
    rows.push(...(await measure(single, ceiling, seeded.key, seeded.ids, 'single process', 0.5)));
  } finally {
    await single.stop();
  }

  const natsUrl = process.env.NATS_URL;
  if (!natsUrl) {
    rows.push({ name: 'api → NATS → worker', figure: 0, unit: 'req/s', note: 'skipped: set NATS_URL' });
  } else {
    const env = { DATABASE_URL: databaseUrl, NATS_URL: natsUrl };
    const workers = await Promise.all(
      Array.from({ length: WORKERS }, () => startServer('bench/tessera-server.ts', ['worker'], env)),
    );
    const api = await startServer('bench/tessera-server.ts', ['api'], env);
    try {
      const label = `api → NATS → ${WORKERS} worker${WORKERS > 1 ? 's' : ''}`;
      rows.push(...(await measure(api, ceiling, seeded.key, seeded.ids, label, 0.3)));
    } finally {
      await api.stop();
      await Promise.all(workers.map((w) => w.stop()));
    }
  }
  await ceiling.stop();
  printRows('books', rows);
}
