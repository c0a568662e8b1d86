// A large generation in a process that is told to stop: it must not hold the exit past
// SHUTDOWN_TIMEOUT_MS (a worker exited 1 that way, and the job sat "running" for a minute until
// another worker released its lock), and the job must still end with every code exactly once.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  adminKey,
  json,
  processDatabase,
  spawnTessera,
  startPlatform,
  testPool,
  waitFor,
} from '../../../test/helpers.ts';
import { codesModule } from './index.ts';

const COUNT = 6_000_000;

describe('codes: a generation job across a shutdown', () => {
  it('when SIGTERM comes mid-generation, then the process exits 0 and another worker finishes the job, every code once', async () => {
    const db = await processDatabase();
    const headers = { authorization: `Bearer ${await adminKey(db)}`, 'content-type': 'application/json' };
    const first = await spawnTessera('all', { DATABASE_URL: db });
    await first.waitHealthy();
    const post = (path: string, body: object) =>
      fetch(`${first.url}${path}`, { method: 'POST', headers, body: JSON.stringify(body) });
    const made = await post('/api/campaigns', {
      id: 'big',
      name: 'big',
      format: { length: 8, alphabet: 'alphanumeric' },
    });
    assert.equal(made.status, 201);
    const started = await post('/api/campaigns/big/codes', { count: COUNT });
    assert.equal(started.status, 202);
    const { jobId } = await json(started);
    const pool = testPool(db);
    try {
      const job = async () =>
        (await pool.query('SELECT state, done FROM tessera_job_runs WHERE id = $1', [jobId])).rows[0];
      await waitFor(async () => (await job())?.done > 0, {
        what: 'the first codes written',
        timeoutMs: 60_000,
      });
      assert.equal(await first.stop('SIGTERM'), 0, first.output());
      assert.notEqual((await job()).state, 'completed', 'stopped mid-way, or this test proves nothing');

      // A platform with the codes worker picks the job up again and completes it from its parts.
      const second = await startPlatform({ modules: [codesModule], databaseUrl: db });
      await waitFor(async () => (await job()).state === 'completed', {
        what: 'the job completed by the second worker',
        timeoutMs: 120_000,
        intervalMs: 500,
      });
      const held = await pool.query(
        "SELECT count(*)::int AS n FROM codes WHERE campaign_no = (SELECT no FROM codes_campaigns WHERE id = 'big')",
      );
      assert.equal(held.rows[0].n, COUNT);
      const inventory = (await second.app.inject({ url: '/api/campaigns/big', headers: second.auth })).json()
        .inventory;
      assert.deepEqual(inventory, { available: COUNT, reserved: 0, assigned: 0, total: COUNT });
    } finally {
      await pool.end();
    }
  });
});
