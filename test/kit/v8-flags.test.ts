// turnOffPretenuring must change V8's behaviour in a running process (it is set after node starts,
// when the platform is created), not only set a flag: V8's pretenuring trace tells. V8 prints a
// line for every allocation site it weighs at a GC; with pretenuring off it weighs none, so it can
// decide nothing. The first case shows the probe does see V8 weigh sites when nothing turns it off.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import path from 'node:path';
import { describe, it } from 'node:test';
import { promisify } from 'node:util';

const PROBE = path.resolve(import.meta.dirname, '../fixtures/pretenuring-probe.ts');

async function probe(mode: 'turn-off' | 'leave', nodeFlags: string[] = []) {
  const { stdout } = await promisify(execFile)(
    process.execPath,
    ['--trace-pretenuring-statistics', ...nodeFlags, '--import', 'tsx', PROBE, mode],
    { maxBuffer: 16 * 1024 * 1024 },
  );
  return {
    weighed: stdout.split('\n').filter((line) => /pretenuring: AllocationSite/.test(line)).length,
    result: /RESULT (.*)/.exec(stdout)?.[1],
  };
}

describe('turnOffPretenuring', () => {
  it('when nothing turns it off, then V8 weighs the allocation sites whose objects survive', async () => {
    const run = await probe('leave');
    assert.equal(run.result, 'changed=false kept=2000000');
    assert.ok(run.weighed > 0, 'the probe must see V8 weigh sites, or the next case proves nothing');
  });

  it('when turned off at run time, then V8 weighs no allocation site', async () => {
    const run = await probe('turn-off');
    assert.equal(run.result, 'changed=true kept=2000000');
    assert.equal(run.weighed, 0);
  });

  it("when node's command line names the flag, then that choice is kept", async () => {
    const run = await probe('turn-off', ['--allocation-site-pretenuring']);
    assert.equal(run.result, 'changed=false kept=2000000');
    assert.ok(run.weighed > 0);
  });
});
