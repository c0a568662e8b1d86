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
  MAX_ID,
  parseProperties,
  parseTimestamp,
  refuseNul,
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

export function segmentToEvent(
  msg: unknown,
  where: string,
  typeHint?: SegmentType,
  now = Date.now(),
): EventRow {
  if (!isObject(msg)) throw new EventValidationError('body', `${where || 'the body'} must be a JSON object`);
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
    if (!nonEmpty(msg.event) || msg.event.length > 128)
      throw new EventValidationError(
        'event',
        `${where}event is required for track calls: a non-empty string of at most 128 characters`,
      );
    action = msg.event;
  } else action = ACTION_OF[type];
  const props = type === 'identify' || type === 'group' ? msg.traits : msg.properties;
  const messageId = msg.messageId;
  if (messageId !== undefined && !nonEmpty(messageId))
    throw new EventValidationError('messageId', `${where}messageId must be a non-empty string`);
  return {
    userId: refuseNul(where, msg.userId === userId ? 'userId' : 'anonymousId', userId),
    action: refuseNul(where, 'event', action),
    ts: parseTimestamp(where, msg.timestamp ?? msg.originalTimestamp, now),
    properties: parseProperties(where, props ?? undefined),
    messageId: messageId === undefined ? null : refuseNul(where, 'messageId', messageId as string),
  };
}

export function segmentBatch(body: unknown): EventRow[] {
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
  return body.batch.map((m, i) => segmentToEvent(m, `batch[${i}].`, undefined, now));
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
