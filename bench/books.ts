// `npm run bench -- books`: GET /books/:id in the single-process default and through
// api → NATS → worker processes, beside the bare-Fastify ceiling of the same run, plus p99 at a
// fixed 1,000 req/s and the write paths (POST /books, POST /checkout). NATS rows need NATS_URL.
import type autocannon from 'autocannon';
import pg from 'pg';
import { createApiKey } from '../src/kit/auth.ts';
import {
  ceilingLatencyAtRate,
  latencyAtRate,
  load,
  measureCeiling,
  printRows,
  type RateResult,
  type Row,
  type Server,
  startServer,
} from './lib.ts';

const BOOKS = 1000;
const WORKERS = Number(process.env.BENCH_BOOKS_WORKERS ?? 2);

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

async function measure(
  server: Server,
  key: string,
  ids: string[],
  label: string,
  ceilingAtRate: RateResult,
): Promise<Row[]> {
  const headers = { authorization: `Bearer ${key}`, 'content-type': 'application/json' };
  const url = server.url;
  await load({ url, headers, requests: randomGet(ids), durationSec: 3 }); // warm-up: JIT, pools, key cache
  const get = await load({ url, headers, requests: randomGet(ids) });
  const atRate = await latencyAtRate({
    url,
    headers,
    rate: 1000,
    path: () => `/books/${ids[Math.floor(Math.random() * ids.length)]}`,
  });
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
  return [
    {
      name: `${label}: GET /books/:id`,
      figure: get.rps,
      unit: 'req/s',
      note: `p50 ${get.p50} ms, p99 ${get.p99} ms${get.non2xx ? `, ${get.non2xx} non-2xx` : ''}${errs(get)}`,
    },
    {
      name: `${label}: GET /books/:id at 1,000 req/s, p99`,
      figure: atRate.p99,
      unit: 'ms',
      ceiling: ceilingAtRate.p99,
      note: `p50 ${atRate.p50} ms, max ${atRate.max} ms, ${Math.round(atRate.rate)} req/s${errs(atRate)}`,
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
  const single = await startServer('bench/tessera-server.ts', ['all'], { DATABASE_URL: databaseUrl });
  let seeded: { key: string; ids: string[] };
  try {
    seeded = await seed(databaseUrl);
  } catch (err) {
    await single.stop();
    throw err;
  }
  // The ceiling answers the same random /books/<id> requests, with the same headers.
  const ceiling = await measureCeiling('GET', {
    headers: { authorization: `Bearer ${seeded.key}` },
    requests: randomGet(seeded.ids),
  });
  const ceilingAtRate = await ceilingLatencyAtRate(1000);
  const rows: Row[] = [
    { name: 'ceiling: bare Fastify GET (same random paths)', figure: ceiling.rps, unit: 'req/s' },
    {
      name: 'ceiling: bare Fastify at 1,000 req/s, p99',
      figure: ceilingAtRate.p99,
      unit: 'ms',
      note: `p50 ${ceilingAtRate.p50} ms, max ${ceilingAtRate.max} ms`,
    },
  ];
  const withCeiling = (rs: Row[], target: number | undefined) =>
    rs.map((r, i) =>
      i === 0
        ? {
            ...r,
            ceiling: ceiling.rps,
            ...(target ? { target: `≥ ${target}×`, pass: r.figure / ceiling.rps >= target } : {}),
          }
        : i === 1
          ? { ...r, target: 'p99 ≤ 5 ms', pass: r.figure <= 5 }
          : { ...r, ceiling: ceiling.rps },
    );

  try {
    rows.push(
      ...withCeiling(await measure(single, seeded.key, seeded.ids, 'single process', ceilingAtRate), 0.5),
    );
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
      rows.push(...withCeiling(await measure(api, seeded.key, seeded.ids, label, ceilingAtRate), 0.3));
    } finally {
      await api.stop();
      await Promise.all(workers.map((w) => w.stop()));
    }
  }
  printRows('books', rows);
}
