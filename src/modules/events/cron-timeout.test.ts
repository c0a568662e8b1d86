import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { startPlatform, waitFor } from '../../../test/helpers.ts';
import { eventsModule } from './index.ts';

describe('events cron timeout mode', async () => {
  const p = await startPlatform({ modules: [eventsModule], env: { CRON_FAILURE_MODE: 'timeout' } });

  it('when CRON_FAILURE_MODE=timeout, then CRON_CLEANUP_DONE comes 30 s after CRON_JOB_START (seed 003)', async () => {
    await p.kit.pool.query(`SELECT graphile_worker.add_job('events:cleanup', '{}')`);
    const start = await waitFor(
      () => p.logs.events('CRON_JOB_START').find((l) => l.task === 'events:cleanup'),
      { what: 'CRON_JOB_START' },
    );
    assert.ok(p.logs.events('FAILURE_INJECTION').some((l) => l.mode === 'timeout' && l.delayMs === 30000));
    const done = await waitFor(() => p.logs.events('CRON_CLEANUP_DONE')[0], {
      timeoutMs: 45_000,
      intervalMs: 250,
      what: 'CRON_CLEANUP_DONE',
    });
    const waited = (done.time as number) - (start.time as number);
    assert.ok(waited >= 30_000, `CRON_CLEANUP_DONE ${waited} ms after start`);
    // The heartbeat is written after the cleanup's own database call: wait for it, don't race it.
    await waitFor(() => p.logs.events('CRON_HEARTBEAT').length > 0, { what: 'CRON_HEARTBEAT' });
  });
});
