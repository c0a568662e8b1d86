import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { describe, it } from 'node:test';
import { CodePermutation } from './permutation.ts';
import { computeSortedKeys, MergedKeys, sortedKeySlices, THREAD_MIN } from './sorted-keys.ts';

const spec = { key: randomBytes(16), alphabet: 'ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789', length: 8 };

const read = (slices: Float64Array[], from: number, m: number) => {
  const out = new Float64Array(m);
  new MergedKeys(slices, from).take(out, m);
  return [...out];
};

describe('codes: sorted keys of a generation run', () => {
  it('when a large run is computed on worker threads, then the merged slices equal the run sorted in one thread', async () => {
    const n = THREAD_MIN + 1_001;
    const slices = await sortedKeySlices(spec, 7_000, n, 3);
    assert.equal(slices.length, 3, 'one slice per thread');
    const whole = computeSortedKeys(spec, 7_000, n);
    const merged = new Float64Array(n);
    new MergedKeys(slices, 0).take(merged, n);
    assert.deepEqual(merged, whole);
  });

  it('when a writer starts in the middle of the run, then it reads exactly the keys from that rank on', () => {
    const slices = [0, 1, 2].map((i) => computeSortedKeys(spec, i * 1_000, 1_000));
    const whole = Float64Array.from(slices.flatMap((s) => [...s])).sort();
    for (const from of [0, 1, 999, 1_000, 1_777, 2_999]) {
      const m = Math.min(50, 3_000 - from);
      assert.deepEqual(read(slices, from, m), [...whole.subarray(from, from + m)], `from rank ${from}`);
    }
  });

  it('when a reader asks for more keys than the run holds, then it fails instead of inventing codes', () => {
    const slices = [computeSortedKeys(spec, 0, 10)];
    assert.throws(() => read(slices, 5, 6), /past their end/);
  });

  it("when the alphabet is not in byte order, then the keys decode to the permutation's codes in byte order", () => {
    const custom = { key: spec.key, alphabet: 'ZYX987', length: 6 };
    const keys = computeSortedKeys(custom, 0, 500);
    const letters = [...custom.alphabet].sort();
    const code = (x: number) => {
      let s = '';
      for (let j = 0; j < custom.length; j++, x = Math.floor(x / 6)) s = letters[x % 6] + s;
      return s;
    };
    const expected = new CodePermutation(custom.key, custom.alphabet, custom.length).codes(0, 500).sort();
    assert.deepEqual([...keys].map(code), expected);
  });
});
