// Who is calling: API keys (Bearer or X-API-Key) with scopes, dashboard sessions (scrypt passwords,
// a jose-signed JWT cookie), and Standard Webhooks signatures for incoming webhooks.
import { createHash, createHmac, randomBytes, scrypt as scryptCb, timingSafeEqual } from 'node:crypto';
import { promisify } from 'node:util';
import type { FastifyRequest } from 'fastify';
import { jwtVerify, SignJWT } from 'jose';
import { Webhook, WebhookVerificationError } from 'standardwebhooks';
import { Coalescer } from './coalescer.ts';
import type { DatabaseStatus, Pool } from './db.ts';
import { badRequest, conflict, HttpError, unauthorized } from './errors.ts';
import type { KitMetrics } from './metrics.ts';

const scrypt = promisify(scryptCb) as (
  pw: string,
  salt: Buffer,
  len: number,
  opts: object,
) => Promise<Buffer>;

/** `admin` implies every scope; module scopes are the module names. */
export const SCOPES = ['admin', 'codes', 'events', 'books', 'sender'] as const;
export type Scope = (typeof SCOPES)[number];

/**
 * Who is calling. `id` is the credential (an API key or a user); `accountId` is who owns the data:
 * modules key their rows by the account, so every key and user of one account sees the same data.
 */
export interface Principal {
  kind: 'api_key' | 'session';
  id: string;
  name: string;
  scopes: string[];
  accountId: string;
}

/**
 * Who lacks a scope, in the caller's terms: a key by its scopes, a signed-in user by their role
 * (told about "this API key", a dashboard user went looking for a key they never used).
 */
export function lacksScope(principal: Principal, scope: string): string {
  return principal.kind === 'session'
    ? `your sign-in lacks the "${scope}" scope: ask an admin for an account with role admin`
    : `this API key lacks the "${scope}" scope`;
}

/** The account credentials join unless told otherwise (and every credential made before accounts). */
export const DEFAULT_ACCOUNT = 'default';
const ACCOUNT_PATTERN = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$/;

export function validateAccount(account: string): string {
  if (!ACCOUNT_PATTERN.test(account))
    throw badRequest(
      `account must be 1-100 characters of A-Z a-z 0-9 _ . - starting with a letter or digit; got "${account}"`,
    );
  return account;
}

export const hasScope = (p: Principal, scope: string) =>
  p.scopes.includes('admin') || p.scopes.includes(scope);

const sha256 = (s: string) => createHash('sha256').update(s).digest();

export function newApiKey(): string {
  return `tsk_${randomBytes(24).toString('base64url')}`;
}

export function validateScopes(scopes: string[]): string[] {
  const unknown = scopes.filter((s) => !(SCOPES as readonly string[]).includes(s));
  if (unknown.length || scopes.length === 0) {
    throw badRequest(
      `scopes must be one or more of ${SCOPES.join(', ')}; got ${scopes.join(',') || '(none)'}`,
    );
  }
  return [...new Set(scopes)];
}

export async function createApiKey(
  pool: Pool,
  name: string,
  scopes: string[],
  opts: { key?: string; accountId?: string } = {},
) {
  const valid = validateScopes(scopes);
  const accountId = validateAccount(opts.accountId ?? DEFAULT_ACCOUNT);
  const key = opts.key ?? newApiKey();
  const { rows } = await pool.query<{ id: string }>(
    `INSERT INTO api_keys (name, key_hash, prefix, scopes, account_id) VALUES ($1, $2, $3, $4, $5)
     ON CONFLICT (key_hash) DO NOTHING RETURNING id`,
    [name, sha256(key), key.slice(0, 8), valid, accountId],
  );
  if (!rows[0]) throw conflict('that API key already exists');
  return { id: rows[0].id, key, name, scopes: valid, accountId };
}

export async function listApiKeys(pool: Pool) {
  const { rows } = await pool.query(
    `SELECT id, name, prefix, scopes, account_id AS "accountId", created_at AS "createdAt",
       last_used_at AS "lastUsedAt", revoked_at AS "revokedAt"
     FROM api_keys ORDER BY created_at DESC`,
  );
  return rows;
}

export async function revokeApiKey(pool: Pool, id: string): Promise<boolean> {
  const { rowCount } = await pool.query(
    'UPDATE api_keys SET revoked_at = now() WHERE id = $1::uuid AND revoked_at IS NULL',
    [id],
  );
  return (rowCount ?? 0) > 0;
}

/**
 * Looks keys up by hash with a short in-memory cache, so an authenticated request costs no extra
 * database round trip. A revoked key stops working within CACHE_MS on every process.
 */
export class ApiKeyVerifier {
  static readonly CACHE_MS = 5000;
  /**
   * The lookup promise is cached, not its result, so when an entry expires under load the many
   * requests carrying that key share one query instead of all updating the same row at once.
   */
  private readonly cache = new Map<string, { principal: Promise<Principal | null>; until: number }>();
  constructor(
    private readonly pool: Pool,
    /**
     * While PostgreSQL is known down, a key not in the cache is a 503 at once: an unreachable
     * host (no refusal, no answer) otherwise held every request for the pool's connect timeout.
     */
    private readonly dbStatus?: Pick<DatabaseStatus, 'check'>,
  ) {}

  /** Not async: a cache hit (nearly every request) answers the cached promise with no extra hop. */
  verify(key: string): Promise<Principal | null> {
    const now = Date.now();
    const hit = this.cache.get(key);
    if (hit && hit.until > now) return hit.principal;
    try {
      this.dbStatus?.check();
    } catch (err) {
      return Promise.reject(err);
    }
    if (this.cache.size > 10_000) this.cache.clear();
    const principal = this.lookup(key);
    this.cache.set(key, { principal, until: now + ApiKeyVerifier.CACHE_MS });
    // A failed lookup (database down) must not be remembered as "no such key".
    principal.catch(() => this.cache.delete(key));
    return principal;
  }

  private async lookup(key: string): Promise<Principal | null> {
    const { rows } = await this.pool.query<{
      id: string;
      name: string;
      scopes: string[];
      account_id: string;
    }>(
      `UPDATE api_keys SET last_used_at = now() WHERE key_hash = $1 AND revoked_at IS NULL
       RETURNING id, name, scopes, account_id`,
      [sha256(key)],
    );
    const row = rows[0];
    return row
      ? { kind: 'api_key', id: row.id, name: row.name, scopes: row.scopes, accountId: row.account_id }
      : null;
  }
}

// --- users and sessions -------------------------------------------------------------------

const SCRYPT = { N: 16384, r: 8, p: 1 };

export async function hashPassword(password: string): Promise<string> {
  const salt = randomBytes(16);
  const hash = await scrypt(password, salt, 32, SCRYPT);
  return `scrypt$${SCRYPT.N}$${SCRYPT.r}$${SCRYPT.p}$${salt.toString('base64')}$${hash.toString('base64')}`;
}

export async function verifyPassword(password: string, stored: string): Promise<boolean> {
  const [kind, N, r, p, salt, hash] = stored.split('$');
  if (kind !== 'scrypt' || !salt || !hash) return false;
  const expected = Buffer.from(hash, 'base64');
  const actual = await scrypt(password, Buffer.from(salt, 'base64'), expected.length, {
    N: Number(N),
    r: Number(r),
    p: Number(p),
  });
  return timingSafeEqual(actual, expected);
}

export async function createUser(
  pool: Pool,
  email: string,
  password: string,
  role: 'admin' | 'user',
  accountId = DEFAULT_ACCOUNT,
) {
  if (!/^[^@\s]+@[^@\s]+$/.test(email)) throw badRequest('email must look like name@example.com');
  if (password.length < 6) throw badRequest('password must be at least 6 characters');
  validateAccount(accountId);
  const { rows } = await pool.query<{ id: string }>(
    `INSERT INTO users (email, password_hash, role, account_id) VALUES (lower($1), $2, $3, $4)
     ON CONFLICT (email) DO NOTHING RETURNING id`,
    [email, await hashPassword(password), role, accountId],
  );
  if (!rows[0]) throw conflict(`a user with e-mail ${email} already exists`);
  return { id: rows[0].id, email: email.toLowerCase(), role, accountId };
}

export interface SessionUser {
  id: string;
  email: string;
  role: string;
  accountId: string;
}

let unknownUser: Promise<string> | undefined;
/** A hash no password matches, made once, checked against for e-mails with no user. */
const unknownUserHash = () => {
  unknownUser ??= hashPassword(randomBytes(32).toString('base64'));
  return unknownUser;
};

export async function checkLogin(pool: Pool, email: string, password: string): Promise<SessionUser> {
  const { rows } = await pool.query<{
    id: string;
    email: string;
    role: string;
    account_id: string;
    password_hash: string;
  }>('SELECT id, email, role, account_id, password_hash FROM users WHERE email = lower($1)', [email]);
  const user = rows[0];
  // An unknown e-mail costs the same scrypt as a known one: answering it faster told which e-mails
  // have accounts.
  const right = await verifyPassword(password, user?.password_hash ?? (await unknownUserHash()));
  if (!user || !right) throw unauthorized('wrong e-mail or password');
  return { id: user.id, email: user.email, role: user.role, accountId: user.account_id };
}

export const SESSION_COOKIE = 'tessera_session';

export class Sessions {
  private readonly key: Uint8Array;
  constructor(
    secret: string,
    private readonly ttlHours: number,
  ) {
    this.key = new TextEncoder().encode(secret);
  }

  async issue(user: SessionUser): Promise<string> {
    return new SignJWT({ email: user.email, role: user.role, acct: user.accountId })
      .setProtectedHeader({ alg: 'HS256' })
      .setSubject(user.id)
      .setIssuedAt()
      .setExpirationTime(`${this.ttlHours}h`)
      .sign(this.key);
  }

  async verify(token: string): Promise<Principal | null> {
    try {
      const { payload } = await jwtVerify(token, this.key, { algorithms: ['HS256'] });
      const role = payload.role === 'admin' ? 'admin' : 'user';
      // Signed-in people use every module; only admins get admin routes.
      const scopes = role === 'admin' ? ['admin'] : SCOPES.filter((s) => s !== 'admin');
      // The account is signed into the session; sessions issued before accounts existed belong
      // to the default account, as every user did then.
      const accountId = typeof payload.acct === 'string' ? payload.acct : DEFAULT_ACCOUNT;
      return { kind: 'session', id: String(payload.sub), name: String(payload.email), scopes, accountId };
    } catch {
      return null;
    }
  }
}

// --- Standard Webhooks ---------------------------------------------------------------------

export const WEBHOOK_TOLERANCE_SECONDS = 5 * 60;
export const WEBHOOK_ID_MAX_BYTES = 256;

/**
 * The standardwebhooks verifier (header parsing, the 5-minute window, a constant-time comparison
 * of every v1 signature) with node:crypto's HMAC-SHA256 in place of the package's pure-JS one:
 * 13 -> 4 µs a verification, about a tenth of the server CPU of a signed POST /api/generate.
 * The signature is the package's: base64 HMAC of `<id>.<unix seconds>.<body>`, prefixed `v1,`.
 */
export class NativeHmacWebhook extends Webhook {
  private readonly hmacKey: Buffer;

  constructor(secret: string) {
    super(secret); // the package validates the secret
    this.hmacKey = Buffer.from(secret.startsWith('whsec_') ? secret.slice(6) : secret, 'base64');
  }

  override sign(msgId: string, timestamp: Date, payload: string | Buffer): string {
    const seconds = Math.floor(timestamp.getTime() / 1000);
    const mac = createHmac('sha256', this.hmacKey).update(`${msgId}.${seconds}.${payload.toString()}`);
    return `v1,${mac.digest('base64')}`;
  }
}

/** Failed deliveries whose ids wait for PostgreSQL to be forgotten; past this, they stay recorded. */
const MAX_PENDING_FORGETS = 10_000;

/** Verifies signature and timestamp (the package enforces the 5-minute window), then rejects replays. */
export class WebhookVerifier {
  private readonly webhook: NativeHmacWebhook;
  /** Concurrent deliveries record their ids in one INSERT (one commit), not one each. */
  private readonly firstSeen: Coalescer<string, boolean>;
  private readonly toForget = new Set<string>();
  private forgetting = false;
  private forgetRetry?: NodeJS.Timeout;
  constructor(
    secret: string,
    private readonly pool: Pool,
    private readonly metrics: Pick<KitMetrics, 'authFailures'>,
  ) {
    this.webhook = new NativeHmacWebhook(secret);
    this.firstSeen = new Coalescer((_key, ids) => recordWebhookIds(this.pool, ids), {
      maxBatch: 500,
      maxInflight: 1,
    });
  }

  async verify(rawBody: string, headers: Record<string, string | string[] | undefined>): Promise<void> {
    const h = {
      'webhook-id': String(headers['webhook-id'] ?? ''),
      'webhook-timestamp': String(headers['webhook-timestamp'] ?? ''),
      'webhook-signature': String(headers['webhook-signature'] ?? ''),
    };
    if (!h['webhook-id'] || !h['webhook-timestamp'] || !h['webhook-signature']) {
      throw unauthorized(
        'missing webhook-id, webhook-timestamp or webhook-signature header (Standard Webhooks)',
      );
    }
    // Ids are remembered in a btree, whose rows stop at ~2.7 KB: a longer id failed the shared
    // INSERT of every delivery in flight with it (a 500 for each). Real ids are ~30 characters.
    if (Buffer.byteLength(h['webhook-id']) > WEBHOOK_ID_MAX_BYTES)
      throw badRequest(
        `webhook-id must be at most ${WEBHOOK_ID_MAX_BYTES} bytes, such as msg_2KWPBgLlAfxdpx2AI54pPJ85f4W`,
      );
    try {
      this.webhook.verify(rawBody, h, { jsonParse: false });
    } catch (err) {
      const why = err instanceof WebhookVerificationError ? err.message : 'invalid signature';
      throw unauthorized(`webhook signature rejected: ${why}`);
    }
    if (!(await this.firstSeen.submit('webhook_seen', h['webhook-id'])))
      throw unauthorized(`webhook-id ${h['webhook-id']} was already used: replays are rejected`);
  }

  /**
   * verify() for a route's request: the id is kept on the request, so that a delivery answered
   * with an error forgets it again (the kit's onResponse hook calls forgetFailed). A rejected
   * signature (a 401: missing, wrong, stale or replayed) counts as an auth failure of kind
   * `webhook` here, once, for every signed route.
   */
  async verifyRequest(req: FastifyRequest): Promise<void> {
    try {
      await this.verify(req.rawBody ?? '', req.headers);
    } catch (err) {
      // The access log shows only a 401; the sender's operator needs the reason (never the secret).
      req.log.info({ reqId: req.id, reason: (err as Error).message }, 'WEBHOOK_REJECTED');
      if (err instanceof HttpError && err.statusCode === 401)
        this.metrics.authFailures.inc({ kind: 'webhook' });
      throw err;
    }
    req.webhookId = String(req.headers['webhook-id']);
  }

  /**
   * A delivery that was verified and then failed (a 503 while PostgreSQL was away, a 422) did
   * nothing, but its id stayed recorded, so the sender's retry, which carries the same id, was
   * refused as a replay and the delivery was lost. Its id is deleted, and if PostgreSQL is down
   * the deletion is tried again until it answers. Only the delivery that recorded the id forgets
   * it; a replay's 401 never does.
   */
  forgetFailed(id: string): void {
    if (this.toForget.size >= MAX_PENDING_FORGETS) return;
    this.toForget.add(id);
    if (!this.forgetRetry) void this.flushForgotten(1000); // else the pending retry takes it along
  }

  private async flushForgotten(retryMs: number): Promise<void> {
    if (this.forgetting || this.toForget.size === 0) return;
    this.forgetting = true;
    const ids = [...this.toForget];
    let done = false;
    try {
      await this.pool.query('DELETE FROM webhook_seen WHERE id = ANY($1::text[])', [ids]);
      for (const id of ids) this.toForget.delete(id);
      done = true;
    } catch {
      this.forgetRetry = setTimeout(() => {
        this.forgetRetry = undefined;
        void this.flushForgotten(Math.min(retryMs * 2, 30_000));
      }, retryMs).unref();
    } finally {
      this.forgetting = false;
    }
    if (done && this.toForget.size > 0) void this.flushForgotten(1000); // added while deleting
  }

  /** Ids older than the tolerance can no longer verify, so they need not be remembered. */
  static async forgetOld(pool: Pool): Promise<void> {
    await pool.query(
      `DELETE FROM webhook_seen WHERE seen_at < now() - interval '${WEBHOOK_TOLERANCE_SECONDS * 2} seconds'`,
    );
  }

  sign(id: string, body: string, at = new Date()) {
    return {
      'webhook-id': id,
      'webhook-timestamp': String(Math.floor(at.getTime() / 1000)),
      'webhook-signature': this.webhook.sign(id, at, body),
    };
  }
}

/** Records webhook ids; true for each id seen here for the first time (the first of repeats). */
async function recordWebhookIds(pool: Pool, ids: string[]): Promise<boolean[]> {
  const { rows } = await pool.query<{ id: string }>({
    name: 'kit_webhook_seen',
    text: 'INSERT INTO webhook_seen (id) SELECT unnest($1::text[]) ON CONFLICT DO NOTHING RETURNING id',
    values: [ids],
  });
  const fresh = new Set(rows.map((r) => r.id));
  return ids.map((id) => fresh.delete(id));
}
