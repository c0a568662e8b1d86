// The books service: what the books RPC answers, in-process or on worker processes over NATS.
// Inputs and outputs are plain JSON (ISO dates), so both transports return the same thing.
// Other modules import only the BooksService type from here.
import { createHash } from 'node:crypto';
import { Coalescer } from '../../kit/coalescer.ts';
import type { Pool } from '../../kit/db.ts';
import { badRequest, conflict, notFound, unprocessable } from '../../kit/errors.ts';
import type { Logger } from '../../kit/log.ts';
import { UUID } from '../../kit/text.ts';
import {
  type BookRow,
  type CreateKey,
  changeStatus,
  deleteBook,
  insertBook,
  selectBook,
  selectBooks,
  selectBooksById,
  selectCreateKey,
  selectHistory,
  selectRacks,
  toBook,
  toHistoryEntry,
  updateBook,
} from './queries.ts';
import {
  type Book,
  type BookInput,
  type BookPatch,
  type BookStatus,
  type CheckoutInput,
  DEFAULT_PAGE,
  type HistoryEntry,
  type ListQuery,
  type PageQuery,
  type Rack,
} from './schemas.ts';

export interface Page<T> {
  items: T[];
  nextCursor: string | null;
}

export interface BooksService {
  /**
   * With an idempotencyKey (POST /books' Idempotency-Key header), a repeat within 24 hours answers
   * the book the first one made (`replayed`), or 422 when it asks for a different book.
   */
  create(input: { book: BookInput; idempotencyKey?: string }): Promise<{ book: Book; replayed: boolean }>;
  get(input: { id: string }): Promise<Book>;
  list(input: ListQuery): Promise<Page<Book>>;
  /** `version`: the expected version (If-Match or the body's); undefined = last write wins. */
  update(input: { id: string; version?: number; patch: BookPatch }): Promise<Book>;
  remove(input: { id: string; version?: number }): Promise<Book>;
  checkout(input: CheckoutInput): Promise<{ book: Book; event: HistoryEntry }>;
  history(input: { id: string } & PageQuery): Promise<Page<HistoryEntry>>;
  racks(input: Record<string, never>): Promise<Rack[]>;
}

/** Ids are UUIDs; anything else cannot name a book, so it is the same 404 as an unknown id. */
function bookId(id: string): string {
  if (!UUID.test(id)) throw missing(id);
  return id.toLowerCase();
}

const missing = (id: string) => notFound(`no book with id "${id}"`);

// Cursors are opaque to clients: base64url of "<kind>:<position>".
export function encodeCursor(kind: string, position: number): string {
  return Buffer.from(`${kind}:${position}`).toString('base64url');
}

function decodeCursor(kind: string, cursor: string | undefined): number | undefined {
  if (cursor === undefined) return undefined;
  const m = /^([a-z]+):(\d{1,15})$/.exec(Buffer.from(cursor, 'base64url').toString('utf8'));
  if (!m || m[1] !== kind) {
    throw badRequest('cursor is not one this endpoint returned: pass nextCursor from the previous page');
  }
  return Number(m[2]);
}

function page<R, T>(rows: R[], limit: number, map: (r: R) => T, position: (r: R) => number, kind: string) {
  const more = rows.length > limit;
  const items = (more ? rows.slice(0, limit) : rows).map(map);
  const last = rows[limit - 1];
  return { items, nextCursor: more && last ? encodeCursor(kind, position(last)) : null };
}

export function createBooksService(pool: Pool, log: Logger): BooksService {
  /** Why a guarded write matched no row: the book is gone, or a guard no longer holds. */
  async function explainMiss(
    id: string,
    expected: number | undefined,
    action: 'update' | 'delete',
  ): Promise<never> {
    const cur = await selectBook(pool, id);
    if (!cur) throw missing(id);
    if (expected !== undefined && cur.version !== expected) {
      throw conflict(
        `book ${id} is at version ${cur.version}, not ${expected}: it changed since you read it; GET it again and retry the ${action}`,
      );
    }
    if (action === 'delete') {
      const by = cur.borrower ? ` by ${cur.borrower}` : '';
      throw conflict(`book ${id} is checked out${by}: return it with POST /checkout before deleting it`);
    }
    throw statusIsNotUpdated(id, cur);
  }

  function statusIsNotUpdated(id: string, cur: BookRow) {
    const by = cur.borrower ? ` by ${cur.borrower}` : '';
    return conflict(
      `book ${id} is ${cur.status}${by}: status and borrower change only through POST /checkout; leave them out of the update or send them unchanged`,
    );
  }

  /** A PUT with only status or borrower: a 409 when it asks for a change, as it would beside a name. */
  async function refuseStatusOnlyChange(id: string, key: string, info: NonNullable<BookPatch['info']>) {
    if (info.status === undefined && info.borrower === undefined) return;
    const cur = await selectBook(pool, key);
    if (!cur) throw missing(id);
    const statusChanges = info.status !== undefined && info.status !== cur.status;
    const borrowerChanges = info.borrower !== undefined && info.borrower !== cur.borrower;
    if (statusChanges || borrowerChanges) throw statusIsNotUpdated(id, cur);
  }

  /** A create whose Idempotency-Key was taken: the book that key made, if the same book was asked. */
  async function replay(key: CreateKey, input: BookInput): Promise<{ book: Book; replayed: boolean }> {
    const prior = await selectCreateKey(pool, key.key);
    // Forgotten (24 hours) between the two statements: the key is free again.
    if (!prior) return service.create({ book: input, idempotencyKey: key.key });
    if (!prior.request_hash.equals(key.requestHash)) {
      throw unprocessable(
        `Idempotency-Key "${key.key}" was sent at ${prior.created_at.toISOString()} with a different book: send a new key for each book you create`,
      );
    }
    const book = await selectBook(pool, prior.book_id);
    if (!book) {
      throw conflict(
        `book ${prior.book_id}, created with Idempotency-Key "${key.key}", has since been deleted; send a new key to create it again`,
      );
    }
    log.info({ bookId: book.id }, 'BOOK_CREATE_REPLAYED');
    return { book: toBook(book), replayed: true };
  }

  // GET /books/:id is the hottest call: concurrent reads share one query.
  const reads = new Coalescer<string, BookRow | undefined>((_key, ids) => selectBooksById(pool, ids), {
    maxBatch: 500,
    maxInflight: 1,
  });

  const service: BooksService = {
    async create({ book: input, idempotencyKey }) {
      const status: BookStatus = input.info.status ?? 'available';
      if (status === 'available' && input.info.borrower !== undefined) {
        throw badRequest('info.borrower is only allowed when info.status is "checked-out"');
      }
      const values = {
        tags: input.tags ?? [],
        name: input.info.name,
        author: input.info.author,
        status,
        borrower: input.info.borrower ?? null,
        rack_id: input.rack_id,
      };
      const key = idempotencyKey && {
        key: idempotencyKey,
        requestHash: createHash('sha256').update(JSON.stringify(values)).digest(),
      };
      const row = await insertBook(pool, values, key || undefined);
      if (row) {
        log.info({ bookId: row.id, rackId: row.rack_id }, 'BOOK_CREATED');
        return { book: toBook(row), replayed: false };
      }
      return replay(key as CreateKey, input);
    },

    async get({ id }) {
      const row = await reads.submit('books', bookId(id));
      if (!row) throw missing(id);
      return toBook(row);
    },

    async list(q) {
      const limit = q.limit ?? DEFAULT_PAGE;
      const rows = await selectBooks(pool, {
        tag: q.tag,
        status: q.status,
        rack_id: q.rack_id,
        author: q.author,
        q: q.q,
        afterSeq: decodeCursor('b', q.cursor),
        limit: limit + 1,
      });
      return page(rows, limit, toBook, (r) => r.seq, 'b');
    },

    async update({ id, version, patch }) {
      const key = bookId(id);
      if (patch.id !== undefined && patch.id.toLowerCase() !== key) {
        throw badRequest(`body id "${patch.id}" does not match the URL's book id "${id}"; ids cannot change`);
      }
      const info = patch.info ?? {};
      if (
        patch.tags === undefined &&
        info.name === undefined &&
        info.author === undefined &&
        patch.rack_id === undefined
      ) {
        await refuseStatusOnlyChange(id, key, info);
        throw badRequest('nothing to update: send at least one of tags, info.name, info.author, rack_id');
      }
      const row = await updateBook(
        pool,
        key,
        { tags: patch.tags, name: info.name, author: info.author, rack_id: patch.rack_id },
        { version, status: info.status, borrower: info.borrower },
      );
      if (!row) return explainMiss(id, version, 'update');
      return toBook(row);
    },

    async remove({ id, version }) {
      const key = bookId(id);
      const row = await deleteBook(pool, key, version);
      if (!row) return explainMiss(id, version, 'delete');
      log.info({ bookId: row.id }, 'BOOK_DELETED');
      return toBook(row);
    },

    async checkout({ id, info }) {
      const key = bookId(id);
      if (info.status === 'available' && info.borrower !== undefined) {
        throw badRequest('info.borrower is only for a checkout (status "checked-out"), not a return');
      }
      const change = await changeStatus(pool, key, info.status, info.borrower ?? null);
      if (!change) {
        const cur = await selectBook(pool, key);
        if (!cur) throw missing(id);
        throw conflict(
          info.status === 'checked-out'
            ? `book ${id} is already checked out${cur.borrower ? ` by ${cur.borrower}` : ''}: it must be returned first`
            : `book ${id} is not checked out, so it cannot be returned`,
        );
      }
      const book = toBook(change.book);
      const event: HistoryEntry = {
        id: change.historyId,
        bookId: book.id,
        action: info.status === 'checked-out' ? 'checkout' : 'return',
        borrower: change.borrower,
        version: book.version,
        at: change.at.toISOString(),
      };
      log.info(
        { bookId: book.id, borrower: change.borrower },
        event.action === 'checkout' ? 'BOOK_CHECKED_OUT' : 'BOOK_RETURNED',
      );
      return { book, event };
    },

    async history({ id, limit = DEFAULT_PAGE, cursor }) {
      const key = bookId(id);
      const after = decodeCursor('h', cursor);
      const rows = await selectHistory(pool, key, after, limit + 1);
      // An empty history is normal; an unknown book is a 404.
      if (rows.length === 0 && !(await selectBook(pool, key))) throw missing(id);
      return page(rows, limit, toHistoryEntry, (r) => r.id, 'h');
    },

    async racks() {
      return selectRacks(pool);
    },
  };
  return service;
}
