// Sign-in throttling. Sign-ins for one e-mail with no right password yet are counted per client
// address (at most LOGIN_MAX_PER_ADDRESS in LOGIN_WINDOW_MINUTES) and over all addresses (at most
// LOGIN_MAX_PER_EMAIL, since an address can be forged in X-Forwarded-For or rotated); past either,
// the sign-in is a 429 until the window ends, without checking the password, so a guess past the
// limit learns nothing. Counted in PostgreSQL, so every api process shares the count, and before
// the password is checked, so a burst of parallel guesses cannot all slip under the limit.
import type { Pool } from './db.ts';
import { HttpError } from './errors.ts';

export const LOGIN_MAX_PER_ADDRESS = 10;
export const LOGIN_MAX_PER_EMAIL = 100;
export const LOGIN_WINDOW_MINUTES = 15;
const WINDOW = `interval '${LOGIN_WINDOW_MINUTES} minutes'`;
/** The `ip` of the row that counts an e-mail's attempts from every address. */
const ANY_ADDRESS = '*';

export class TooManyLogins extends HttpError {
  constructor(
    readonly retryAfterSeconds: number,
    fromAnywhere: boolean,
  ) {
    const minutes = Math.ceil(retryAfterSeconds / 60);
    const count = fromAnywhere
      ? `${LOGIN_MAX_PER_EMAIL} failed sign-ins for this e-mail`
      : `${LOGIN_MAX_PER_ADDRESS} failed sign-ins for this e-mail from your address`;
    super(
      429,
      `${count} in ${LOGIN_WINDOW_MINUTES} minutes: try again in ${minutes} minute${minutes === 1 ? '' : 's'}, or ask an admin to lift it (tessera users unlock)`,
    );
  }
}

/**
 * Counts one attempt: first for the address, then, only if the address is within its limit, for the
 * e-mail from anywhere. So an address already refused adds nothing to the e-mail's count, and one
 * address cannot use up the e-mail's limit for every other (it did: 101 guesses from one address
 * locked the e-mail out everywhere, though only 10 passwords were checked).
 */
export async function countLoginAttempt(pool: Pool, email: string, ip: string): Promise<void> {
  await countFor(pool, email, ip, LOGIN_MAX_PER_ADDRESS, false);
  await countFor(pool, email, ANY_ADDRESS, LOGIN_MAX_PER_EMAIL, true);
}

/** One more attempt on the (e-mail, ip) row (a row whose window has ended starts again); TooManyLogins past `max`. */
async function countFor(pool: Pool, email: string, ip: string, max: number, anywhere: boolean) {
  const { rows } = await pool.query<{ attempts: number; wait: number }>(
    `INSERT INTO login_attempts AS a (email, ip, attempts) VALUES (lower($1), $2, 1)
     ON CONFLICT (email, ip) DO UPDATE SET
       attempts = CASE WHEN a.since > now() - ${WINDOW} THEN a.attempts + 1 ELSE 1 END,
       since = CASE WHEN a.since > now() - ${WINDOW} THEN a.since ELSE now() END
     RETURNING attempts, ceil(extract(epoch FROM since + ${WINDOW} - now()))::int AS wait`,
    [email, ip],
  );
  const { attempts, wait } = rows[0]!;
  if (attempts > max) throw new TooManyLogins(Math.max(1, wait), anywhere);
}

/** `tessera users unlock`: lifts the e-mail's refusal from every address; the number of counts removed. */
export async function unlockLogin(pool: Pool, email: string): Promise<number> {
  const { rowCount } = await pool.query('DELETE FROM login_attempts WHERE email = lower($1)', [email]);
  return rowCount ?? 0;
}

/** A right password clears the e-mail's counts. */
export async function clearLoginAttempts(pool: Pool, email: string, ip: string): Promise<void> {
  await pool.query('DELETE FROM login_attempts WHERE email = lower($1) AND ip IN ($2, $3)', [
    email,
    ip,
    ANY_ADDRESS,
  ]);
}

/** Counts whose window has ended stop nothing; the kit's cron deletes them. */
export async function forgetOldLoginAttempts(pool: Pool): Promise<void> {
  await pool.query(`DELETE FROM login_attempts WHERE since < now() - ${WINDOW}`);
}
