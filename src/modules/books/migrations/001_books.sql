-- Books (seed 002): one table replaces the seed's per-rack stores; a rack is the rack_id its books
-- carry, so GET /racks is a GROUP BY and a rack exists while it holds a book.
-- pg_trgm is a trusted extension (PostgreSQL 13+): a database owner may create it without superuser.
CREATE EXTENSION IF NOT EXISTS pg_trgm;

CREATE TABLE books (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  -- Insertion order for cursor pagination: ids are random, timestamps can tie.
  seq bigint GENERATED ALWAYS AS IDENTITY UNIQUE,
  type text NOT NULL DEFAULT 'book' CHECK (type = 'book'),
  tags text[] NOT NULL DEFAULT '{}',
  name text NOT NULL,
  author text NOT NULL,
  status text NOT NULL DEFAULT 'available' CHECK (status IN ('available', 'checked-out')),
  -- Invariant: a borrower only while checked out.
  borrower text CHECK (borrower IS NULL OR status = 'checked-out'),
  rack_id text NOT NULL,
  -- Optimistic concurrency: every write bumps it; PUT/DELETE with If-Match or version compare it.
  version int NOT NULL DEFAULT 1,
  created_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now()
);

-- Each filter of GET /books has an index that also serves the seq order of the page.
CREATE INDEX books_rack_seq_idx ON books (rack_id, seq);
CREATE INDEX books_status_seq_idx ON books (status, seq);
CREATE INDEX books_author_idx ON books (lower(author), seq);
CREATE INDEX books_tags_idx ON books USING gin (tags);
-- q: substring search on name and author (ILIKE '%…%'), served by trigrams on this exact expression.
CREATE INDEX books_search_trgm_idx ON books USING gin ((name || ' ' || author) gin_trgm_ops);

-- Every checkout and return, written in the same statement as the status change.
CREATE TABLE book_history (
  id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  book_id uuid NOT NULL REFERENCES books (id) ON DELETE CASCADE,
  action text NOT NULL CHECK (action IN ('checkout', 'return')),
  borrower text,
  -- The book's version after this change.
  version int NOT NULL,
  at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX book_history_book_idx ON book_history (book_id, id);
