// V8's allocation-site pretenuring put some Tessera processes into a slow GC mode for their whole
// life (docs/PERFORMANCE.md, "Some server processes ran in a slow GC mode"): V8 decides from its
// allocation statistics that a per-request object literal lives long and allocates it in the old
// generation from then on. Each such object is dead a moment later, but only a full GC can tell,
// so every young object it points at (the rest of its request) survives each scavenge and is
// promoted: ~4.5 MB a scavenge instead of ~0.1 MB, and a quarter to 40% fewer requests served.
// Without pretenuring no process went slow (bare Fastify with a heap of Tessera's size: 0 of 26
// against 17 of 28; Tessera's GET of a code: 0 of 20 against 2 of 20, and 0 of 30 set from here).
import v8 from 'node:v8';

const PRETENURING_FLAG = /^--(no-)?allocation[-_]site[-_]pretenuring$/;

/**
 * Turns allocation-site pretenuring off for this process (V8 flags are process-wide, so worker
 * threads too). A pretenuring flag on node's own command line wins, so
 * `node --allocation-site-pretenuring bin/tessera.js start` keeps V8's default. Returns whether it
 * changed the flag.
 */
export function turnOffPretenuring(execArgv: readonly string[] = process.execArgv): boolean {
  if (execArgv.some((arg) => PRETENURING_FLAG.test(arg))) return false;
  v8.setFlagsFromString('--no-allocation-site-pretenuring');
  return true;
}
