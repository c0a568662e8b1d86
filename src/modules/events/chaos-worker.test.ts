import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { countRows, startPlatform, waitFor } from '../../../test/helpers.ts';
import { eventsModule } from './index.ts';
import { countBacklog } from './metrics.ts';

describe('events worker failure modes', () => {
  it('when WORKER_FAILURE_MODE=bad_schema, then about half go to the dead-letter table and the rest are processed', async () => {
    const p = await startPlatform({ modules: [eventsModule], env: { WORKER_FAILURE_MODE: 'bad_schema' } });
    const events = Array.from({ length: 400 }, (_, i) => ({ userId: `u${i}`, action: 'x' }));
    assert.equal(
      (await p.app.inject({ method: 'POST', url: '/api/events', headers: p.auth, payload: events }))
        .statusCode,
      201,
    );
    await waitFor(async () => (await countBacklog(p.kit.pool)) === 0, { what: 'backlog drained' });
    const dead = await countRows(p, 'events_dead_letter');
    const processed = await countRows(p, 'events_processed');
    assert.equal(dead + processed, 400);
    // Binomial(400, 0.5): sd 10; 140..260 is 6 sd either side.
    assert.ok(dead >= 140 && dead <= 260, `${dead} of 400 dead-lettered`);
    assert.equal(p.logs.events('WORKER_PARSE_ERROR').length, dead);
    assert.ok(p.logs.events('FAILURE_INJECTION').some((l) => l.mode === 'bad_schema'));
    const listed = await p.app.inject({ url: '/api/events/dead-letters?limit=5', headers: p.auth });
    assert.equal(listed.json().total, dead);
    assert.match(
      listed.json().deadLetters[0].error,
      /^schema parse error \(failure injected: WORKER_FAILURE_MODE=bad_schema in the environment\)$/,
    );
    const totals = (await p.app.inject({ url: '/api/analytics', headers: p.auth })).json();
    assert.equal(totals.totalEvents, processed);
  });

  it('when WORKER_FAILURE_MODE=slow, then each batch takes 5 s or more and all still get processed', async () => {
    const p = await startPlatform({
      modules: [eventsModule],
      env: { WORKER_FAILURE_MODE: 'slow', EVENTS_BATCH_SIZE: '10' },
    });
    // Two requests of 10, one after the other: two stored batches (a worker batch never splits one).
    for (const half of [0, 1]) {
      const events = Array.from({ length: 10 }, (_, i) => ({ userId: `u${half}${i}`, action: 'x' }));
      await p.app.inject({ method: 'POST', url: '/api/events', headers: p.auth, payload: events });
    }
    await waitFor(async () => (await countRows(p, 'events_processed')) === 20, {
      timeoutMs: 30_000,
      intervalMs: 200,
      what: 'both batches processed',
    });
    const delays = p.logs.events('FAILURE_INJECTION').filter((l) => l.mode === 'slow');
    const done = p.logs.events('WORKER_JOB_DONE');
    assert.equal(done.length, 2, 'two batches of 10');
    assert.ok(delays.length >= 2);
    for (const d of done) {
      // Batches may run side by side: pair each with the delay of its own job.
      const delay = delays.find((l) => l.jobId === d.jobId)!;
      assert.ok(delay, `job ${d.jobId} logged its injected delay`);
      assert.ok(
        (d.time as number) - (delay.time as number) >= 5000,
        'batch finished ≥ 5 s after its delay began',
      );
      assert.equal(delay.delayMs, 5000);
    }
  });
});
