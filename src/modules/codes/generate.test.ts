import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { startPlatform, waitForLockWait } from '../../../test/helpers.ts';
import { prom } from '../../kit/metrics.ts';
import { Campaigns } from './campaigns.ts';
import { Generator } from './generate.ts';
import { codesModule } from './index.ts';
import { createCodesMetrics } from './metrics.ts';
import { CodePermutation } from './permutation.ts';

describe('codes: large generation in parts', async () => {
  const p = await startPlatform({ modules: [codesModule] });
  const pool = p.kit.pool;
  const campaigns = new Campaigns(pool);
  /** A Generator as a new process has it: no counter block claimed ahead yet. */
  const newGenerator = () =>
    new Generator(
      pool,
      createCodesMetrics(new prom.Registry(), async () => []),
    );
  const generator = newGenerator();
  const create = async (id: string, format: { length: number; alphabet: string; prefix?: string }) => {
    await campaigns.create({ id, name: id, format });
    return campaigns.get(id);
  };
  const stored = async (no: number) =>
    (
      await pool.query<{ n: number; d: number; seqs: number; available: number }>(
        `SELECT count(*)::int AS n, count(DISTINCT code)::int AS d, count(DISTINCT seq)::int AS seqs,
           (SELECT available FROM codes_campaigns WHERE no = $1) AS available
         FROM codes WHERE campaign_no = $1`,
        [no],
      )
    ).rows[0]!;
  /**
   * After a generation unused_from is the smallest unused code (migration 007); with imports it may
   * be lower (a generated code that collided with an import counts), never higher.
   */
  const assertUnusedFrom = async (no: number, exact = true) => {
    const { rows } = await pool.query(
      `SELECT unused_from AS from, (SELECT min(code) FROM codes WHERE campaign_no = $1 AND state = 3) AS smallest
       FROM codes_campaigns WHERE no = $1`,
      [no],
    );
    assert.ok(rows[0].smallest, 'the generated codes are unused');
    if (exact) assert.equal(rows[0].from, rows[0].smallest);
    else assert.ok(rows[0].from <= rows[0].smallest, `${rows[0].from} <= ${rows[0].smallest}`);
  };

  it('when the same job runs twice, then the second generates nothing and the count is exact', async () => {
    const c = await create('twice', { length: 8, alphabet: 'alphanumeric', prefix: 'T-' });
    const seen: number[] = [];
    const first = await generator.generateLarge(c, 50_000, 'job-twice', async (d) => {
      seen.push(d);
    });
    assert.deepEqual(first, { generated: 50_000 });
    assert.equal(seen.at(-1), 50_000, 'progress ends at the count');
    const again = await generator.generateLarge(c, 50_000, 'job-twice', async () => undefined);
    assert.equal(again.alreadyDone, true);
    assert.deepEqual(await stored(c.no), { n: 50_000, d: 50_000, seqs: 50_000, available: 50_000 });
    const { rows } = await pool.query<{ code: string }>('SELECT code FROM codes WHERE campaign_no = $1', [
      c.no,
    ]);
    for (const r of rows) assert.match(r.code, /^T-[A-Z0-9]{8}$/);
    await assertUnusedFrom(c.no);
  });

  it('when a job died after one part committed, then the retry writes only the missing part, into the same range', async () => {
    const c = await create('retry', { length: 8, alphabet: 'alphanumeric' });
    await generator.generateLarge(c, 40_000, 'job-retry', async () => undefined);
    const all = await pool.query<{ code: string }>(
      'SELECT code FROM codes WHERE campaign_no = $1 ORDER BY code',
      [c.no],
    );
    // The state a crash during the upper part leaves: its transaction rolled back (its codes, its
    // part row and its share of the available count gone), and no completion row.
    const part = await pool.query<{ count: number }>('SELECT count FROM codes_generations WHERE id = $1', [
      'job-retry:0.1',
    ]);
    const upper = part.rows[0]!.count;
    assert.ok(upper > 0 && upper < 40_000);
    await pool.query(
      `DELETE FROM codes WHERE campaign_no = $1 AND seq >= (SELECT start_seq + 40000 - $2 FROM codes_generations WHERE id = 'job-retry:plan')`,
      [c.no, upper],
    );
    await pool.query(`DELETE FROM codes_generations WHERE id IN ('job-retry', 'job-retry:0.1')`);
    await pool.query('UPDATE codes_campaigns SET available = available - $2 WHERE no = $1', [c.no, upper]);
    assert.equal((await stored(c.no)).n, 40_000 - upper);

    const retried = await generator.generateLarge(c, 40_000, 'job-retry', async () => undefined);
    assert.deepEqual(retried, { generated: 40_000 });
    assert.deepEqual(await stored(c.no), { n: 40_000, d: 40_000, seqs: 40_000, available: 40_000 });
    const after = await pool.query<{ code: string }>(
      'SELECT code FROM codes WHERE campaign_no = $1 ORDER BY code',
      [c.no],
    );
    assert.deepEqual(
      after.rows.map((r) => r.code),
      all.rows.map((r) => r.code),
      'the very same codes: the retry reused the recorded range',
    );
    const next = await pool.query('SELECT next_index FROM codes_campaigns WHERE no = $1', [c.no]);
    assert.equal(next.rows[0].next_index, 40_000, 'no second range claimed');
  });

  it('when codes are too long to sort as numbers, then parts follow the counter and stay unique', async () => {
    const c = await create('long', { length: 12, alphabet: 'alphanumeric' });
    await generator.generateLarge(c, 30_000, 'job-long', async () => undefined);
    assert.deepEqual(await stored(c.no), { n: 30_000, d: 30_000, seqs: 30_000, available: 30_000 });
    await assertUnusedFrom(c.no);
  });

  it('when imported codes collide with generated ones, then they are skipped and topped up to the exact count', async () => {
    const c = await create('mixed', { length: 7, alphabet: 'numeric' });
    const clash = c.permutation.codes(0, 5);
    const res = await p.app.inject({
      method: 'POST',
      url: '/api/campaigns/mixed/codes/import',
      headers: p.auth,
      payload: clash,
    });
    assert.equal(res.json().inserted, 5, res.body);
    await generator.generateLarge(c, 20_000, 'job-mixed', async () => undefined);
    assert.deepEqual(await stored(c.no), { n: 20_005, d: 20_005, seqs: 20_005, available: 20_005 });
    await assertUnusedFrom(c.no, false);
  });

  it('when small generations run in a large campaign, then they share blocks claimed ahead and stay unique across a restart', async () => {
    const c = await create('blocks', { length: 8, alphabet: 'alphanumeric' });
    const first = [...(await generator.generateSmall(c, 3)), ...(await generator.generateSmall(c, 4))];
    const next = async () =>
      Number(
        (await pool.query('SELECT next_index FROM codes_campaigns WHERE no = $1', [c.no])).rows[0].next_index,
      );
    assert.equal(await next(), 1_000, 'one block served both calls');
    // A new process (a restart) does not know the block the first one left unused.
    const restarted = newGenerator();
    const second = await restarted.generateSmall(c, 5);
    assert.equal(await next(), 2_000);
    assert.equal(new Set([...first, ...second]).size, 12);
    assert.deepEqual(await stored(c.no), { n: 12, d: 12, seqs: 12, available: 12 });
  });

  it('when a block no longer fits under the density limit, then a small generation claims exactly what it asks', async () => {
    // 8 numeric digits: 10^8 codes, 1% = 1,000,000; put the counter 5 below that.
    const c = await create('edge', { length: 8, alphabet: 'numeric' });
    await pool.query('UPDATE codes_campaigns SET next_index = 999995 WHERE no = $1', [c.no]);
    const fresh = newGenerator();
    assert.equal((await fresh.generateSmall(c, 5)).length, 5);
    await assert.rejects(fresh.generateSmall(c, 1), (err: Error & { statusCode?: number }) => {
      assert.equal(err.statusCode, 422);
      assert.match(
        err.message,
        /already holds 1000000 generated or imported codes, at or past that limit of 1000000/,
      );
      return true;
    });
  });
});

describe('codes: generation that meets imported codes near the density limit', async () => {
  const p = await startPlatform({ modules: [codesModule] });
  const call = (method: 'GET' | 'POST', url: string, payload?: unknown) =>
    p.app.inject({
      method,
      url,
      headers: p.auth,
      ...(payload === undefined ? {} : { payload: payload as object }),
    });
  const campaign = async (id: string, length: number, imported: number) => {
    assert.equal(
      (await call('POST', '/api/campaigns', { id, name: id, format: { length, alphabet: 'numeric' } }))
        .statusCode,
      201,
    );
    const codes = Array.from({ length: imported }, (_, i) => String(i).padStart(length, '0'));
    const res = await call('POST', `/api/campaigns/${id}/codes/import`, codes);
    assert.equal(res.json().inserted, imported, res.body);
  };
  const total = async (id: string) => (await call('GET', `/api/campaigns/${id}`)).json().inventory.total;

  it('when a small generation would run out of room topping up, then 422 and no code was written, and what it says fits does', async () => {
    // 1,000,000 possible codes, 10,000 allowed; 5,000 imported, so 5,000 counters are left, and some
    // of the codes they give are imported ones.
    await campaign('tight', 6, 5000);
    const refused = await call('POST', '/api/campaigns/tight/codes', { count: 5000 });
    assert.equal(refused.statusCode, 422, refused.body);
    assert.equal(await total('tight'), 5000, 'all or nothing: no code of the refused request stays');
    const fits = Number(/about (\d+) more fit/.exec(refused.json().message)?.[1]);
    assert.ok(fits > 4900 && fits < 5000, refused.json().message);
    const ok = await call('POST', '/api/campaigns/tight/codes', { count: fits });
    assert.equal(ok.statusCode, 201, ok.body);
    assert.equal(await total('tight'), 5000 + fits);
  });

  it('when a sync generation meets a code an import is writing, then the deadlock it meets is retried and it answers 201', async () => {
    await campaign('crossed', 6, 10);
    const { rows } = await p.kit.pool.query(
      `SELECT no, fpe_key, alphabet, length, next_index FROM codes_campaigns WHERE id = 'crossed'`,
    );
    const c = rows[0];
    // The code the next generation of one code will write.
    const next = new CodePermutation(c.fpe_key, c.alphabet, c.length).codes(Number(c.next_index), 1)[0]!;
    const importer = await p.kit.pool.connect();
    try {
      // An import in flight: its row written, its counters (the campaign row) still to come.
      await importer.query('BEGIN');
      // Only the generation may be the one PostgreSQL fails: each waiter checks for a deadlock once,
      // deadlock_timeout after it starts waiting, and on a loaded machine the generation's check can
      // run after this transaction's, which would then fail this side instead.
      await importer.query(`SET LOCAL deadlock_timeout = '60s'`);
      await importer.query(`INSERT INTO codes (campaign_no, code, seq) VALUES ($1, $2, 999999)`, [
        c.no,
        next,
      ]);
      const generated = call('POST', '/api/campaigns/crossed/codes', { count: 1 });
      await waitForLockWait(p.kit.pool, 'INSERT INTO codes', 'the generation to wait on the imported row');
      // The import takes the campaign row last; the generation holds it from its claim: a deadlock.
      await importer.query(
        `UPDATE codes_campaigns SET available = available + 1, imported = imported + 1 WHERE no = $1`,
        [c.no],
      );
      await importer.query('COMMIT');
      const res = await generated;
      // Before: 500 (deadlock detected).
      assert.equal(res.statusCode, 201, res.body);
      assert.equal(res.json().codes.length, 1);
      assert.notEqual(res.json().codes[0], next, 'the imported code is not handed out as generated');
    } finally {
      importer.release();
    }
    assert.equal(await total('crossed'), 12);
  });

  it('when a job would need more room than is left once imported codes are allowed for, then it is refused before it starts', async () => {
    // 10,000,000 possible, 100,000 allowed, 50,000 imported: 50,000 more would lose ~250 to them.
    await campaign('tightjob', 7, 50_000);
    const refused = await call('POST', '/api/campaigns/tightjob/codes', { count: 50_000 });
    assert.equal(refused.statusCode, 422, refused.body);
    assert.match(refused.json().message, /imported earlier take part of that room, and about \d+ more fit/);
    assert.equal(await total('tightjob'), 50_000, 'no job started');
  });
});
