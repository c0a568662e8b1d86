-- Sign-in attempts per e-mail and client address inside the current window that no right password
-- has followed: past the limit, that pair is refused (429) until the window ends, so a password
-- cannot be guessed at request speed.
CREATE TABLE login_attempts (
  email text NOT NULL,
  ip text NOT NULL,
  attempts int NOT NULL,
  since timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (email, ip)
);
CREATE INDEX login_attempts_since ON login_attempts (since);
