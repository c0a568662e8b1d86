// Send configs: named channel settings stored once and referenced by batches. The secret is
// write-only: it is read by the worker (loadChannelSpec) and by nothing that answers the API.
import { Webhook } from 'standardwebhooks';
import type { Pool, Queryable } from '../../kit/db.ts';
import { badRequest, conflict, notFound } from '../../kit/errors.ts';
import type { ChannelName, ChannelSpec } from './channels.ts';
import type { SendConfigBody } from './schemas.ts';

const PUBLIC_COLUMNS = `id, name, channel, settings, rate_per_second AS "ratePerSecond",
  secret IS NOT NULL AS "hasSecret", created_at AS "createdAt"`;

const num = (v: unknown) => typeof v === 'number' && Number.isFinite(v);

/** Checks the settings a channel needs, with a message that says what to fix. */
export function validateSettings(body: SendConfigBody): Record<string, unknown> {
  const s = body.settings ?? {};
  const allowed: Record<ChannelName, string[]> = {
    email: ['host', 'port', 'secure', 'user', 'from', 'ignoreTLS', 'maxConnections'],
    webhook: ['url'],
    mock: ['latencyMs', 'failureRate', 'transientFailureRate'],
  };
  const unknown = Object.keys(s).filter((k) => !allowed[body.channel].includes(k));
  if (unknown.length)
    throw badRequest(
      `settings.${unknown[0]} is not a ${body.channel} setting; allowed: ${allowed[body.channel].join(', ')}`,
    );
  if (body.channel === 'email') {
    if (typeof s.host !== 'string' || !s.host) throw badRequest('settings.host: the SMTP host is required');
    if (!num(s.port) || (s.port as number) < 1 || (s.port as number) > 65535)
      throw badRequest('settings.port: an SMTP port from 1 to 65535 is required');
    if (typeof s.from !== 'string' || !/@/.test(s.from))
      throw badRequest('settings.from: the sender address is required, e.g. "Shop <news@example.com>"');
    if (s.maxConnections !== undefined && (!num(s.maxConnections) || (s.maxConnections as number) < 1))
      throw badRequest('settings.maxConnections must be a positive number');
  }
  if (body.channel === 'webhook') {
    try {
      const u = new URL(String(s.url));
      if (u.protocol !== 'http:' && u.protocol !== 'https:') throw new Error('not http');
    } catch {
      throw badRequest('settings.url: an http(s) URL to POST messages to is required');
    }
    if (!body.secret)
      throw badRequest('secret: a webhook send config needs a Standard Webhooks signing secret (whsec_…)');
    if (!/^whsec_[A-Za-z0-9+/]{16,}={0,2}$/.test(body.secret))
      throw badRequest(
        'secret: must be a Standard Webhooks secret, whsec_ followed by base64 (16+ characters)',
      );
    new Webhook(body.secret);
  }
  if (body.channel === 'mock') {
    for (const k of ['failureRate', 'transientFailureRate']) {
      if (s[k] !== undefined && (!num(s[k]) || (s[k] as number) < 0 || (s[k] as number) > 1))
        throw badRequest(`settings.${k} must be a number from 0 to 1`);
    }
    if (s.latencyMs !== undefined && (!num(s.latencyMs) || (s.latencyMs as number) < 0))
      throw badRequest('settings.latencyMs must be a number of milliseconds ≥ 0');
  }
  return s;
}

export async function createSendConfig(pool: Pool, accountId: string, body: SendConfigBody) {
  const settings = validateSettings(body);
  const { rows } = await pool.query(
    `INSERT INTO sender_send_configs (account_id, name, channel, settings, secret, rate_per_second)
     VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (account_id, name) DO NOTHING RETURNING ${PUBLIC_COLUMNS}`,
    [accountId, body.name, body.channel, settings, body.secret ?? null, body.ratePerSecond ?? null],
  );
  if (!rows[0]) throw conflict(`a send config named "${body.name}" already exists`);
  return rows[0];
}

export async function listSendConfigs(pool: Pool, accountId: string) {
  const { rows } = await pool.query(
    `SELECT ${PUBLIC_COLUMNS} FROM sender_send_configs WHERE account_id = $1 ORDER BY created_at`,
    [accountId],
  );
  return rows;
}

export async function getSendConfig(db: Queryable, accountId: string, id: string) {
  const { rows } = await db.query(
    `SELECT ${PUBLIC_COLUMNS} FROM sender_send_configs WHERE account_id = $1 AND id = $2`,
    [accountId, id],
  );
  if (!rows[0]) throw notFound(`send config ${id} not found`);
  return rows[0] as { id: string; channel: ChannelName; ratePerSecond: number | null };
}

const FOREIGN_KEY_VIOLATION = '23503';

export async function deleteSendConfig(pool: Pool, accountId: string, id: string) {
  // One statement; a batch made while it runs (not yet committed when it counted) is caught by the
  // foreign key, whose refusal is a 409 too (it was a 500).
  const { rows } = await pool
    .query<{ deleted: boolean; batches: number }>(
      `WITH used AS (SELECT count(*)::int AS n FROM sender_batches WHERE send_config_id = $2),
          gone AS (DELETE FROM sender_send_configs WHERE account_id = $1 AND id = $2
                     AND (SELECT n FROM used) = 0 RETURNING id)
     SELECT EXISTS (SELECT 1 FROM gone) AS deleted, (SELECT n FROM used) AS batches
     FROM sender_send_configs WHERE account_id = $1 AND id = $2`,
      [accountId, id],
    )
    .catch((err) => {
      if ((err as { code?: string }).code === FOREIGN_KEY_VIOLATION)
        throw conflict(`send config ${id} is used by a batch made just now; it cannot be deleted`);
      throw err;
    });
  // Another account's config is as unknown as a missing one: no 409 telling it is in use. Nor is one
  // a concurrent delete removed after this statement's snapshot saw it (deleted false, 0 batches).
  if (!rows[0] || (!rows[0].deleted && rows[0].batches === 0)) throw notFound(`send config ${id} not found`);
  if (!rows[0].deleted)
    throw conflict(`send config ${id} is used by ${rows[0].batches} batches; it cannot be deleted`);
}

/** Worker side: the full spec, secret included, for building the channel. */
export async function loadChannelSpec(db: Queryable, id: string): Promise<ChannelSpec> {
  const { rows } = await db.query('SELECT channel, settings, secret FROM sender_send_configs WHERE id = $1', [
    id,
  ]);
  if (!rows[0]) throw notFound(`send config ${id} no longer exists`);
  return rows[0] as ChannelSpec;
}
