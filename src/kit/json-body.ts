// Request JSON may spell any character as \uXXXX, including half of a UTF-16 pair on its own
// ("\ud83d", as when a client cuts a string inside an emoji). JavaScript keeps such a string, but
// PostgreSQL refuses it in jsonb (and turns it into U+FFFD in text). Found by fuzzing: a sender
// batch whose variables held one answered 500, and an event holding one was answered 201 and then
// made its whole stored batch a dead letter. So every JSON body is checked where it is parsed.
import { isUtf8 } from 'node:buffer';
import { badRequest } from './errors.ts';

/** A surrogate spelled as an escape: the only way one can reach JSON.parse from UTF-8 text. */
const SURROGATE_ESCAPE = /\\u[dD][89a-fA-F]/;
const LONE_SURROGATE = /[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/;

/** Where the first string or key of `value` that `holds` is (`body.events[3].userId`, `a key of body`). */
export function findString(value: unknown, holds: (s: string) => boolean, path = 'body'): string | undefined {
  if (typeof value === 'string') return holds(value) ? path : undefined;
  if (Array.isArray(value)) {
    for (let i = 0; i < value.length; i++) {
      const found = findString(value[i], holds, `${path}[${i}]`);
      if (found) return found;
    }
    return undefined;
  }
  if (value !== null && typeof value === 'object') {
    for (const [key, v] of Object.entries(value)) {
      if (holds(key)) return `a key of ${path}`;
      const found = findString(v, holds, `${path}.${key}`);
      if (found) return found;
    }
  }
  return undefined;
}

const hasLoneSurrogate = (s: string) => LONE_SURROGATE.test(s);

/**
 * JSON.parse for request bodies: a 400 for text that is not JSON, or that holds a lone surrogate.
 * Only a body that spells a surrogate as an escape is walked, so the usual body costs one regex scan.
 * `name`: what the text is called in those messages (a CLI names its file, not a request body).
 */
export function parseJsonBody(text: string, name?: string): unknown {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (err) {
    throw badRequest(`${name ?? 'request body'} is not valid JSON: ${(err as Error).message}`);
  }
  const where = SURROGATE_ESCAPE.test(text) ? findString(value, hasLoneSurrogate, name) : undefined;
  if (where)
    throw badRequest(
      `${where} holds a lone surrogate (half of a UTF-16 pair, as when a string is cut inside an emoji), which PostgreSQL cannot store: send whole characters`,
    );
  return value;
}

/**
 * A JSON request body's text, or a 400 when its bytes are not UTF-8 (RFC 8259's only encoding for
 * JSON between systems). The message names the first string or key holding such bytes when the
 * rest parses, so the client knows which value its encoding broke.
 */
export function utf8JsonText(body: Buffer): string {
  const text = body.toString('utf8');
  if (isUtf8(body)) return text;
  let where: string | undefined;
  try {
    where = findString(JSON.parse(text), (s) => s.includes('\ufffd'));
  } catch {
    // Not JSON either: the encoding is still the first thing to fix.
  }
  throw badRequest(
    `${where ?? 'request body'} holds bytes that are not UTF-8 (text in another encoding, such as Latin-1?): send JSON encoded as UTF-8`,
  );
}
