// Books over real NATS with real processes: `tessera start --role api` forwarding to three
// `--role worker` processes in the tessera.books queue group. 1,000 mixed requests, then, during one
// run, a SIGTERM to one worker (no request may fail) and a kill -9 to another (only 503s, within
// the RPC timeout), and the data is consistent afterwards.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  json,
  NATS_URL,
  needsNats,
  processDatabase,
  spawnTessera,
  type TesseraProcess,
  testPool,
  waitFor,
} from '../../../test/helpers.ts';
import { createApiKey } from '../../kit/auth.ts';

// Short, so the calls a kill -9 strands fail soon; long enough that no call of the 16-way load on
// four processes sharing two cores reaches it while every worker lives (at 2 s one could, in CI).
const RPC_TIMEOUT_MS = 5000;
const CONCURRENCY = 16;
const EXPECTED = new Set([200, 201, 409]);

interface Result {
  op: string;
  status: number;
  started: number;
  ended: number;
}

async function apiKey(db: string): Promise<string> {
  const pool = testPool(db);
  try {
    return (await createApiKey(pool, 'books nats test', ['books'])).key;
  } finally {
    await pool.end();
  }
}

/** One random request of the mix: reads, searches, checkouts and returns, updates, creates. */
function mixedRequest(base: string, headers: Record<string, string>, ids: string[]) {
  const id = ids[Math.floor(Math.random() * ids.length)]!;
  const r = Math.random();
  const send = (
    op: string,
    path: string,
    method = 'GET',
    body?: unknown,
    extra: Record<string, string> = {},
  ) => ({
    op,
    run: () =>
      fetch(`${base}${path}`, {
        method,
        headers: { ...headers, ...extra, ...(body ? { 'content-type': 'application/json' } : {}) },
        body: body ? JSON.stringify(body) : undefined,
      }),
  });
  if (r < 0.35) return send('get', `/books/${id}`);
  if (r < 0.45) return send('list', `/books?rack_id=rack-${Math.floor(Math.random() * 3)}&limit=20`);
  if (r < 0.5) return send('search', '/books?q=title');
  if (r < 0.7) {
    const status = Math.random() < 0.5 ? 'checked-out' : 'available';
    return send('checkout', '/checkout', 'POST', {
      id,
      info: { status, ...(status === 'checked-out' ? { borrower: 'load' } : {}) },
    });
  }
  if (r < 0.8) return send('update', `/books/${id}`, 'PUT', { tags: [`t${Math.floor(r * 100)}`] });
  if (r < 0.85)
    return send('stale-update', `/books/${id}`, 'PUT', { tags: ['stale'] }, { 'if-match': '"0"' });
  if (r < 0.95) {
    return send('create', '/books', 'POST', {
      tags: ['load'],
      info: { name: `Load title ${Math.random()}`, author: 'Load Author' },
      rack_id: `rack-${Math.floor(Math.random() * 3)}`,
    });
  }
  return send('history', `/books/${id}/history`);
}

/** Runs requests from `concurrency` loops until `count` are sent or `stop()` says so. */
async function drive(
  base: string,
  headers: Record<string, string>,
  ids: string[],
  opts: { count?: number; stop?: () => boolean; results?: Result[] },
): Promise<Result[]> {
  const results: Result[] = opts.results ?? [];
  let sent = 0;
  const loop = async () => {
    while (opts.count !== undefined ? sent < opts.count : !opts.stop!()) {
      sent++;
      const req = mixedRequest(base, headers, ids);
      const started = Date.now();
      let status: number;
      try {
        const res = await req.run();
        await res.arrayBuffer();
        status = res.status;
      } catch {
        status = 0; // connection error: never expected
      }
      results.push({ op: req.op, status, started, ended: Date.now() });
    }
  };
  await Promise.all(Array.from({ length: CONCURRENCY }, loop));
  return results;
}

const tally = (rs: Result[]) =>
  rs.reduce<Record<string, number>>((t, r) => {
    t[`${r.op}:${r.status}`] = (t[`${r.op}:${r.status}`] ?? 0) + 1;
    return t;
  }, {});

async function operationsServed(worker: TesseraProcess): Promise<number> {
  const text = await (await fetch(`${worker.url}/metrics`)).text();
  return text
    .split('\n')
    .filter((l) => l.startsWith('books_operations_total{'))
    .reduce((sum, l) => sum + Number(l.split(' ').pop()), 0);
}

describe('books over NATS: 1 api and 3 worker processes', { skip: needsNats }, async () => {
  if (needsNats) return;
  const db = await processDatabase();
  const env = { DATABASE_URL: db, NATS_URL, RPC_TIMEOUT_MS: String(RPC_TIMEOUT_MS), LOG_LEVEL: 'warn' };
  // Workers log at info so their SHUTDOWN_DONE is visible; the api's access log stays quiet.
  const workers = await Promise.all(
    [1, 2, 3].map(() => spawnTessera('worker', { ...env, LOG_LEVEL: 'info' })),
  );
  const api = await spawnTessera('api', env);
  await Promise.all([...workers, api].map((p) => p.waitHealthy(60000)));
  const headers = { authorization: `Bearer ${await apiKey(db)}` };
  const ids: string[] = [];
  for (let i = 0; i < 30; i++) {
    const res = await fetch(`${api.url}/books`, {
      method: 'POST',
      headers: { ...headers, 'content-type': 'application/json' },
      body: JSON.stringify({
        tags: ['seed'],
        info: { name: `Title ${i}`, author: 'Seed Author' },
        rack_id: `rack-${i % 3}`,
      }),
    });
    assert.equal(res.status, 201);
    ids.push((await json(res)).data.id);
  }

  it('when 1,000 mixed requests go through the api, then every answer is 200, 201 or 409 and all three workers served', async () => {
    const results = await drive(api.url, headers, ids, { count: 1000 });
    assert.equal(results.length, 1000);
    const unexpected = results.filter((r) => !EXPECTED.has(r.status));
    assert.deepEqual(unexpected, [], `unexpected answers: ${JSON.stringify(tally(unexpected))}`);
    assert.ok(
      results.some((r) => r.op === 'checkout' && r.status === 409),
      'checkout conflicts happen in the mix',
    );
    const served = await Promise.all(workers.map(operationsServed));
    for (const [i, n] of served.entries()) assert.ok(n > 50, `worker ${i} served ${n} operations: ${served}`);
  });

  it('when one worker gets SIGTERM and another kill -9 during a run, then no request fails before the kill, only bounded 503s after it, and the data stays consistent', async () => {
    const [graceful, killed, survivor] = workers as [TesseraProcess, TesseraProcess, TesseraProcess];
    // Phases are counted in answered requests, not seconds, so a slow machine only runs longer.
    const results: Result[] = [];
    const answered = (n: number, after = 0) =>
      waitFor(() => results.filter((r) => r.ended >= after).length >= n, {
        timeoutMs: 120000,
        what: `${n} answers`,
      });
    let stopping = false;
    const run = drive(api.url, headers, ids, { stop: () => stopping, results });
    let killAt = Number.POSITIVE_INFINITY;
    try {
      await answered(150);
      const servedBeforeTerm = await operationsServed(graceful);
      const code = await graceful.stop('SIGTERM');
      assert.equal(code, 0, 'the SIGTERMed worker exits 0');
      assert.match(graceful.output(), /SHUTDOWN_DONE/);
      assert.ok(servedBeforeTerm > 0, 'the SIGTERMed worker was serving when the signal came');

      await answered(150, Date.now());
      killAt = Date.now();
      killed.proc.kill('SIGKILL');
      // Long enough for every call the killed worker held to reach its RPC timeout.
      await answered(200, killAt);
      await new Promise((r) => setTimeout(r, RPC_TIMEOUT_MS + 500));
    } finally {
      stopping = true; // a failed assertion above must not leave the load running
    }
    await run;

    const before = results.filter((r) => r.ended < killAt);
    const after = results.filter((r) => r.ended >= killAt);
    const failedBefore = before.filter((r) => !EXPECTED.has(r.status));
    assert.deepEqual(failedBefore, [], `failures around the SIGTERM: ${JSON.stringify(tally(failedBefore))}`);
    const failedAfter = after.filter((r) => !EXPECTED.has(r.status));
    assert.ok(
      failedAfter.every((r) => r.status === 503),
      `after the kill only 503s may fail: ${JSON.stringify(tally(failedAfter))}`,
    );
    // Each load loop has one request in flight; only those on the killed worker can be lost.
    assert.ok(
      failedAfter.length <= CONCURRENCY,
      `${failedAfter.length} 503s, at most ${CONCURRENCY} expected`,
    );
    for (const r of failedAfter) {
      // Bounded by the RPC timeout (plus slack for a loaded machine): a 503, never a hang.
      assert.ok(r.ended - r.started <= RPC_TIMEOUT_MS + 3000, `a 503 took ${r.ended - r.started} ms`);
    }
    const lastFailure = Math.max(killAt, ...failedAfter.map((r) => r.ended));
    assert.ok(lastFailure - killAt <= RPC_TIMEOUT_MS + 3000, '503s stop once the timeout has passed');
    process.stdout.write(
      `# SIGTERM/kill -9 run: ${results.length} requests, ${failedAfter.length} 503s after kill -9\n`,
    );

    // The survivor still answers everything.
    const tail = await drive(api.url, headers, ids, { count: 200 });
    assert.deepEqual(
      tail.filter((r) => !EXPECTED.has(r.status)),
      [],
      'the remaining worker answers everything',
    );
    assert.ok((await operationsServed(survivor)) > 0);

    // Consistency: every book's status and borrower agree with its last history entry, checkouts and
    // returns alternate, every change bumped the version, and the counts agree everywhere.
    const pool = testPool(db);
    try {
      const broken = await pool.query(`
        WITH h AS (
          SELECT book_id, action, borrower, version,
                 lag(action) OVER (PARTITION BY book_id ORDER BY id) AS prev,
                 row_number() OVER (PARTITION BY book_id ORDER BY id DESC) AS from_end,
                 count(*) OVER (PARTITION BY book_id) AS n
          FROM book_history)
        SELECT b.id, b.status, b.borrower, b.version, h.action, h.prev, h.n
        FROM books b LEFT JOIN h ON h.book_id = b.id
        WHERE h.action = h.prev
           OR (h.from_end = 1 AND ((h.action = 'checkout') <> (b.status = 'checked-out') OR h.version > b.version))
           OR (h.book_id IS NULL AND b.status <> 'available')
           OR (b.status = 'available' AND b.borrower IS NOT NULL)
           OR (h.from_end = 1 AND b.version < h.n)`);
      assert.deepEqual(broken.rows, [], 'books agree with their history');
      const { rows } = await pool.query<{ n: number }>('SELECT count(*)::int AS n FROM books');
      const racks = (await json(await fetch(`${api.url}/racks`, { headers }))).data as { books: number }[];
      assert.equal(
        racks.reduce((s, r) => s + r.books, 0),
        rows[0]!.n,
        'GET /racks counts every book',
      );
      const metrics = await (await fetch(`${api.url}/metrics`)).text();
      assert.match(metrics, new RegExp(`^books_total\\{role="api"\\} ${rows[0]!.n}$`, 'm'));
    } finally {
      await pool.end();
    }
  });
});
