// The PostgreSQL token bucket is one bucket for every process: what one process takes, another
// process pays for. Each process here is a separate node with its own connection.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import path from 'node:path';
import { describe, it } from 'node:test';
import { promisify } from 'node:util';
import pg from 'pg';
import { freshDatabase } from '../../../test/helpers.ts';
import { forgetIdle, giveBack, take } from './ratelimit.ts';

const run = promisify(execFile);
const module = path.join(import.meta.dirname, 'ratelimit.ts');

/** Takes `n` tokens from `key` (rate 1/s) in a new process; returns the wait it was told. */
async function takeInProcess(databaseUrl: string, key: string, n: number): Promise<number> {
  const code = `
    import pg from 'pg';
    const { take } = await import(${JSON.stringify(module)});
    const c = new pg.Client({ connectionString: process.env.DATABASE_URL });
    await c.connect();
    const w = await take(c, { kind: 'batch', key: ${JSON.stringify(key)}, ratePerSecond: 1 }, ${n});
    await c.end();
    console.log(JSON.stringify({ wait: w, pid: process.pid }));`;
  const { stdout } = await run(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', code], {
    env: { ...process.env, DATABASE_URL: databaseUrl },
  });
  return JSON.parse(stdout.trim().split('\n').at(-1)!).wait;
}

describe('sender rate limits across processes', () => {
  it('when one process drains a bucket, then another process taking from the same key is told to wait', async () => {
    const db = await freshDatabase();
    // Rate 1/s, burst 1: taking 1,000 leaves the bucket ~999 s in debt.
    const first = await takeInProcess(db, 'batch:shared', 1000);
    assert.ok(first > 900, `the first process waits for its own debt (${first} s)`);
    // A per-process bucket would grant this at once; the shared one is still hundreds of seconds short.
    const second = await takeInProcess(db, 'batch:shared', 1);
    assert.ok(second > 900, `the second process pays the first one's debt (${second} s)`);
    // Another key is untouched.
    assert.equal(await takeInProcess(db, 'batch:other', 1), 0);
  });

  it('when tokens taken for messages not sent are given back, then the next take does not wait for them', async () => {
    const db = await freshDatabase();
    const c = new pg.Client({ connectionString: db });
    await c.connect();
    try {
      const limit = { kind: 'batch', key: 'batch:retrying', ratePerSecond: 10 };
      // A sub-batch of 10 taken, and the claim found no recipient due (all waiting for a retry).
      assert.equal(await take(c, limit, 10), 0);
      await giveBack(c, limit, 10);
      // Kept, these 10 would have put the next take a second in debt.
      assert.equal(await take(c, limit, 10), 0);
      // Giving back never fills the bucket past its burst (one second of tokens).
      await giveBack(c, limit, 1000);
      const { rows } = await c.query(`SELECT tokens FROM sender_rate_buckets WHERE key = 'batch:retrying'`);
      assert.equal(rows[0].tokens, 10);
    } finally {
      await c.end();
    }
  });

  it('when buckets sit idle for an hour, then the cleanup deletes them and keeps the live ones', async () => {
    const db = await freshDatabase();
    const c = new pg.Client({ connectionString: db });
    await c.connect();
    try {
      await take(c, { kind: 'batch', key: 'batch:live', ratePerSecond: 10 }, 1);
      await take(c, { kind: 'batch', key: 'batch:done', ratePerSecond: 10 }, 1);
      await c.query(
        `UPDATE sender_rate_buckets SET updated_at = now() - interval '2 hours' WHERE key = 'batch:done'`,
      );
      assert.equal(await forgetIdle(c), 1);
      const { rows } = await c.query('SELECT key FROM sender_rate_buckets');
      assert.deepEqual(
        rows.map((r) => r.key),
        ['batch:live'],
      );
    } finally {
      await c.end();
    }
  });
});
