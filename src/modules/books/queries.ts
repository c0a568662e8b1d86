// The books SQL, one verb-named function per statement. Every status change is a single statement
// (a conditional UPDATE plus its history INSERT in one CTE), so it is atomic without a transaction
// round trip and two racing checkouts cannot both match `status <> $2`: the second one re-checks the
// row after the first commits (READ COMMITTED re-evaluation) and updates nothing.
import type { Queryable } from '../../kit/db.ts';
import type { Book, BookStatus, HistoryEntry, Rack } from './schemas.ts';

export interface BookRow {
  id: string;
  seq: number;
  type: 'book';
  tags: string[];
  name: string;
  author: string;
  status: BookStatus;
  borrower: string | null;
  rack_id: string;
  version: number;
  created_at: Date;
  updated_at: Date;
}

const COLUMNS =
  'id, seq, type, tags, name, author, status, borrower, rack_id, version, created_at, updated_at';

export function toBook(r: BookRow): Book {
  return {
    id: r.id,
    type: 'book',
    tags: r.tags,
    info: {
      name: r.name,
      author: r.author,
      status: r.status,
      ...(r.borrower !== null ? { borrower: r.borrower } : {}),
    },
    rack_id: r.rack_id,
    version: r.version,
    createdAt: r.created_at.toISOString(),
    updatedAt: r.updated_at.toISOString(),
  };
}

export interface NewBookRow {
  tags: string[];
  name: string;
  author: string;
  status: BookStatus;
  borrower: string | null;
  rack_id: string;
}

/** An Idempotency-Key of POST /books and the hash of the book it was sent with. */
export interface CreateKey {
  key: string;
  requestHash: Buffer;
}

/**
 * A book created checked-out gets its checkout in history too: status always equals the last entry.
 * With a key, the book is made only if the key is new, in the same statement: the key's row is
 * inserted first and names the book's id. Undefined when the key was taken (a retry, or a request
 * racing it: ON CONFLICT waits for that one to commit), and the key's row says what to answer.
 */
export async function insertBook(
  db: Queryable,
  b: NewBookRow,
  key?: CreateKey,
): Promise<BookRow | undefined> {
  const values = '$1::text[], $2::text, $3::text, $4::text, $5::text, $6::text';
  const { rows } = await db.query<BookRow>(
    `WITH k AS (
       INSERT INTO book_create_keys (key, request_hash, book_id)
       SELECT $7::text, $8::bytea, gen_random_uuid() WHERE $7::text IS NOT NULL
       ON CONFLICT (key) DO NOTHING RETURNING book_id
     ), b AS (
       -- Without a key the first SELECT makes the book; with one, the second, if the key was new.
       INSERT INTO books (id, tags, name, author, status, borrower, rack_id)
       SELECT gen_random_uuid(), ${values} WHERE $7::text IS NULL
       UNION ALL SELECT k.book_id, ${values} FROM k
       RETURNING ${COLUMNS}
     ), h AS (
       INSERT INTO book_history (book_id, action, borrower, version)
       SELECT id, 'checkout', borrower, version FROM b WHERE status = 'checked-out'
     )
     SELECT * FROM b`,
    [b.tags, b.name, b.author, b.status, b.borrower, b.rack_id, key?.key ?? null, key?.requestHash ?? null],
  );
  return rows[0];
}

export async function selectCreateKey(
  db: Queryable,
  key: string,
): Promise<{ request_hash: Buffer; book_id: string; created_at: Date } | undefined> {
  const { rows } = await db.query(
    'SELECT request_hash, book_id, created_at FROM book_create_keys WHERE key = $1',
    [key],
  );
  return rows[0];
}

/** Idempotency keys are answered for 24 hours: a retry comes within minutes, not days. */
export async function forgetCreateKeys(db: Queryable): Promise<number> {
  const { rowCount } = await db.query(
    `DELETE FROM book_create_keys WHERE created_at < now() - interval '24 hours'`,
  );
  return rowCount ?? 0;
}

export async function selectBook(db: Queryable, id: string): Promise<BookRow | undefined> {
  const { rows } = await db.query<BookRow>({
    name: 'books_select_book',
    text: `SELECT ${COLUMNS} FROM books WHERE id = $1`,
    values: [id],
  });
  return rows[0];
}

/** Many books by id in one round trip (the coalesced GET /books/:id); in the order asked. */
export async function selectBooksById(db: Queryable, ids: string[]): Promise<(BookRow | undefined)[]> {
  const { rows } = await db.query<BookRow>({
    name: 'books_select_books_by_id',
    text: `SELECT ${COLUMNS} FROM books WHERE id = ANY($1::uuid[])`,
    values: [ids],
  });
  const byId = new Map(rows.map((r) => [r.id, r]));
  return ids.map((id) => byId.get(id));
}

export interface BookFilter {
  tag?: string;
  status?: BookStatus;
  rack_id?: string;
  author?: string;
  q?: string;
  afterSeq?: number;
  limit: number;
}

/** `%` and `_` in a search are literal characters, not patterns. */
const likeEscape = (s: string) => s.replace(/[\\%_]/g, (c) => `\\${c}`);

export async function selectBooks(db: Queryable, f: BookFilter): Promise<BookRow[]> {
  const where: string[] = [];
  const values: unknown[] = [];
  const add = (sql: (p: string) => string, value: unknown) => {
    values.push(value);
    where.push(sql(`$${values.length}`));
  };
  if (f.tag !== undefined) add((p) => `tags @> ARRAY[${p}::text]`, f.tag);
  if (f.status !== undefined) add((p) => `status = ${p}`, f.status);
  if (f.rack_id !== undefined) add((p) => `rack_id = ${p}`, f.rack_id);
  if (f.author !== undefined) add((p) => `lower(author) = lower(${p})`, f.author);
  // The same expression as books_search_trgm_idx, so the trigram index serves it.
  if (f.q !== undefined) add((p) => `(name || ' ' || author) ILIKE ${p}`, `%${likeEscape(f.q)}%`);
  if (f.afterSeq !== undefined) add((p) => `seq > ${p}`, f.afterSeq);
  values.push(f.limit);
  const { rows } = await db.query<BookRow>(
    `SELECT ${COLUMNS} FROM books ${where.length ? `WHERE ${where.join(' AND ')}` : ''}
     ORDER BY seq LIMIT $${values.length}`,
    values,
  );
  return rows;
}

export interface BookChanges {
  tags?: string[];
  name?: string;
  author?: string;
  rack_id?: string;
}

export interface WriteGuard {
  /** Only when the book is at this version. */
  version?: number;
  /** Only when the book has this status (PUT may repeat it, never change it). */
  status?: BookStatus;
  /** Only when the borrower is this one (null: none). Undefined: any. */
  borrower?: string | null;
}

export async function updateBook(
  db: Queryable,
  id: string,
  c: BookChanges,
  g: WriteGuard,
): Promise<BookRow | undefined> {
  const { rows } = await db.query<BookRow>(
    `UPDATE books SET
       tags = COALESCE($2, tags), name = COALESCE($3, name), author = COALESCE($4, author),
       rack_id = COALESCE($5, rack_id), version = version + 1, updated_at = now()
     WHERE id = $1 AND ($6::int IS NULL OR version = $6) AND ($7::text IS NULL OR status = $7)
       AND (NOT $8::bool OR borrower IS NOT DISTINCT FROM $9)
     RETURNING ${COLUMNS}`,
    [
      id,
      c.tags ?? null,
      c.name ?? null,
      c.author ?? null,
      c.rack_id ?? null,
      g.version ?? null,
      g.status ?? null,
      g.borrower !== undefined,
      g.borrower ?? null,
    ],
  );
  return rows[0];
}

/** Deletes an available book (a lent book must come back first); history goes with it. */
export async function deleteBook(db: Queryable, id: string, version?: number): Promise<BookRow | undefined> {
  const { rows } = await db.query<BookRow>(
    `DELETE FROM books WHERE id = $1 AND ($2::int IS NULL OR version = $2) AND status = 'available'
     RETURNING ${COLUMNS}`,
    [id, version ?? null],
  );
  return rows[0];
}

export interface StatusChange {
  book: BookRow;
  historyId: number;
  at: Date;
  /** Borrower recorded in history: the new one on checkout, the returning one on return. */
  borrower: string | null;
}

/**
 * Checkout (to 'checked-out') or return (to 'available'). Undefined when the book is missing or
 * already has that status. `cur` locks the row first so a return records the borrower who held it
 * at that moment, not a snapshot older than a concurrent checkout.
 */
export async function changeStatus(
  db: Queryable,
  id: string,
  to: BookStatus,
  borrower: string | null,
): Promise<StatusChange | undefined> {
  const { rows } = await db.query<
    BookRow & { history_id: number; at: Date; history_borrower: string | null }
  >({
    name: 'books_change_status',
    text: `WITH cur AS (
       SELECT id, borrower FROM books WHERE id = $1 FOR UPDATE
     ), b AS (
       UPDATE books SET status = $2, borrower = $3, version = books.version + 1, updated_at = now()
       FROM cur WHERE books.id = cur.id AND books.status <> $2
       RETURNING books.id, books.seq, books.type, books.tags, books.name, books.author, books.status,
         books.borrower, books.rack_id, books.version, books.created_at, books.updated_at,
         cur.borrower AS previous_borrower
     ), h AS (
       INSERT INTO book_history (book_id, action, borrower, version)
       SELECT id, CASE WHEN status = 'checked-out' THEN 'checkout' ELSE 'return' END,
              CASE WHEN status = 'checked-out' THEN borrower ELSE previous_borrower END, version
       FROM b
       RETURNING id, borrower, at
     )
     SELECT b.*, h.id AS history_id, h.at, h.borrower AS history_borrower FROM b, h`,
    values: [id, to, to === 'checked-out' ? borrower : null],
  });
  const r = rows[0];
  return r && { book: r, historyId: r.history_id, at: r.at, borrower: r.history_borrower };
}

interface HistoryRow {
  id: number;
  book_id: string;
  action: 'checkout' | 'return';
  borrower: string | null;
  version: number;
  at: Date;
}

export function toHistoryEntry(r: HistoryRow): HistoryEntry {
  return {
    id: r.id,
    bookId: r.book_id,
    action: r.action,
    borrower: r.borrower,
    version: r.version,
    at: r.at.toISOString(),
  };
}

export async function selectHistory(
  db: Queryable,
  bookId: string,
  afterId: number | undefined,
  limit: number,
): Promise<HistoryRow[]> {
  const { rows } = await db.query<HistoryRow>(
    `SELECT id, book_id, action, borrower, version, at FROM book_history
     WHERE book_id = $1 AND ($2::bigint IS NULL OR id > $2) ORDER BY id LIMIT $3`,
    [bookId, afterId ?? null, limit],
  );
  return rows;
}

export async function selectRacks(db: Queryable): Promise<Rack[]> {
  const { rows } = await db.query<Rack>(
    `SELECT rack_id, count(*)::int AS books,
            count(*) FILTER (WHERE status = 'available')::int AS available,
            count(*) FILTER (WHERE status = 'checked-out')::int AS "checkedOut"
     FROM books GROUP BY rack_id ORDER BY rack_id`,
  );
  return rows;
}

export async function countBooks(db: Queryable): Promise<number> {
  const { rows } = await db.query<{ n: number }>('SELECT count(*)::int AS n FROM books');
  return rows[0]!.n;
}
