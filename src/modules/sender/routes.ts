// HTTP surface of the sender (DESIGN.md §2): send configs, batches and their lifecycle, recipients
// (inline JSON or streamed CSV), live progress over server-sent events, suppressions, unsubscribe
// links and signed delivery events.

import type { ServerResponse } from 'node:http';
import type { Readable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import { type Static, Type } from '@sinclair/typebox';
import { Value } from '@sinclair/typebox/value';
import type { Principal } from '../../kit/auth.ts';
import { badRequest, HttpError, notFound } from '../../kit/errors.ts';
import type { App } from '../../kit/http.ts';
import type { ModuleContext } from '../../kit/module.ts';
import { type Batches, batchView, EMAIL } from './batches.ts';
import { createChannel, SendError } from './channels.ts';
import { recordDeliveryEvents } from './events.ts';
import {
  BatchBody,
  type DeliveryEvent,
  DeliveryEventsBody,
  IdParams,
  ListBatchesQuery,
  ListRecipientsQuery,
  Recipient,
  SendConfigBody,
  SuppressionBody,
  TestSendBody,
} from './schemas.ts';
import {
  createSendConfig,
  deleteSendConfig,
  getSendConfig,
  listSendConfigs,
  loadChannelSpec,
} from './send-configs.ts';
import { addSuppressions, listSuppressions, removeSuppression } from './suppressions.ts';
import { readUnsubscribeToken } from './unsubscribe.ts';

const TERMINAL = new Set(['completed', 'cancelled', 'failed']);
const AppendBody = Type.Object({ recipients: Type.Array(Recipient, { minItems: 1, maxItems: 10_000 }) });

export function senderRoutes(app: App, ctx: ModuleContext, batches: Batches) {
  const { pool } = ctx;
  // Data belongs to the account, so every key and signed-in user of one account sees the same
  // batches, send configs and suppression list (kit migration 002_accounts).
  const account = (req: { principal?: Principal }) => req.principal!.accountId;

  // CSV uploads arrive as a stream and are parsed row by row (never buffered whole).
  app.addContentTypeParser(['text/csv', 'application/csv'], (_req, payload, done) => done(null, payload));

  // --- send configs --------------------------------------------------------------------------
  app.post('/api/send-configs', { schema: { body: SendConfigBody } }, async (req, reply) => {
    reply.code(201);
    return createSendConfig(pool, account(req), req.body);
  });
  app.get('/api/send-configs', async (req) => ({ sendConfigs: await listSendConfigs(pool, account(req)) }));
  app.get('/api/send-configs/:id', { schema: { params: IdParams } }, (req) =>
    getSendConfig(pool, account(req), req.params.id),
  );
  app.delete('/api/send-configs/:id', { schema: { params: IdParams } }, async (req, reply) => {
    await deleteSendConfig(pool, account(req), req.params.id);
    reply.code(204);
  });
  app.post(
    '/api/send-configs/:id/test',
    { schema: { params: IdParams, body: TestSendBody } },
    async (req) => {
      await getSendConfig(pool, account(req), req.params.id);
      const spec = await loadChannelSpec(pool, req.params.id);
      // The caller's typo, not the provider's refusal (SMTP said "No recipients defined", a 502).
      if (spec.channel === 'email' && !EMAIL.test(req.body.to))
        throw badRequest(`to "${req.body.to}" is not an e-mail address`);
      const channel = createChannel(spec);
      const key = `test:${req.id}`;
      try {
        await channel.send({
          idempotencyKey: key,
          batchId: 'test',
          recipientId: 0,
          to: req.body.to,
          subject: req.body.subject,
          text: req.body.text,
          variables: {},
          unsubscribeUrl: `${ctx.config.senderPublicUrl}/api/unsubscribe/test`,
        });
      } catch (err) {
        const why = err instanceof SendError ? err.message : (err as Error).message;
        throw new HttpError(502, `the provider did not take the test message: ${why}`);
      } finally {
        await channel.close();
      }
      return { sent: true, to: req.body.to };
    },
  );

  // --- batches -------------------------------------------------------------------------------
  app.post(
    '/api/batches',
    {
      schema: { body: BatchBody, headers: Type.Object({ 'idempotency-key': Type.Optional(Type.String()) }) },
      bodyLimit: 32 * 1024 * 1024,
    },
    async (req, reply) => {
      const result = await batches.create(
        { accountId: account(req), credentialId: req.principal!.id },
        req.body,
        req.headers['idempotency-key'],
      );
      reply.code(result.status);
      return result.body;
    },
  );
  app.get('/api/batches', { schema: { querystring: ListBatchesQuery } }, (req) =>
    batches.list(account(req), req.query),
  );
  app.get('/api/batches/:id', { schema: { params: IdParams } }, async (req) =>
    batchView(await batches.get(pool, account(req), req.params.id)),
  );
  app.get(
    '/api/batches/:id/recipients',
    { schema: { params: IdParams, querystring: ListRecipientsQuery } },
    (req) => batches.recipients(account(req), req.params.id, req.query),
  );
  app.post(
    '/api/batches/:id/recipients',
    {
      schema: { params: IdParams },
      bodyLimit: 32 * 1024 * 1024,
      config: { accepts: ['application/json', 'text/csv'] },
    },
    async (req, reply) => {
      const type = String(req.headers['content-type'] ?? '');
      let result: { added: number; total: number };
      if (/csv/.test(type)) {
        result = await batches.uploadCsv(account(req), req.params.id, req.body as Readable);
      } else {
        if (!Value.Check(AppendBody, req.body)) {
          const first = [...Value.Errors(AppendBody, req.body)][0];
          throw badRequest(
            `body must be {recipients: [{address, variables?}]} (1 to 10,000) or a text/csv upload${first ? `: ${first.path || '/'} ${first.message}` : ''}`,
          );
        }
        result = await batches.appendInline(account(req), req.params.id, req.body.recipients);
      }
      reply.code(201);
      return result;
    },
  );
  app.post('/api/batches/:id/send', { schema: { params: IdParams } }, (req) =>
    batches.send(account(req), req.params.id),
  );
  app.post('/api/batches/:id/pause', { schema: { params: IdParams } }, (req) =>
    batches.pause(account(req), req.params.id),
  );
  app.post('/api/batches/:id/resume', { schema: { params: IdParams } }, (req) =>
    batches.resume(account(req), req.params.id),
  );
  app.post('/api/batches/:id/cancel', { schema: { params: IdParams } }, (req) =>
    batches.cancel(account(req), req.params.id),
  );

  // Live progress: an `event: progress` whenever the counts change (looked at every 500 ms), then
  // `event: end` when the batch is finished. Streams end when the server shuts down.
  const streams = new Set<ServerResponse>();
  app.addHook('preClose', async () => {
    for (const s of streams) s.end();
  });
  app.get('/api/batches/:id/events', { schema: { params: IdParams } }, async (req, reply) => {
    const acct = account(req);
    await batches.get(pool, acct, req.params.id); // 404 before the stream starts
    reply.hijack();
    const res = reply.raw;
    res.writeHead(200, {
      'content-type': 'text/event-stream',
      'cache-control': 'no-cache',
      connection: 'keep-alive',
      'x-accel-buffering': 'no',
    });
    streams.add(res);
    res.on('close', () => streams.delete(res));
    let last = '';
    try {
      while (streams.has(res)) {
        const view = batchView(await batches.get(pool, acct, req.params.id));
        const { rate: _r, ...counts } = view.progress;
        const key = JSON.stringify([view.state, counts]);
        if (key !== last) {
          res.write(`event: progress\ndata: ${JSON.stringify(view)}\n\n`);
          last = key;
        }
        if (TERMINAL.has(view.state)) {
          res.write(`event: end\ndata: ${JSON.stringify({ state: view.state })}\n\n`);
          break;
        }
        await sleep(500);
      }
    } catch (err) {
      req.log.warn({ err }, 'SENDER_SSE_FAILED');
    } finally {
      streams.delete(res);
      res.end();
    }
  });

  // --- suppressions and unsubscribe ----------------------------------------------------------
  app.get(
    '/api/suppressions',
    {
      schema: {
        querystring: Type.Object({
          limit: Type.Integer({ minimum: 1, maximum: 1000, default: 100 }),
          after: Type.Optional(Type.String()),
        }),
      },
    },
    async (req) => ({
      suppressions: await listSuppressions(pool, account(req), req.query.limit, req.query.after),
    }),
  );
  app.post('/api/suppressions', { schema: { body: SuppressionBody } }, async (req, reply) => {
    reply.code(201);
    return { added: await addSuppressions(pool, account(req), req.body.addresses, req.body.reason) };
  });
  app.delete(
    '/api/suppressions/:address',
    { schema: { params: Type.Object({ address: Type.String({ minLength: 1 }) }) } },
    async (req, reply) => {
      if (!(await removeSuppression(pool, account(req), req.params.address)))
        throw notFound(`${req.params.address} is not on the suppression list`);
      reply.code(204);
    },
  );

  const unsubscribeTarget = async (token: string) => {
    const t = readUnsubscribeToken(ctx.webhookSecret, token);
    if (!t) throw notFound('this unsubscribe link is not valid; use the link from the message exactly');
    const { rows } = await pool.query<{ account_id: string; address: string }>(
      `SELECT b.account_id, r.address FROM sender_recipients r JOIN sender_batches b ON b.id = r.batch_id
       WHERE r.batch_id = $1 AND r.id = $2`,
      [t.batchId, t.recipientId],
    );
    if (!rows[0]) throw notFound('this unsubscribe link belongs to a message that no longer exists');
    return rows[0];
  };
  const TokenParams = Type.Object({ token: Type.String({ maxLength: 200 }) });
  // GET only shows a button (mail scanners follow links); POST unsubscribes (RFC 8058 one-click).
  app.get(
    '/api/unsubscribe/:token',
    { config: { public: true }, schema: { params: TokenParams, hide: true } },
    async (req, reply) => {
      const target = await unsubscribeTarget(req.params.token);
      reply.type('text/html; charset=utf-8');
      return `<!doctype html><title>Unsubscribe</title><form method="post"><p>Stop messages to ${escapeHtml(target.address)}?</p><button>Unsubscribe</button></form>`;
    },
  );
  app.post(
    '/api/unsubscribe/:token',
    { config: { public: true }, schema: { params: TokenParams, hide: true } },
    async (req, reply) => {
      const target = await unsubscribeTarget(req.params.token);
      await addSuppressions(pool, target.account_id, [target.address], 'unsubscribed');
      ctx.log.info({ address: target.address }, 'SENDER_UNSUBSCRIBED');
      reply.type('text/html; charset=utf-8');
      return `<!doctype html><title>Unsubscribed</title><p>${escapeHtml(target.address)} is unsubscribed.</p>`;
    },
  );
  // One-click posts arrive as a form body: RFC 8058 has mailbox providers send multipart/form-data,
  // some send urlencoded. The body says only "List-Unsubscribe=One-Click", so it is not read.
  for (const type of ['application/x-www-form-urlencoded', 'multipart/form-data'])
    app.addContentTypeParser(type, { parseAs: 'string' }, (_req, body, done) => done(null, body));

  // --- delivery events in --------------------------------------------------------------------
  app.post(
    '/webhooks/:provider',
    {
      config: { public: true, rawBody: true },
      schema: {
        params: Type.Object({ provider: Type.String({ pattern: '^[a-z0-9_-]{1,40}$' }) }),
        body: DeliveryEventsBody,
      },
      // The signature is checked before the body's schema (a body that is not JSON at all is refused
      // first, by the parser): strangers learn nothing of it.
      preValidation: async (req) => ctx.webhooks.verifyRequest(req),
    },
    async (req) => recordDeliveryEvents(pool, ctx.log, req.params.provider, deliveryEventsOf(req.body)),
  );
}

/** The body's events: `{events}`, or the body itself as one `{type, messageId}`; else a 400 saying which. */
function deliveryEventsOf(body: Static<typeof DeliveryEventsBody>): DeliveryEvent[] {
  const { type, messageId, events } = body;
  if (events !== undefined) {
    if (type !== undefined || messageId !== undefined)
      throw badRequest(
        'send one event as {type, messageId} or several as {events: [...]}, not both in one body',
      );
    return events;
  }
  if (type === undefined || messageId === undefined)
    throw badRequest(
      `body must have ${type === undefined ? 'type' : 'messageId'}: send {type, messageId} or {events: [...]}`,
    );
  return [{ type, messageId }];
}

function escapeHtml(s: string): string {
  return s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}
