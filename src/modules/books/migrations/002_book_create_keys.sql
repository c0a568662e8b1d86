-- Idempotency-Key on POST /books: a create retried after a 503 (the worker may have finished it
-- after the caller's deadline) or a lost response makes the book once. Each key remembers what it
-- was sent with (a hash of the book asked for) and the book it made, for 24 hours
-- (books:forget-create-keys). No foreign key: a key whose book was deleted still answers, with a 409,
-- rather than making the book again.
CREATE TABLE book_create_keys (
  key text PRIMARY KEY,
  request_hash bytea NOT NULL,
  book_id uuid NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX book_create_keys_created_idx ON book_create_keys (created_at);
