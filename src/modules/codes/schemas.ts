// Route schemas (TypeBox): request validation at the edge and the documented responses in /docs.
import { type Static, Type } from '@sinclair/typebox';
import { PG_INT_MAX } from '../../kit/db.ts';
import { GENERATE_MAX } from './generate.ts';
import { RESERVE_MAX, TTL_MAX_SECONDS } from './service.ts';

const Id = (description: string) =>
  Type.String({ pattern: '^[A-Za-z0-9][A-Za-z0-9_.:-]{0,199}$', description });

export const CampaignParams = Type.Object({ id: Id('campaign id') });
export const CodeParams = Type.Object({ id: Id('campaign id'), code: Type.String({ maxLength: 100 }) });
export const UserParams = Type.Object({
  id: Id('campaign id'),
  userId: Type.String({ minLength: 1, maxLength: 200, description: 'the userId codes were assigned to' }),
});
export const UserCodesQuery = Type.Object({
  limit: Type.Integer({ minimum: 1, maximum: 1000, default: 100 }),
  after: Type.Optional(Type.String({ maxLength: 100, description: 'the last code of the previous page' })),
});
export const ReservationParams = Type.Object({ id: Id('campaign id'), reserveId: Id('reserveId') });

export const CreateCampaignBody = Type.Object(
  {
    id: Id('campaign id: letters, digits, _ . : -'),
    name: Type.String({ minLength: 1, maxLength: 200 }),
    format: Type.Object(
      {
        length: Type.Integer({ description: 'characters after the prefix, 4-32' }),
        alphabet: Type.String({
          maxLength: 100,
          description: 'alphanumeric | safe | numeric, or the characters themselves (2-66 distinct)',
        }),
        prefix: Type.Optional(Type.String({ maxLength: 32 })),
      },
      { additionalProperties: false },
    ),
    reservationTtlSeconds: Type.Optional(Type.Integer({ minimum: 1, maximum: TTL_MAX_SECONDS })),
    maxPerUser: Type.Optional(
      Type.Integer({ minimum: 1, maximum: PG_INT_MAX, description: 'most codes one userId may be assigned' }),
    ),
  },
  { additionalProperties: false },
);
export type CreateCampaignBody = Static<typeof CreateCampaignBody>;

export const UpdateCampaignBody = Type.Object(
  {
    name: Type.Optional(Type.String({ minLength: 1, maxLength: 200 })),
    reservationTtlSeconds: Type.Optional(
      Type.Integer({
        minimum: 1,
        maximum: TTL_MAX_SECONDS,
        description: 'for reservations made from now on; those made keep their expiry',
      }),
    ),
    maxPerUser: Type.Optional(
      Type.Union([Type.Integer({ minimum: 1, maximum: PG_INT_MAX }), Type.Null()], {
        description: 'null removes the limit; codes already assigned stay with their users',
      }),
    ),
    // Accepted only to be refused with a message that says why (see the service).
    format: Type.Optional(Type.Unknown({ description: 'cannot change: refused with a 400' })),
  },
  { additionalProperties: false },
);

export const Inventory = Type.Object({
  available: Type.Integer(),
  reserved: Type.Integer(),
  assigned: Type.Integer(),
  total: Type.Integer(),
});

export const CampaignView = Type.Object({
  id: Type.String(),
  name: Type.String(),
  format: Type.Object({
    length: Type.Integer(),
    alphabet: Type.String(),
    preset: Type.String(),
    prefix: Type.String(),
  }),
  reservationTtlSeconds: Type.Integer(),
  maxPerUser: Type.Union([Type.Integer(), Type.Null()]),
  capacity: Type.Number({ description: 'alphabet^length' }),
  density: Type.Number({ description: 'codes held / capacity; generation stops at 0.01' }),
  inventory: Inventory,
  createdAt: Type.String({ format: 'date-time' }),
});

export const ListQuery = Type.Object({
  limit: Type.Integer({ minimum: 1, maximum: 1000, default: 100 }),
  after: Type.Optional(Type.String({ description: 'the last id of the previous page' })),
});

export const GenerateBody = Type.Object(
  { count: Type.Integer({ minimum: 1, maximum: GENERATE_MAX }) },
  { additionalProperties: false },
);
export const GenerateNow = Type.Object({ generated: Type.Integer(), codes: Type.Array(Type.String()) });
export const GenerateLater = Type.Object({
  jobId: Type.String(),
  state: Type.Literal('queued', { description: 'as GET /api/jobs/:jobId names it' }),
  total: Type.Integer(),
  statusUrl: Type.String(),
});

export const ImportResult = Type.Object({
  inserted: Type.Integer(),
  duplicate: Type.Integer(),
  invalid: Type.Integer(),
  invalidSamples: Type.Array(Type.String()),
});

export const CodeView = Type.Object({
  campaignId: Type.String(),
  code: Type.String(),
  state: Type.Union([Type.Literal('available'), Type.Literal('reserved'), Type.Literal('assigned')]),
  reserveId: Type.Union([Type.String(), Type.Null()]),
  userId: Type.Union([Type.String(), Type.Null()]),
  createdAt: Type.String(),
  reservedAt: Type.Union([Type.String(), Type.Null()]),
  expiresAt: Type.Union([Type.String(), Type.Null()]),
  assignedAt: Type.Union([Type.String(), Type.Null()]),
});

export const ReserveBody = Type.Object(
  {
    count: Type.Integer({ minimum: 1, maximum: RESERVE_MAX }),
    reserveId: Type.Optional(Id('your id for this reservation; the same id again returns the same codes')),
    ttlSeconds: Type.Optional(Type.Integer({ minimum: 1, maximum: TTL_MAX_SECONDS })),
  },
  { additionalProperties: false },
);
export const ReserveResult = Type.Object({
  reserveId: Type.String(),
  codes: Type.Array(Type.String()),
  expiresAt: Type.String({ format: 'date-time' }),
});
export const AssignBody = Type.Object(
  { userId: Type.String({ minLength: 1, maxLength: 200 }) },
  { additionalProperties: false },
);
export const AssignResult = Type.Object({
  reserveId: Type.String(),
  codes: Type.Array(Type.String()),
  userId: Type.String(),
  assignedAt: Type.String({ format: 'date-time' }),
});
export const ReleaseResult = Type.Object({ released: Type.Integer() });
const NullableDate = Type.Union([Type.String({ format: 'date-time' }), Type.Null()]);
export const ReservationView = Type.Object({
  reserveId: Type.String(),
  state: Type.Union([
    Type.Literal('reserved'),
    Type.Literal('assigned'),
    Type.Literal('released'),
    Type.Literal('expired'),
  ]),
  codes: Type.Array(Type.String()),
  userId: Type.Union([Type.String(), Type.Null()]),
  createdAt: Type.String({ format: 'date-time' }),
  expiresAt: Type.String({ format: 'date-time' }),
  assignedAt: NullableDate,
  endedAt: NullableDate,
});

// Strict as every other body: a sender's misspelt {"cout": 5} was served one code and a 201.
export const WebhookGenerateBody = Type.Optional(
  Type.Object(
    { count: Type.Optional(Type.Integer({ minimum: 1, maximum: 1000 })) },
    { additionalProperties: false },
  ),
);
export const WebhookGenerateResult = Type.Object({
  code: Type.Optional(Type.String()),
  codes: Type.Optional(Type.Array(Type.String())),
});

export const ErrorBody = Type.Object({
  statusCode: Type.Integer(),
  error: Type.String(),
  message: Type.String(),
});

export const CampaignList = Type.Object({
  campaigns: Type.Array(CampaignView),
  next: Type.Union([Type.String(), Type.Null()], {
    description: 'pass as `after` for the next page; null when this page is not full',
  }),
});

export const UserCodes = Type.Object({
  userId: Type.String(),
  codes: Type.Array(CodeView),
  next: Type.Union([Type.String(), Type.Null()], {
    description: 'pass as `after` for the next page; null on the last',
  }),
});
