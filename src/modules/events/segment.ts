// The Segment Tracking API (https://segment.com/docs/connections/sources/catalog/libraries/server/http-api/):
// POST /v1/track, /v1/batch (and the other call types), write key as the HTTP Basic user. The write
// key is a Tessera API key with the events scope, so Segment's own clients work unchanged.
import type { FastifyRequest } from 'fastify';
import { hasScope, type Principal } from '../../kit/auth.ts';
import { badRequest, forbidden, unauthorized } from '../../kit/errors.ts';
import { authenticate } from '../../kit/http.ts';
import type { Kit } from '../../kit/kit.ts';
import { longerThan } from '../../kit/text.ts';
import {
  describe,
  type EventRow,
  EventValidationError,
  MAX_ACTION,
  MAX_ID,
  parseProperties,
  parseTimestamp,
  refuseNul,
  text,
} from './validate.ts';

export const SEGMENT_TYPES = ['track', 'identify', 'page', 'screen', 'group', 'alias'] as const;
type SegmentType = (typeof SEGMENT_TYPES)[number];
const MAX_SEGMENT_BATCH = 2500; // Segment caps a batch at 500 KB; 2,500 tiny events fit that.

/** The action a non-track call is counted under. */
const ACTION_OF: Record<Exclude<SegmentType, 'track'>, string> = {
  identify: 'identify',
  page: 'page_view',
  screen: 'screen_view',
  group: 'group',
  alias: 'alias',
};

const isObject = (v: unknown): v is Record<string, unknown> =>
  typeof v === 'object' && v !== null && !Array.isArray(v);

function nonEmpty(v: unknown): v is string {
  return typeof v === 'string' && v.trim() !== '' && !longerThan(v, MAX_ID);
}

/**
 * The properties a call is stored with: its properties (traits for identify and group), plus the
 * field that names what the call is about, which Tessera's event has no column for: a page's or
 * screen's `name`, a group's `groupId`, an alias's `previousId` (unless a property of that name
 * was sent too).
 */
function propertiesOf(type: SegmentType, msg: Record<string, unknown>): unknown {
  const props = type === 'identify' || type === 'group' ? msg.traits : msg.properties;
  const key =
    type === 'page' || type === 'screen'
      ? 'name'
      : type === 'group'
        ? 'groupId'
        : type === 'alias'
          ? 'previousId'
          : undefined;
  const value = key === undefined ? undefined : msg[key];
  if (value === undefined || value === null) return props;
  if (props !== undefined && props !== null && !isObject(props)) return props; // refused as it is
  return { [key!]: value, ...(props ?? {}) };
}

export function segmentToEvent(
  msg: unknown,
  where: string,
  typeHint?: SegmentType,
  now = Date.now(),
): EventRow {
  if (!isObject(msg))
    throw new EventValidationError(
      'body',
      `${where ? where.slice(0, -1) : 'the body'} must be a JSON object`,
    );
  const type = (msg.type ?? typeHint) as SegmentType | undefined;
  if (!type || !(SEGMENT_TYPES as readonly string[]).includes(type))
    throw new EventValidationError('type', `${where}type must be one of ${SEGMENT_TYPES.join(', ')}`);
  const userId = nonEmpty(msg.userId) ? msg.userId : nonEmpty(msg.anonymousId) ? msg.anonymousId : undefined;
  if (!userId) {
    const given = msg.userId ?? msg.anonymousId;
    throw new EventValidationError(
      'userId',
      given === undefined || given === null
        ? `${where}userId or anonymousId is required: a non-empty string of at most 256 characters`
        : `${where}userId or anonymousId must be a non-empty string of at most 256 characters, got ${describe(given)}`,
    );
  }
  let action: string;
  if (type === 'track') {
    if (msg.event === undefined || msg.event === null)
      throw new EventValidationError(
        'event',
        `${where}event is required for track calls: a non-empty string of at most ${MAX_ACTION} characters`,
      );
    action = text(where, 'event', msg.event, MAX_ACTION, true)!;
  } else action = ACTION_OF[type];
  return {
    userId: refuseNul(where, msg.userId === userId ? 'userId' : 'anonymousId', userId),
    action,
    ts: parseTimestamp(where, msg.timestamp ?? msg.originalTimestamp, now),
    properties: parseProperties(where, propertiesOf(type, msg) ?? undefined),
    messageId: text(where, 'messageId', msg.messageId, MAX_ID, false),
  };
}

export interface SegmentBatch {
  rows: EventRow[];
  /** Calls refused, each with its index in the batch and why. */
  rejected: { index: number; field: string; message: string }[];
}

/**
 * The calls of a /v1/batch. As Segment's API does, a batch is refused whole only when it is not a
 * batch; a call that is invalid is refused alone, and the valid calls around it are kept (Segment's
 * clients drop a whole batch on a 400, so one bad call would lose every good one with it).
 */
export function segmentBatch(body: unknown): SegmentBatch {
  if (!isObject(body) || !Array.isArray(body.batch))
    throw new EventValidationError('batch', 'the body must be {"batch": [ …Segment calls… ]}');
  if (body.batch.length === 0)
    throw new EventValidationError('batch', 'batch is empty: send at least one call');
  if (body.batch.length > MAX_SEGMENT_BATCH)
    throw new EventValidationError(
      'batch',
      `batch has ${body.batch.length} calls; send at most ${MAX_SEGMENT_BATCH}`,
    );
  const now = Date.now();
  const out: SegmentBatch = { rows: [], rejected: [] };
  body.batch.forEach((m, index) => {
    try {
      out.rows.push(segmentToEvent(m, `batch[${index}].`, undefined, now));
    } catch (err) {
      if (!(err instanceof EventValidationError)) throw err;
      out.rejected.push({ index, field: err.field, message: err.message });
    }
  });
  if (out.rows.length === 0) {
    const shown = out.rejected.slice(0, 5).map((r) => r.message);
    const more = out.rejected.length > 5 ? `; and ${out.rejected.length - 5} more` : '';
    throw new EventValidationError('batch', `no call in the batch is valid: ${shown.join('; ')}${more}`);
  }
  return out;
}

/** Write key as the Basic user (Segment's way), in the body, or a normal Tessera credential. */
export async function segmentPrincipal(kit: Kit, req: FastifyRequest): Promise<Principal> {
  const auth = req.headers.authorization;
  let writeKey: string | undefined;
  if (auth?.startsWith('Basic ')) {
    const decoded = Buffer.from(auth.slice(6).trim(), 'base64').toString('utf8');
    writeKey = decoded.split(':')[0];
  } else if (isObject(req.body) && typeof req.body.writeKey === 'string') writeKey = req.body.writeKey;
  let principal: Principal | null;
  if (writeKey) {
    principal = await kit.apiKeys.verify(writeKey);
    if (!principal) kit.metrics.authFailures.inc({ kind: 'api_key' });
  } else principal = await authenticate(kit, req);
  if (!principal)
    throw unauthorized(
      'missing or invalid write key: send the Tessera API key as the HTTP Basic user (Segment write key)',
    );
  if (!hasScope(principal, 'events')) {
    kit.metrics.authFailures.inc({ kind: 'scope' });
    throw forbidden('this write key lacks the "events" scope');
  }
  return principal;
}

export function segmentError(err: unknown): never {
  if (err instanceof EventValidationError) throw badRequest(err.message);
  throw err;
}
