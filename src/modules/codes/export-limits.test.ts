// The CSV export's bounds, over real TCP: a download holds a pool connection (a COPY) for as long as
// its client takes to read it, so clients that stop reading once held the whole pool and every
// other route answered 503. At most MAX_EXPORTS run at once (then 429), a client that stops reading
// is cut after the stall limit, every way an export ends frees its slot and its connection, and HEAD
// answers the headers without running the COPY.
import assert from 'node:assert/strict';
import http from 'node:http';
import { after, describe, it } from 'node:test';
import type pg from 'pg';
import { startPlatform, type TestPlatform, testPool, waitFor } from '../../../test/helpers.ts';
import { EXPORT_RETRY_AFTER_S, MAX_EXPORTS } from './exports.ts';
import { codesModule, createCodesModule } from './index.ts';

/** Rows of the exported campaign: ~20 MB of CSV. A download that stops reading stalls its COPY after ~8.5 MB here (the
 * sockets from PostgreSQL to the client fill up), so the exports are still running when the test looks. */
const ROWS = 400_000;

/** A campaign of ROWS codes, written in one statement (how they got there is not what is tested here). */
async function seed(p: TestPlatform, id: string): Promise<void> {
  const made = await p.app.inject({
    method: 'POST',
    url: '/api/campaigns',
    headers: p.auth,
    payload: { id, name: id, format: { length: 8, alphabet: 'numeric' } },
  });
  assert.equal(made.statusCode, 201, made.body);
  await p.kit.pool.query(
    `WITH c AS (
       UPDATE codes_campaigns SET next_seq = next_seq + $2, available = available + $2, imported = imported + $2
       WHERE id = $1 RETURNING no
     )
     INSERT INTO codes (campaign_no, code, seq) SELECT c.no, lpad(i::text, 8, '0'), i FROM c, generate_series(1, $2) i`,
    [id, ROWS],
  );
}

interface Held {
  req: http.ClientRequest;
  res: http.IncomingMessage;
}

/** GET over its own TCP connection: resolves with the answer's head, its body left unread (paused). */
function open(p: TestPlatform, path: string, method = 'GET'): Promise<Held> {
  return new Promise((resolve, reject) => {
    const req = http.request(`${p.address()}${path}`, { method, headers: p.auth, agent: false }, (res) => {
      res.pause();
      resolve({ req, res });
    });
    req.on('error', reject);
    req.end();
  });
}

/** Reads the rest of an answer: its body, and whether it came whole (false: the server cut it). */
function readAll(held: Held): Promise<{ body: string; complete: boolean }> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    held.res.on('data', (c: Buffer) => chunks.push(c));
    // 'close' comes after 'end' for a whole answer, and alone (or after 'aborted') for a cut one.
    held.res.on('close', () =>
      resolve({ body: Buffer.concat(chunks).toString(), complete: held.res.complete }),
    );
    held.res.on('error', () => undefined);
    held.res.resume();
  });
}

/** Exports of this database's campaigns running in PostgreSQL, and how many wait for their client to read. */
async function copies(db: pg.Pool): Promise<{ running: number; waitingOnClient: number }> {
  const { rows } = await db.query<{ running: number; waiting: number }>(
    `SELECT count(*)::int AS running, count(*) FILTER (WHERE wait_event = 'ClientWrite')::int AS waiting
     FROM pg_stat_activity
     WHERE datname = current_database() AND state = 'active' AND query LIKE 'COPY (%'`,
  );
  return { running: rows[0]!.running, waitingOnClient: rows[0]!.waiting };
}

/** MAX_EXPORTS downloads that stop reading, each stalled in its COPY once this resolves. */
async function holdEverySlot(p: TestPlatform, db: pg.Pool, id: string): Promise<Held[]> {
  const held: Held[] = [];
  for (let i = 0; i < MAX_EXPORTS; i++) {
    const h = await open(p, `/api/campaigns/${id}/codes.csv`);
    held.push(h);
    assert.equal(h.res.statusCode, 200, `export ${i + 1} of ${MAX_EXPORTS}`);
  }
  // Stalled, not done: PostgreSQL waits to write each one's next rows (the campaign is far larger
  // than the sockets hold), so each holds its slot and its connection until something ends it.
  await waitFor(async () => (await copies(db)).waitingOnClient === MAX_EXPORTS, {
    what: `${MAX_EXPORTS} exports stalled in their COPY`,
    timeoutMs: 30_000,
  });
  return held;
}

async function hangUp(held: Held[], db: pg.Pool): Promise<void> {
  for (const h of held) h.req.destroy();
  await waitFor(async () => (await copies(db)).running === 0, {
    what: 'every export ended and its connection released',
    timeoutMs: 30_000,
  });
}

describe('codes: CSV export limits', async () => {
  // The pool one connection over the exports' limit: without the limit, MAX_EXPORTS + 1 downloads
  // that stopped reading held all of it, and every other route waited for a connection, then 503.
  const p = await startPlatform({
    modules: [codesModule],
    role: 'api',
    listen: true,
    env: { DB_POOL_MAX: String(MAX_EXPORTS + 1) },
  });
  const db = testPool(p.databaseUrl);
  after(() => db.end());
  await seed(p, 'big');

  it('when one export more than the limit is asked while the others stall, then it is a 429 with Retry-After and other routes still answer', async () => {
    const held = await holdEverySlot(p, db, 'big');
    try {
      const over = await open(p, '/api/campaigns/big/codes.csv');
      const { body } = await readAll(over);
      assert.equal(over.res.statusCode, 429, body);
      assert.equal(over.res.headers['retry-after'], String(EXPORT_RETRY_AFTER_S));
      const error = JSON.parse(body);
      assert.equal(error.error, 'Too Many Requests');
      assert.match(error.message, new RegExp(`exports are limited to ${MAX_EXPORTS} at once.*retry in`));

      const campaign = await fetch(`${p.address()}/api/campaigns/big`, { headers: p.auth });
      assert.equal(campaign.status, 200, await campaign.clone().text());
      assert.equal(((await campaign.json()) as { inventory: { total: number } }).inventory.total, ROWS);
      const health = await fetch(`${p.address()}/health`);
      assert.equal(health.status, 200, await health.text());
      // Running, not necessarily waiting at this instant: a stalled COPY wakes now and then to write
      // the little its client's socket took (CI once read 3 of 4 waiting). What counts is that the
      // held ones still hold their connections, and the refused one started no COPY.
      assert.equal(
        (await copies(db)).running,
        MAX_EXPORTS,
        'the held exports still run; the refused one ran no COPY',
      );
    } finally {
      await hangUp(held, db);
    }
    // Clients that hung up gave their slots back: every slot can be taken again.
    await hangUp(await holdEverySlot(p, db, 'big'), db);
  });

  it('when HEAD asks for the export, then it answers the headers without running it, even with every slot taken', async () => {
    const held = await holdEverySlot(p, db, 'big');
    try {
      const head = await open(p, '/api/campaigns/big/codes.csv', 'HEAD');
      const { body } = await readAll(head);
      assert.equal(head.res.statusCode, 200);
      assert.equal(body, '');
      assert.equal(head.res.headers['content-type'], 'text/csv; charset=utf-8');
      assert.equal(head.res.headers['content-disposition'], 'attachment; filename="big-codes.csv"');
      assert.equal((await copies(db)).running, MAX_EXPORTS, 'no COPY for the HEAD');
      const unknown = await open(p, '/api/campaigns/nope/codes.csv', 'HEAD');
      assert.equal(unknown.res.statusCode, 404);
      await readAll(unknown);
    } finally {
      await hangUp(held, db);
    }
  });

  it('when a client stops reading, then the export is cut after the stall limit, logged, and its slot and connection are free again', async () => {
    // One export at a time, cut after 1 s without reading (production: MAX_EXPORTS and 30 s).
    const q = await startPlatform({
      modules: [createCodesModule({ exports: { maxConcurrent: 1, stallMs: 1_000 } })],
      role: 'api',
      listen: true,
    });
    const qdb = testPool(q.databaseUrl);
    try {
      await seed(q, 'big');
      const stalled = await open(q, '/api/campaigns/big/codes.csv');
      assert.equal(stalled.res.statusCode, 200);
      const cut = await waitFor(() => q.logs.events('CODES_EXPORT_STALLED')[0], {
        what: 'the stalled export cut',
        timeoutMs: 30_000,
      });
      assert.equal(cut.campaign, 'big');
      assert.equal(cut.level, 40, 'logged at warn');
      await waitFor(async () => (await copies(qdb)).running === 0, {
        what: 'the COPY ended and its connection released',
      });
      // The client finds its download cut short when it reads on.
      const rest = await readAll(stalled);
      assert.equal(rest.complete, false, 'the server ended the answer before its end');

      // The one slot is free: the next export runs, and a client that reads gets all of it.
      const next = await open(q, '/api/campaigns/big/codes.csv');
      assert.equal(next.res.statusCode, 200);
      const whole = await readAll(next);
      assert.equal(whole.complete, true);
      assert.equal(whole.body.trimEnd().split('\n').length, ROWS + 1, 'a header and every code');
      assert.equal(q.logs.events('CODES_EXPORT_STALLED').length, 1);
    } finally {
      await qdb.end();
    }
  });

  it('when the server stops while a client has stopped reading, then the export is cut at once and the stop does not wait for it', async () => {
    const s = await startPlatform({ modules: [codesModule], role: 'api', listen: true });
    const sdb = testPool(s.databaseUrl);
    try {
      await seed(s, 'big');
      const stalled = await open(s, '/api/campaigns/big/codes.csv');
      assert.equal(stalled.res.statusCode, 200);
      await waitFor(async () => (await copies(sdb)).waitingOnClient === 1, { what: 'the export stalled' });
      // Stalled for 30 s before it would be cut; SHUTDOWN_TIMEOUT_MS (9 s) would kill the process first.
      await s.stop();
      assert.equal(s.logs.events('CODES_EXPORT_STOPPED').length, 1);
      assert.equal(
        s.logs.events('CODES_EXPORT_STALLED').length,
        0,
        'cut by the stop, not by the stall limit',
      );
      await waitFor(async () => (await copies(sdb)).running === 0, { what: 'the COPY ended' });
      assert.equal((await readAll(stalled)).complete, false);
    } finally {
      await sdb.end();
    }
  });
});
