// The books API at the edge: TypeBox schemas for seed 002's bodies and the {statusCode, data,
// message} envelope, and the types the service speaks (derived from the same schemas).
//
// Glossary
// - book: {id, type:"book", tags, info:{name, author, status, borrower?}, rack_id, version, …}
// - version: bumped by every write; a PUT/DELETE carrying an older one (If-Match or body) is a 409
// - rack: the rack_id books carry; GET /racks groups books by it
// - history entry: one checkout or return, written in the same statement as the status change
import { type Static, type TSchema, Type } from '@sinclair/typebox';
import { PG_INT_MAX } from '../../kit/db.ts';

export const BOOK_STATUSES = ['available', 'checked-out'] as const;
export type BookStatus = (typeof BOOK_STATUSES)[number];
/** An enum as a plain JSON-schema string enum, so a wrong value's message can list the allowed ones. */
const Status = Type.Unsafe<BookStatus>({ type: 'string', enum: [...BOOK_STATUSES] });

export const MAX_PAGE = 200;
export const DEFAULT_PAGE = 50;

const Name = Type.String({ minLength: 1, maxLength: 500 });
const Author = Type.String({ minLength: 1, maxLength: 300 });
const Borrower = Type.String({ minLength: 1, maxLength: 200 });
const RackId = Type.String({ minLength: 1, maxLength: 100, pattern: '^[A-Za-z0-9][A-Za-z0-9._:-]*$' });
const Tags = Type.Array(Type.String({ minLength: 1, maxLength: 64 }), { maxItems: 50 });

export const BookInput = Type.Object(
  {
    type: Type.Optional(Type.Literal('book')),
    tags: Type.Optional(Tags),
    info: Type.Object(
      { name: Name, author: Author, status: Type.Optional(Status), borrower: Type.Optional(Borrower) },
      { additionalProperties: false },
    ),
    rack_id: RackId,
  },
  { additionalProperties: false },
);
export type BookInput = Static<typeof BookInput>;

/**
 * PUT accepts a partial book. It also accepts the read-only fields a client got from GET (id,
 * createdAt, updatedAt) so a fetched book can be sent back as is; `version` there is the expected
 * version. Status and borrower change only through POST /checkout, so that history stays complete.
 */
export const BookPatch = Type.Object(
  {
    id: Type.Optional(Type.String()),
    type: Type.Optional(Type.Literal('book')),
    tags: Type.Optional(Tags),
    info: Type.Optional(
      Type.Object(
        {
          name: Type.Optional(Name),
          author: Type.Optional(Author),
          status: Type.Optional(Status),
          borrower: Type.Optional(Type.Union([Borrower, Type.Null()])),
        },
        { additionalProperties: false },
      ),
    ),
    rack_id: Type.Optional(RackId),
    version: Type.Optional(Type.Integer({ minimum: 1, maximum: PG_INT_MAX })),
    createdAt: Type.Optional(Type.String()),
    updatedAt: Type.Optional(Type.String()),
  },
  { additionalProperties: false },
);
export type BookPatch = Static<typeof BookPatch>;

export const CheckoutInput = Type.Object(
  {
    id: Type.String({ minLength: 1, maxLength: 100 }),
    info: Type.Object({ status: Status, borrower: Type.Optional(Borrower) }, { additionalProperties: false }),
  },
  { additionalProperties: false },
);
export type CheckoutInput = Static<typeof CheckoutInput>;

export const ListQuery = Type.Object(
  {
    tag: Type.Optional(Type.String({ minLength: 1, maxLength: 64 })),
    status: Type.Optional(Status),
    rack_id: Type.Optional(Type.String({ minLength: 1, maxLength: 100 })),
    author: Type.Optional(Type.String({ minLength: 1, maxLength: 300 })),
    q: Type.Optional(Type.String({ minLength: 1, maxLength: 200 })),
    limit: Type.Optional(Type.Integer({ minimum: 1, maximum: MAX_PAGE, default: DEFAULT_PAGE })),
    cursor: Type.Optional(Type.String({ minLength: 1, maxLength: 100 })),
  },
  { additionalProperties: false },
);
export type ListQuery = Static<typeof ListQuery>;

export const PageQuery = Type.Object(
  {
    limit: Type.Optional(Type.Integer({ minimum: 1, maximum: MAX_PAGE, default: DEFAULT_PAGE })),
    cursor: Type.Optional(Type.String({ minLength: 1, maxLength: 100 })),
  },
  { additionalProperties: false },
);
export type PageQuery = Static<typeof PageQuery>;

export const IdParams = Type.Object({ id: Type.String({ minLength: 1, maxLength: 100 }) });

export const Book = Type.Object({
  id: Type.String(),
  type: Type.Literal('book'),
  tags: Type.Array(Type.String()),
  info: Type.Object({
    name: Type.String(),
    author: Type.String(),
    status: Status,
    borrower: Type.Optional(Type.String()),
  }),
  rack_id: Type.String(),
  version: Type.Integer(),
  createdAt: Type.String(),
  updatedAt: Type.String(),
});
export type Book = Static<typeof Book>;

export const HistoryEntry = Type.Object({
  id: Type.Integer(),
  bookId: Type.String(),
  action: Type.Union([Type.Literal('checkout'), Type.Literal('return')]),
  borrower: Type.Union([Type.String(), Type.Null()]),
  version: Type.Integer(),
  at: Type.String(),
});
export type HistoryEntry = Static<typeof HistoryEntry>;

export const Rack = Type.Object({
  rack_id: Type.String(),
  books: Type.Integer(),
  available: Type.Integer(),
  checkedOut: Type.Integer(),
});
export type Rack = Static<typeof Rack>;

/** Seed 002's success envelope; lists add `nextCursor` (null on the last page) beside `data`. */
export const Envelope = <T extends TSchema>(data: T) =>
  Type.Object({ statusCode: Type.Integer(), data, message: Type.String() });
export const PageEnvelope = <T extends TSchema>(item: T) =>
  Type.Object({
    statusCode: Type.Integer(),
    data: Type.Array(item),
    message: Type.String(),
    nextCursor: Type.Union([Type.String(), Type.Null()]),
  });
