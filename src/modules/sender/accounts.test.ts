// Sender data belongs to the account, not to the credential: a batch made with an API key shows on
// the dashboard of a user of the same account and nowhere else, a suppression outlives the key that
// added it, the per-API-key rate limit stays per key, and rows from before accounts move to the
// credential's account when the migration runs.
import assert from 'node:assert/strict';
import { cpSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import pg from 'pg';
import { withDatabase } from '../../../test/db-urls.ts';
import {
  startPlatform,
  type TestPlatform,
  testPool,
  waitFor,
  waitForLockWait,
} from '../../../test/helpers.ts';
import { createApiKey, createUser, revokeApiKey } from '../../kit/auth.ts';
import { KIT_MIGRATIONS } from '../../kit/kit.ts';
import { createRootLogger } from '../../kit/log.ts';
import { migrate } from '../../kit/migrate.ts';
import { senderModule } from './index.ts';

const template = { subject: 'Hi', text: 'Hello {{address}}' };

async function signIn(p: TestPlatform, email: string, password: string): Promise<string> {
  const res = await p.app.inject({ method: 'POST', url: '/api/auth/login', payload: { email, password } });
  assert.equal(res.statusCode, 200, res.body);
  return String(res.headers['set-cookie']).split(';')[0]!;
}

const as =
  (p: TestPlatform, headers: Record<string, string>) =>
  (method: 'GET' | 'POST' | 'DELETE', url: string, payload?: unknown) =>
    p.app.inject({ method, url, headers, payload: payload as object });

/** Waits for a batch to complete, read with the caller's own credentials (its account). */
const completed = (call: ReturnType<typeof as>, id: string) =>
  waitFor(
    async () => {
      const b = (await call('GET', `/api/batches/${id}`)).json();
      return b.state === 'completed' ? b : undefined;
    },
    { timeoutMs: 30000, what: `batch ${id} to complete` },
  );

describe('sender accounts', () => {
  it('when a batch is created with an API key, then a signed-in user of the same account lists it and a user of another account does not', async () => {
    const p = await startPlatform({ modules: [senderModule] });
    const { key } = await createApiKey(p.kit.pool, 'acme script', ['sender'], { accountId: 'acme' });
    await createUser(p.kit.pool, 'ann@acme.test', 'secret-1', 'user', 'acme');
    await createUser(p.kit.pool, 'olga@other.test', 'secret-2', 'user', 'other');
    const script = as(p, { authorization: `Bearer ${key}` });
    const ann = as(p, { cookie: await signIn(p, 'ann@acme.test', 'secret-1') });
    const olga = as(p, { cookie: await signIn(p, 'olga@other.test', 'secret-2') });

    const created = await script('POST', '/api/batches', {
      channel: 'mock',
      name: 'made by a key',
      template,
      recipients: [{ address: 'a@example.com' }],
    });
    assert.equal(created.statusCode, 201, created.body);
    const id = created.json().id;

    const annSees = (await ann('GET', '/api/batches')).json().batches.map((b: { id: string }) => b.id);
    assert.deepEqual(annSees, [id]);
    assert.equal((await ann('GET', `/api/batches/${id}`)).json().name, 'made by a key');
    assert.equal((await ann('GET', '/api/auth/me')).json().accountId, 'acme');

    assert.deepEqual((await olga('GET', '/api/batches')).json().batches, []);
    assert.equal((await olga('GET', `/api/batches/${id}`)).statusCode, 404);
    assert.equal((await olga('POST', `/api/batches/${id}/cancel`)).statusCode, 404);
    // The platform's own admin key lives in the default account: it does not see acme's batch either.
    assert.deepEqual((await as(p, p.auth)('GET', '/api/batches')).json().batches, []);
  });

  it('when a user of another account deletes a send config in use, then it is a 404 as for any unknown id, not a 409 telling it is used', async () => {
    const p = await startPlatform({ modules: [senderModule] });
    await createUser(p.kit.pool, 'ann@acme.test', 'secret-1', 'user', 'acme');
    await createUser(p.kit.pool, 'olga@other.test', 'secret-2', 'user', 'other');
    const ann = as(p, { cookie: await signIn(p, 'ann@acme.test', 'secret-1') });
    const olga = as(p, { cookie: await signIn(p, 'olga@other.test', 'secret-2') });
    const cfg = await ann('POST', '/api/send-configs', { name: 'm', channel: 'mock' });
    assert.equal(cfg.statusCode, 201, cfg.body);
    const used = cfg.json().id;
    const batch = await ann('POST', '/api/batches', {
      sendConfigId: used,
      template,
      recipients: [{ address: 'a@example.com' }],
    });
    assert.equal(batch.statusCode, 201, batch.body);
    const unused = (await ann('POST', '/api/send-configs', { name: 'spare', channel: 'mock' })).json().id;

    for (const id of [used, unused]) {
      const res = await olga('DELETE', `/api/send-configs/${id}`);
      assert.equal(res.statusCode, 404, res.body);
      assert.equal(res.json().message, `send config ${id} not found`);
    }
    const inUse = await ann('DELETE', `/api/send-configs/${used}`);
    assert.equal(inUse.statusCode, 409);
    assert.match(inUse.json().message, /is used by 1 batches; it cannot be deleted/);
    assert.equal((await ann('DELETE', `/api/send-configs/${unused}`)).statusCode, 204);
    assert.equal((await ann('GET', `/api/send-configs/${unused}`)).statusCode, 404);
    // Deleted by several requests at once: one 204, and the others 404 (not "used by 0 batches").
    const spare = (await ann('POST', '/api/send-configs', { name: 'twice', channel: 'mock' })).json().id;
    const deletes = await Promise.all(
      Array.from({ length: 10 }, () => ann('DELETE', `/api/send-configs/${spare}`)),
    );
    assert.deepEqual(
      deletes.map((r) => r.statusCode).sort(),
      [204, ...Array(9).fill(404)],
      deletes.map((r) => r.body).join(' | '),
    );
    await completed(ann, batch.json().id);

    // A batch being made with the config while it is deleted: the delete waits for it, then 409.
    const racing = (await ann('POST', '/api/send-configs', { name: 'racing', channel: 'mock' })).json().id;
    const maker = await p.kit.pool.connect();
    try {
      await maker.query('BEGIN');
      await maker.query(
        `INSERT INTO sender_batches (account_id, state, channel, template, send_config_id) VALUES ('acme', 'draft', 'mock', '{}', $1)`,
        [racing],
      );
      const deleting = ann('DELETE', `/api/send-configs/${racing}`);
      await waitForLockWait(
        p.kit.pool,
        'DELETE FROM sender_send_configs',
        'the delete to wait for the batch',
      );
      await maker.query('COMMIT');
      const res = await deleting;
      // Before: PostgreSQL's foreign-key error, a 500.
      assert.equal(res.statusCode, 409, res.body);
      assert.match(res.json().message, /is used by a batch made just now; it cannot be deleted/);
    } finally {
      maker.release();
    }
  });

  it('when a key is rotated, then the suppression list it built stays with the account', async () => {
    const p = await startPlatform({ modules: [senderModule] });
    const first = await createApiKey(p.kit.pool, 'old', ['sender'], { accountId: 'acme' });
    const add = await as(p, { authorization: `Bearer ${first.key}` })('POST', '/api/suppressions', {
      addresses: ['gone@example.com'],
    });
    assert.equal(add.statusCode, 201);
    assert.ok(await revokeApiKey(p.kit.pool, first.id));
    const second = await createApiKey(p.kit.pool, 'new', ['sender'], { accountId: 'acme' });
    const next = as(p, { authorization: `Bearer ${second.key}` });
    const list = (await next('GET', '/api/suppressions')).json().suppressions;
    assert.deepEqual(
      list.map((s: { address: string }) => s.address),
      ['gone@example.com'],
    );
    const b = await next('POST', '/api/batches', {
      channel: 'mock',
      template,
      recipients: [{ address: 'gone@example.com' }, { address: 'here@example.com' }],
    });
    const view = await completed(next, b.json().id);
    assert.deepEqual([view.progress.suppressed, view.progress.sent], [1, 1]);
  });

  it('when two keys of one account send with SENDER_API_KEY_RATE set, then each key has its own bucket', async () => {
    const p = await startPlatform({ modules: [senderModule], env: { SENDER_API_KEY_RATE: '100000' } });
    const keys = await Promise.all(
      ['k1', 'k2'].map((n) => createApiKey(p.kit.pool, n, ['sender'], { accountId: 'acme' })),
    );
    for (const k of keys) {
      const call = as(p, { authorization: `Bearer ${k.key}` });
      const res = await call('POST', '/api/batches', {
        channel: 'mock',
        template,
        recipients: [{ address: `${k.name}@example.com` }],
      });
      assert.equal(res.statusCode, 201, res.body);
      await completed(call, res.json().id);
    }
    const { rows } = await p.kit.pool.query<{ key: string }>(
      `SELECT key FROM sender_rate_buckets WHERE key LIKE 'api_key:%' ORDER BY key`,
    );
    assert.deepEqual(
      rows.map((r) => r.key),
      keys.map((k) => `api_key:${k.id}`).sort(),
    );
  });

  it('when the accounts migration runs over rows owned by credentials, then they move to the credential account without losing a duplicate', async () => {
    const admin = process.env.TESSERA_TEST_ADMIN_URL!;
    const name = `tessera_t_mig_${process.pid}_${Date.now()}`;
    const c = new pg.Client({ connectionString: admin });
    await c.connect();
    await c.query(`CREATE DATABASE ${name}`);
    await c.end();
    const url = withDatabase(admin, name);
    const pool = testPool(url, 2);
    after(async () => {
      await pool.end();
      const d = new pg.Client({ connectionString: admin });
      await d.connect();
      await d.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
      await d.end();
    });
    // The schema as it was before accounts: only the first migration of kit and sender.
    const dirs = mkdtempSync(path.join(tmpdir(), 'tessera-mig-'));
    after(() => rmSync(dirs, { recursive: true, force: true }));
    const firstOnly = (module: string, dir: string) => {
      const out = path.join(dirs, module);
      cpSync(dir, out, { recursive: true });
      for (const f of readdirSync(out)) if (!f.startsWith('001_')) rmSync(path.join(out, f));
      return { module, dir: out };
    };
    const log = createRootLogger({ level: 'silent', format: 'json', debug: '', role: 'test' });
    const senderDir = path.join(import.meta.dirname, 'migrations');
    await migrate(pool, [firstOnly('kit', KIT_MIGRATIONS), firstOnly('sender', senderDir)], log);

    const key = await pool.query<{ id: string }>(
      `INSERT INTO api_keys (name, key_hash, prefix, scopes) VALUES ('k', '\\x01', 'p', '{sender}') RETURNING id`,
    );
    const user = await pool.query<{ id: string }>(
      `INSERT INTO users (email, password_hash) VALUES ('u@example.com', 'x') RETURNING id`,
    );
    const [k, u] = [key.rows[0]!.id, user.rows[0]!.id];
    for (const [owner, at] of [
      [k, '2024-01-01'],
      [u, '2024-01-02'],
    ] as const) {
      await pool.query(
        `INSERT INTO sender_batches (account_id, idempotency_key, state, channel, template, created_at)
         VALUES ($1, 'same-key', 'completed', 'mock', '{}', $2)`,
        [owner, at],
      );
      await pool.query(
        `INSERT INTO sender_send_configs (account_id, name, channel, created_at) VALUES ($1, 'smtp', 'mock', $2)`,
        [owner, at],
      );
      await pool.query(
        `INSERT INTO sender_suppressions (account_id, address, reason) VALUES ($1, 'x@example.com', $2), ($1, $3, 'bounce')`,
        [owner, `reason-${owner}`, `only-${owner}@example.com`],
      );
    }

    await migrate(
      pool,
      [
        { module: 'kit', dir: KIT_MIGRATIONS },
        { module: 'sender', dir: senderDir },
      ],
      log,
    );

    const batches = await pool.query(
      'SELECT account_id, idempotency_key, created_by FROM sender_batches ORDER BY created_at',
    );
    assert.deepEqual(batches.rows, [
      { account_id: 'default', idempotency_key: 'same-key', created_by: k },
      { account_id: 'default', idempotency_key: `same-key#${u}`, created_by: u },
    ]);
    const configs = await pool.query('SELECT account_id, name FROM sender_send_configs ORDER BY created_at');
    assert.deepEqual(configs.rows, [
      { account_id: 'default', name: 'smtp' },
      { account_id: 'default', name: `smtp (${u})` },
    ]);
    const sup = await pool.query('SELECT account_id, address FROM sender_suppressions ORDER BY address');
    assert.deepEqual(
      sup.rows.map((r) => [r.account_id, r.address]),
      [`only-${k}@example.com`, `only-${u}@example.com`, 'x@example.com'].sort().map((a) => ['default', a]),
    );
  });
});
