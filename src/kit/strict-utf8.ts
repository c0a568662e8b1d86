// Uploads are read as UTF-8, and Node's decoding puts U+FFFD in place of bytes that are not UTF-8.
// A spreadsheet saved in a legacy encoding (Windows-1252, Latin-1) would then be stored with "M�ller"
// for "Müller" and sent that way to every recipient. This check refuses such an upload instead, and
// names the first line that is not UTF-8 so the sender knows what to re-save.
import { isUtf8 } from 'node:buffer';
import { Transform } from 'node:stream';
import { badRequest } from './errors.ts';

const NEWLINE = 0x0a;

function countNewlines(bytes: Buffer): number {
  let n = 0;
  for (let at = bytes.indexOf(NEWLINE); at >= 0; at = bytes.indexOf(NEWLINE, at + 1)) n++;
  return n;
}

/** The 0-based index, among the newline-separated lines of `bytes`, of the first one that is not UTF-8. */
function firstBadLine(bytes: Buffer): number {
  let start = 0;
  for (let line = 0; ; line++) {
    const end = bytes.indexOf(NEWLINE, start);
    if (!isUtf8(bytes.subarray(start, end < 0 ? bytes.length : end))) return line;
    if (end < 0) return line;
    start = end + 1;
  }
}

/**
 * Passes the bytes through unchanged and fails with a 400 at the first bytes that are not UTF-8
 * (TextDecoder in streaming mode, so a character split across two chunks is judged whole). `what`
 * names the upload in the message, e.g. "the CSV".
 */
export function strictUtf8(what: string): Transform {
  const decoder = new TextDecoder('utf-8', { fatal: true });
  let line = 1;
  const refuse = (chunk?: Buffer) => {
    // Only on the error path: which line of this chunk, skipping the continuation bytes of a
    // character the previous chunk began (they are not UTF-8 on their own).
    let from = 0;
    while (chunk && from < 3 && chunk[from] !== undefined && (chunk[from]! & 0xc0) === 0x80) from++;
    const rest = chunk?.subarray(from);
    // All of this chunk is UTF-8: the fault is the character the previous chunk began and this one
    // did not finish, on the line the two chunks share.
    const at = line + (rest && !isUtf8(rest) ? firstBadLine(rest) : 0);
    return badRequest(
      `${what} is not UTF-8 (line ${at} holds bytes that are not): save it as UTF-8 (in a spreadsheet, "CSV UTF-8") and upload it again`,
    );
  };
  return new Transform({
    transform(chunk: Buffer, _encoding, done) {
      try {
        decoder.decode(chunk, { stream: true });
      } catch {
        return done(refuse(chunk));
      }
      line += countNewlines(chunk);
      done(null, chunk);
    },
    flush(done) {
      try {
        decoder.decode();
      } catch {
        // The upload ends in the middle of a character.
        return done(refuse());
      }
      done();
    },
  });
}
