// Request and response schemas (TypeBox): validation at the edge, types derived from the same source.
import { type Static, Type } from '@sinclair/typebox';
import { PG_INT_MAX } from '../../kit/db.ts';
import { CHANNELS } from './channels.ts';

export const MAX_INLINE_RECIPIENTS = 10_000;
export const BATCH_STATES = [
  'draft',
  'queued',
  'sending',
  'paused',
  'completed',
  'cancelled',
  'failed',
] as const;
export const RECIPIENT_STATES = [
  'pending',
  'sending',
  'sent',
  'failed',
  'suppressed',
  'cancelled',
  'bounced',
] as const;
export const DELIVERY_EVENTS = ['delivered', 'bounced', 'complained', 'opened'] as const;

export const IdParams = Type.Object({ id: Type.String({ format: 'uuid' }) });

export const SendConfigBody = Type.Object(
  {
    name: Type.String({ minLength: 1, maxLength: 100 }),
    channel: Type.Union(CHANNELS.map((c) => Type.Literal(c))),
    settings: Type.Record(Type.String(), Type.Unknown(), { default: {} }),
    /** SMTP password or the webhook signing secret (whsec_…); stored, never returned. */
    secret: Type.Optional(Type.String({ minLength: 1, maxLength: 500 })),
    ratePerSecond: Type.Optional(Type.Integer({ minimum: 1, maximum: 1_000_000 })),
  },
  { additionalProperties: false },
);
export type SendConfigBody = Static<typeof SendConfigBody>;

export const TestSendBody = Type.Object(
  {
    to: Type.String({ minLength: 1, maxLength: 320 }),
    subject: Type.String({ default: 'Tessera test message', maxLength: 500 }),
    text: Type.String({ default: 'This is a test message from Tessera.', maxLength: 10_000 }),
  },
  { additionalProperties: false },
);

/** RFC 5321's longest e-mail address; other channels' addresses are held to it too. */
export const ADDRESS_MAX = 320;

export const Recipient = Type.Object(
  {
    address: Type.String({ minLength: 1, maxLength: ADDRESS_MAX }),
    variables: Type.Optional(Type.Record(Type.String(), Type.Unknown())),
  },
  { additionalProperties: false },
);
export type Recipient = Static<typeof Recipient>;

export const TemplateSchema = Type.Object(
  {
    subject: Type.String({ minLength: 1, maxLength: 1000 }),
    html: Type.Optional(Type.String({ maxLength: 1_000_000 })),
    text: Type.Optional(Type.String({ maxLength: 1_000_000 })),
  },
  { additionalProperties: false },
);

export const MockOptions = Type.Object(
  {
    latencyMs: Type.Optional(Type.Integer({ minimum: 0, maximum: 60_000 })),
    failureRate: Type.Optional(Type.Number({ minimum: 0, maximum: 1 })),
    transientFailureRate: Type.Optional(Type.Number({ minimum: 0, maximum: 1 })),
  },
  { additionalProperties: false },
);

export const BatchBody = Type.Object(
  {
    name: Type.Optional(Type.String({ maxLength: 200 })),
    /** The send config to use; required unless channel is mock. */
    sendConfigId: Type.Optional(Type.String({ format: 'uuid' })),
    channel: Type.Optional(Type.Literal('mock')),
    mock: Type.Optional(MockOptions),
    template: TemplateSchema,
    recipients: Type.Optional(Type.Array(Recipient, { maxItems: MAX_INLINE_RECIPIENTS })),
    ratePerSecond: Type.Optional(Type.Integer({ minimum: 1, maximum: 1_000_000 })),
    maxAttempts: Type.Optional(Type.Integer({ minimum: 1, maximum: 20 })),
    scheduledAt: Type.Optional(Type.String({ format: 'date-time' })),
    codeCampaign: Type.Optional(Type.String({ minLength: 1, maxLength: 200 })),
    /** Render every inline recipient and return the result; nothing is stored or sent. */
    dryRun: Type.Optional(Type.Boolean()),
    /** Keep the batch in draft (to upload a CSV first); POST /api/batches/:id/send queues it. */
    draft: Type.Optional(Type.Boolean()),
  },
  { additionalProperties: false },
);
export type BatchBody = Static<typeof BatchBody>;

export const ListBatchesQuery = Type.Object({
  state: Type.Optional(Type.Union(BATCH_STATES.map((s) => Type.Literal(s)))),
  limit: Type.Integer({ minimum: 1, maximum: 500, default: 50 }),
  before: Type.Optional(Type.String({ format: 'date-time' })),
  /** The `next` of the page before: where this page starts. */
  cursor: Type.Optional(Type.String({ maxLength: 200 })),
});

export const ListRecipientsQuery = Type.Object({
  state: Type.Optional(Type.Union(RECIPIENT_STATES.map((s) => Type.Literal(s)))),
  after: Type.Integer({ minimum: 0, maximum: PG_INT_MAX, default: 0 }),
  limit: Type.Integer({ minimum: 1, maximum: 1000, default: 100 }),
});

export const SuppressionBody = Type.Object(
  {
    addresses: Type.Array(Type.String({ minLength: 1, maxLength: ADDRESS_MAX }), {
      minItems: 1,
      maxItems: 10_000,
    }),
    reason: Type.String({ default: 'manual', maxLength: 200 }),
  },
  { additionalProperties: false },
);

const DeliveryEvent = Type.Object({
  type: Type.Union(DELIVERY_EVENTS.map((t) => Type.Literal(t))),
  /**
   * `<batchId>:<recipientId>`, the idempotency key the message was sent with. Any text is accepted
   * here: one that names no message of ours is answered under `unknown`, so it cannot make the
   * provider retry (and lose) the good events delivered beside it.
   */
  messageId: Type.String({ minLength: 1, maxLength: 200 }),
});
/**
 * One event, or `{events: [...]}`. One object with every field optional rather than a union of the
 * two forms: a union's refusal listed both forms' complaints and "must match a schema in anyOf",
 * never which `type` values would do. The route checks that exactly one form was sent.
 */
export const DeliveryEventsBody = Type.Object({
  type: Type.Optional(DeliveryEvent.properties.type),
  messageId: Type.Optional(DeliveryEvent.properties.messageId),
  events: Type.Optional(Type.Array(DeliveryEvent, { minItems: 1, maxItems: 1000 })),
});
export type DeliveryEvent = Static<typeof DeliveryEvent>;
