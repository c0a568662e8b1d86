// The upload encoding check: what it passes through and which line it names.
import assert from 'node:assert/strict';
import { Readable } from 'node:stream';
import { text } from 'node:stream/consumers';
import { describe, it } from 'node:test';
import { strictUtf8 } from '../../src/kit/strict-utf8.ts';

const through = (chunks: Buffer[]) => text(Readable.from(chunks).pipe(strictUtf8('the file')));

describe('strictUtf8', () => {
  it('when a character is split across two chunks, then the bytes pass through unchanged', async () => {
    const bytes = Buffer.from('a,b\nMüller,😀\n', 'utf8');
    const cut = bytes.indexOf(0xf0) + 2; // inside the emoji's four bytes
    assert.equal(await through([bytes.subarray(0, cut), bytes.subarray(cut)]), 'a,b\nMüller,😀\n');
  });

  it('when a later chunk holds a byte that is not UTF-8, then the 400 names its line in the file', async () => {
    const first = Buffer.from('a\nb\n', 'utf8');
    const second = Buffer.from('c\nd\nM\xfcller\n', 'latin1');
    await assert.rejects(through([first, second]), (err: Error & { statusCode?: number }) => {
      assert.equal(err.statusCode, 400);
      assert.match(err.message, /^the file is not UTF-8 \(line 5 holds bytes that are not\)/);
      return true;
    });
  });

  it('when a chunk ends with the first byte of a character the next chunk does not finish, then the 400 names that line', async () => {
    const first = Buffer.from('a\nb\nM\xc3', 'latin1'); // 0xC3 begins a two-byte character
    const second = Buffer.from('ller\nd\ne\n', 'utf8'); // ...which "l" does not continue
    await assert.rejects(through([first, second]), (err: Error) => {
      // Before: line 5, the last line of the second chunk, which is fine.
      assert.match(err.message, /^the file is not UTF-8 \(line 3 holds bytes that are not\)/);
      return true;
    });
  });

  it('when the upload ends inside a character, then it is refused', async () => {
    const cut = Buffer.from('a\nü', 'utf8').subarray(0, 3);
    await assert.rejects(through([cut]), /not UTF-8 \(line 2/);
  });
});
