// The codes of a large generation run as sorted numeric keys (see Generator.runRows for why sorted).
// Computing ten million keys (the permutation) and sorting them is ~5 s of CPU: done on the event
// loop it froze every request of the process for that long, and it left the second core idle while
// PostgreSQL waited for the first row. So large runs are cut into slices computed and sorted on
// worker threads in parallel, and the writers merge the sorted slices as they stream them: no
// merged copy, so memory stays 8 bytes per code.
import { availableParallelism } from 'node:os';
import { firstMessage, startTsWorker } from '../../kit/ts-worker.ts';
import { CodePermutation } from './permutation.ts';

/** Below this many codes a run is computed in the caller's thread: starting a worker costs more. */
export const THREAD_MIN = 500_000;
const CHUNK = 16_384;

export interface KeySpec {
  key: Buffer;
  alphabet: string;
  length: number;
}

/**
 * The alphabet's characters in byte order (what COLLATE "C" compares): digit d of a key is the
 * rank of its character here, so the writers decode keys back to codes with this same list.
 */
export function byteOrder(alphabet: string): string[] {
  return [...alphabet].sort();
}

/**
 * Keys of codes #start … #start+n-1, sorted: each code's digits read in base radix with digit d
 * weighted by the rank of its character in byte order (what COLLATE "C" compares), so key order
 * is code order. Only for code spaces that fit a double exactly (radix^length ≤ 2^53).
 */
export function computeSortedKeys(spec: KeySpec, start: number, n: number): Float64Array {
  const { alphabet, length } = spec;
  const radix = alphabet.length;
  const permutation = new CodePermutation(spec.key, alphabet, length);
  const letters = byteOrder(alphabet);
  const rank = new Float64Array(radix);
  for (let d = 0; d < radix; d++) rank[d] = letters.indexOf(alphabet[d]!);
  const keys = new Float64Array(n);
  for (let off = 0; off < n; off += CHUNK) {
    const m = Math.min(CHUNK, n - off);
    const digits = permutation.digits(start + off, m);
    for (let k = 0; k < m; k++) {
      let x = 0;
      for (let j = 0; j < length; j++) x = x * radix + rank[digits[k * length + j]!]!;
      keys[off + k] = x;
    }
  }
  return keys.sort();
}

/** The run as sorted slices: one per thread for large runs, a single one computed here otherwise. */
export async function sortedKeySlices(
  spec: KeySpec,
  start: number,
  n: number,
  threads = Math.min(availableParallelism(), 4),
): Promise<Float64Array[]> {
  const t = n < THREAD_MIN ? 1 : Math.max(1, threads);
  if (t === 1) return [computeSortedKeys(spec, start, n)];
  const per = Math.ceil(n / t);
  const jobs: Promise<Float64Array>[] = [];
  for (let off = 0; off < n; off += per) {
    const worker = startTsWorker(new URL('./sorted-keys.worker.ts', import.meta.url), {
      ...spec,
      start: start + off,
      n: Math.min(per, n - off),
    });
    jobs.push(firstMessage<Float64Array>(worker).finally(() => worker.terminate()));
  }
  return Promise.all(jobs);
}

/**
 * Reads sorted slices as one sorted sequence from merged position `from` on. Keys are distinct
 * (codes are unique), so the start is found by a binary search on the key value: the smallest v
 * with `from` keys below it across the slices.
 */
export class MergedKeys {
  private readonly pos: number[];

  constructor(
    private readonly slices: Float64Array[],
    from: number,
  ) {
    let lo = 0;
    let hi = Math.max(0, ...slices.map((s) => (s.length ? s[s.length - 1]! + 1 : 0)));
    while (lo < hi) {
      const mid = Math.floor((lo + hi) / 2);
      if (this.countBelow(mid) >= from) hi = mid;
      else lo = mid + 1;
    }
    this.pos = slices.map((s) => lowerBound(s, lo));
  }

  private countBelow(v: number): number {
    return this.slices.reduce((sum, s) => sum + lowerBound(s, v), 0);
  }

  /** The next m keys in order, into out[0 … m-1]. */
  take(out: Float64Array, m: number): void {
    const { slices, pos } = this;
    for (let k = 0; k < m; k++) {
      let best = -1;
      let min = Number.POSITIVE_INFINITY;
      for (let i = 0; i < slices.length; i++) {
        const p = pos[i]!;
        const s = slices[i]!;
        if (p < s.length && s[p]! < min) {
          min = s[p]!;
          best = i;
        }
      }
      if (best < 0) throw new Error('merged keys read past their end');
      pos[best] = pos[best]! + 1;
      out[k] = min;
    }
  }
}

function lowerBound(s: Float64Array, v: number): number {
  let lo = 0;
  let hi = s.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (s[mid]! < v) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}
