// Event validation at the edge. Hand-written rather than ajv so every message names the event
// (by index in a batch) and the field, and says what to send instead; the same rules serve
// POST /api/events, the Segment routes and the worker's re-check of stored rows.
import { Type } from '@sinclair/typebox';
import { hasRealCalendarFields, isLocalTime, localTimeMessage } from '../../kit/dates.ts';
import { longerThan } from '../../kit/text.ts';

export const MAX_BATCH = 1000;
export const MAX_FUTURE_MS = 24 * 3600 * 1000;
/** 0001-01-01T00:00:00Z: the earliest instant the worker's ISO check and PostgreSQL both take. */
const FIRST_INSTANT = -62_135_596_800_000;
export const MAX_ID = 256;
export const MAX_ACTION = 128;
const MAX_PROPERTIES_BYTES = 32 * 1024;
const FIELDS = ['userId', 'action', 'timestamp', 'properties', 'messageId'];

/** An event as validated: ready for the INSERT. */
export interface EventRow {
  messageId: string | null;
  userId: string;
  action: string;
  ts: Date;
  /** The properties as JSON text, serialised once (the size check needs it, and so does COPY). */
  properties: string | null;
}

export const EventSchema = Type.Object(
  {
    userId: Type.String({ minLength: 1, maxLength: MAX_ID, examples: ['user_001'] }),
    action: Type.String({ minLength: 1, maxLength: MAX_ACTION, examples: ['page_view'] }),
    timestamp: Type.Optional(
      Type.Union([Type.String({ format: 'date-time' }), Type.Integer({ description: 'epoch ms' })], {
        description:
          'when it happened (default: now): a time with Z or an offset; at most 24 h in the future',
      }),
    ),
    properties: Type.Optional(Type.Record(Type.String(), Type.Unknown())),
    messageId: Type.Optional(
      Type.String({ minLength: 1, maxLength: MAX_ID, description: 'resending the same id counts once' }),
    ),
  },
  { additionalProperties: false },
);

export class EventValidationError extends Error {
  constructor(
    readonly field: string,
    message: string,
  ) {
    super(message);
  }
}

const isObject = (v: unknown): v is Record<string, unknown> =>
  typeof v === 'object' && v !== null && !Array.isArray(v);

/**
 * PostgreSQL's text and jsonb cannot hold a NUL character (\u0000). Events are stored as JSON text
 * and parsed by the worker, so one such event made its whole stored batch (other requests' events
 * in the same group commit included) a dead letter after they had been answered 201. It is refused
 * here, with the field named. Lone surrogates, the other text jsonb refuses, are refused for every
 * route where the JSON body is parsed (kit/json-body.ts).
 */
export function refuseNul(where: string, field: string, v: string): string {
  if (v.includes('\u0000'))
    throw new EventValidationError(field, `${where}${field} must not contain a NUL character (\\u0000)`);
  return v;
}

/** `\u0000` in JSON text, and not the escaped backslash of `\\u0000` (an odd run of backslashes). */
const NUL_IN_JSON = /(?<!\\)(?:\\\\)*\\u0000/;

/** A text field: required or not, non-blank, at most `max` characters, no NUL. */
export function text(
  where: string,
  field: string,
  v: unknown,
  max: number,
  required: boolean,
): string | null {
  if (v === undefined || v === null) {
    if (!required) return null;
    throw new EventValidationError(field, `${where}${field} is required: a non-empty string`);
  }
  if (typeof v !== 'string' || v.trim() === '')
    throw new EventValidationError(field, `${where}${field} must be a non-empty string, got ${describe(v)}`);
  if (longerThan(v, max))
    throw new EventValidationError(field, `${where}${field} must be at most ${max} characters`);
  return refuseNul(where, field, v);
}

export function describe(v: unknown): string {
  if (Array.isArray(v)) return 'an array';
  if (v === '') return 'an empty string';
  if (typeof v === 'string') return v.trim() === '' ? 'a blank string' : 'a string';
  return `${typeof v} ${JSON.stringify(v)?.slice(0, 40)}`;
}

/** Parses an ISO 8601 string or epoch milliseconds; undefined means now. */
export function parseTimestamp(where: string, v: unknown, now = Date.now()): Date {
  if (v === undefined || v === null) return new Date(now);
  // Date would drop the fraction: 1.5 was stored as 00:00:00.001, another instant than the one sent.
  if (typeof v === 'number' && Number.isFinite(v) && !Number.isInteger(v))
    throw new EventValidationError(
      'timestamp',
      `${where}timestamp ${v} has a fraction: a timestamp given as a number is whole milliseconds since the epoch (1736936625000); round it, or send an ISO 8601 date-time (2025-01-15T10:23:45Z)`,
    );
  const d =
    typeof v === 'number' && Number.isFinite(v)
      ? new Date(v)
      : typeof v === 'string' && hasRealCalendarFields(v)
        ? new Date(v)
        : undefined;
  if (!d && typeof v === 'string' && /^\d{4}-\d{2}-\d{2}/.test(v))
    throw new EventValidationError(
      'timestamp',
      `${where}timestamp ${JSON.stringify(v.slice(0, 40))} names a date or time that does not exist (a day past the month's end, hour 24, year 0); send the instant meant, e.g. 2025-01-15T10:23:45Z`,
    );
  if (!d || Number.isNaN(d.getTime()))
    throw new EventValidationError(
      'timestamp',
      `${where}timestamp must be an ISO 8601 date-time (2025-01-15T10:23:45Z) or epoch milliseconds, got ${describe(v)}`,
    );
  // Read as UTC instead, a sender's local time would be stored hours off without a word; Segment
  // libraries and seed 003's script send toISOString() (Z), so refusing breaks no such client.
  if (typeof v === 'string' && isLocalTime(v))
    throw new EventValidationError('timestamp', localTimeMessage(`${where}timestamp`, v));
  // Epoch milliseconds and offsets reach year 0 and before without a year-0 field to refuse: stored,
  // such an event was dead-lettered by the worker after its 201 (PostgreSQL has no year 0).
  if (d.getTime() < FIRST_INSTANT)
    throw new EventValidationError(
      'timestamp',
      `${where}timestamp is before 0001-01-01T00:00:00Z; send the instant meant, e.g. 2025-01-15T10:23:45Z or epoch milliseconds`,
    );
  if (d.getTime() - now > MAX_FUTURE_MS)
    throw new EventValidationError(
      'timestamp',
      `${where}timestamp ${d.toISOString()} is more than 24 h in the future; check the sender's clock`,
    );
  return d;
}

/** Checks the properties and returns them as JSON text (null when absent). */
export function parseProperties(where: string, v: unknown): string | null {
  if (v === undefined || v === null) return null;
  if (!isObject(v))
    throw new EventValidationError(
      'properties',
      `${where}properties must be a JSON object, got ${describe(v)}`,
    );
  let json: string;
  try {
    json = JSON.stringify(v);
  } catch {
    // Only a RangeError can come from stringifying parsed JSON: nesting deeper than the stack.
    throw new EventValidationError(
      'properties',
      `${where}properties are nested too deeply to process (thousands of levels): flatten them`,
    );
  }
  // The limit is on what is stored, so bytes: json.length counts UTF-16 units, and let 16,000
  // emoji (64 KB) through as 32,000.
  // A UTF-16 unit is at most 3 UTF-8 bytes: the usual small object skips the count.
  const bytes = json.length * 3 <= MAX_PROPERTIES_BYTES ? 0 : Buffer.byteLength(json, 'utf8');
  if (bytes > MAX_PROPERTIES_BYTES)
    throw new EventValidationError(
      'properties',
      `${where}properties are ${bytes.toLocaleString('en-US')} bytes as UTF-8 JSON; send at most ${MAX_PROPERTIES_BYTES.toLocaleString('en-US')} bytes (32 KB)`,
    );
  if (json.includes('u0000') && NUL_IN_JSON.test(json))
    throw new EventValidationError(
      'properties',
      `${where}properties must not contain a NUL character (\\u0000) in any key or value`,
    );
  return json;
}

export function validateEvent(v: unknown, index: number | null, now = Date.now()): EventRow {
  const where = index === null ? '' : `events[${index}].`;
  if (!isObject(v))
    throw new EventValidationError(
      'body',
      `${index === null ? 'the body' : `events[${index}]`} must be an object {userId, action, timestamp?, properties?, messageId?}, got ${describe(v)}`,
    );
  for (const key of Object.keys(v)) {
    if (!FIELDS.includes(key))
      throw new EventValidationError(key, `${where}${key} is not a known field; use ${FIELDS.join(', ')}`);
  }
  return {
    userId: text(where, 'userId', v.userId, MAX_ID, true)!,
    action: text(where, 'action', v.action, MAX_ACTION, true)!,
    ts: parseTimestamp(where, v.timestamp, now),
    properties: parseProperties(where, v.properties),
    messageId: text(where, 'messageId', v.messageId, MAX_ID, false),
  };
}

/** The POST /api/events body: one event or a non-empty array of up to MAX_BATCH. */
export function validateBody(body: unknown, now = Date.now()): EventRow[] {
  if (body === undefined)
    throw new EventValidationError('body', 'send a JSON body: {userId, action} or an array of them');
  if (typeof body === 'string')
    throw new EventValidationError(
      'body',
      'the body is a string, not an event or an array of them: send JSON with Content-Type: application/json, encoded once (a JSON string holding JSON was encoded twice)',
    );
  if (!Array.isArray(body)) return [validateEvent(body, null, now)];
  if (body.length === 0) throw new EventValidationError('body', 'the array is empty: send 1 to 1000 events');
  if (body.length > MAX_BATCH)
    throw new EventValidationError(
      'body',
      `the array has ${body.length} events; send at most ${MAX_BATCH} per request`,
    );
  return body.map((e, i) => validateEvent(e, i, now));
}
