// HTTP routes of DESIGN.md §2 codes. Routes call this process's codes objects directly (streams
// cannot cross RPC); other modules use the RPC service instead.
import type { Readable } from 'node:stream';
import type { FastifyReply } from 'fastify';
import { HttpError, notFound } from '../../kit/errors.ts';
import { type App, unsupportedMediaTypeMessage } from '../../kit/http.ts';
import type { ModuleContext } from '../../kit/module.ts';
import { type Campaign, refuseBatchCampaign } from './campaigns.ts';
import { ExportsBusy } from './exports.ts';
import { normalizeCode } from './format.ts';
import { STATE_UNUSED, SYNC_MAX } from './generate.ts';
import { timed } from './metrics.ts';
import * as S from './schemas.ts';
import type { CodesState } from './state.ts';
import { ImportStopped, JSON_IMPORT_LIMIT, Transfer } from './transfer.ts';

// Every error a codes route can answer, in the same envelope (listed so /docs shows them all).
const errors = Object.fromEntries(
  [400, 401, 403, 404, 409, 413, 415, 422, 503].map((status) => [status, S.ErrorBody]),
);
const tags = ['codes'];
const IMPORT_URL = '/api/campaigns/:id/codes/import';

export function registerCodesRoutes(app: App, ctx: ModuleContext, s: CodesState): void {
  // Bodies other than JSON: CSV (and plain lines) stream into the import; anything else is a 415
  // that names what to send.
  app.addContentTypeParser(['text/csv', 'text/plain'], (req, payload, done) => {
    if (req.routeOptions.url !== IMPORT_URL)
      return done(new HttpError(415, unsupportedMediaTypeMessage(req)));
    done(null, payload);
  });
  app.addContentTypeParser('*', (req, _payload, done) => {
    const accepted =
      req.routeOptions.url === IMPORT_URL ? 'text/csv, text/plain or application/json' : 'application/json';
    done(
      new HttpError(
        415,
        `Content-Type ${req.headers['content-type'] ?? '(none)'} is not accepted here: send ${accepted}`,
      ),
    );
  });

  app.post(
    '/api/campaigns',
    { schema: { tags, body: S.CreateCampaignBody, response: { 201: S.CampaignView, ...errors } } },
    async (req, reply) => {
      const created = await s.service.createCampaign(req.body);
      reply.code(201);
      return created;
    },
  );

  app.get(
    '/api/campaigns',
    {
      schema: {
        tags,
        querystring: S.ListQuery,
        response: { 200: S.CampaignList },
      },
    },
    async (req) => {
      const campaigns = await s.campaigns.list(req.query.limit, req.query.after);
      // As the users' codes list: a full page may have more after it.
      return { campaigns, next: campaigns.length === req.query.limit ? campaigns.at(-1)!.id : null };
    },
  );

  app.get(
    '/api/campaigns/:id',
    { schema: { tags, params: S.CampaignParams, response: { 200: S.CampaignView, ...errors } } },
    (req) => s.service.getCampaign({ campaignId: req.params.id }),
  );

  app.patch(
    '/api/campaigns/:id',
    {
      schema: {
        tags,
        params: S.CampaignParams,
        body: S.UpdateCampaignBody,
        response: { 200: S.CampaignView, ...errors },
      },
    },
    (req) => s.service.updateCampaign({ campaignId: req.params.id, ...req.body }),
  );

  app.post(
    '/api/campaigns/:id/codes',
    {
      schema: {
        tags,
        params: S.CampaignParams,
        body: S.GenerateBody,
        response: { 201: S.GenerateNow, 202: S.GenerateLater, ...errors },
      },
    },
    async (req, reply) => {
      const campaign = await s.campaigns.get(req.params.id);
      refuseBatchCampaign(campaign, 'generate codes');
      const { count } = req.body;
      if (count <= SYNC_MAX) {
        // All or none: a 422 after some rounds had committed left codes the caller never received.
        const codes = await timed(s.metrics, 'generate', () =>
          s.generator.generateSmall(campaign, count, STATE_UNUSED, { atomic: true }),
        );
        reply.code(201);
        return { generated: codes.length, codes };
      }
      await s.generator.checkRoom(campaign, count);
      const jobId = await ctx.jobs.startTracked(
        ctx.pool,
        'codes:generate',
        { campaignId: campaign.id, count },
        count,
      );
      reply.code(202);
      return { jobId, state: 'queued' as const, total: count, statusUrl: `/api/jobs/${jobId}` };
    },
  );

  app.post(
    IMPORT_URL,
    {
      bodyLimit: JSON_IMPORT_LIMIT,
      // The JSON body is parsed whole; CSV is streamed row by row.
      config: { bodyTooLarge: 'send a large import as text/csv, which streams with no size limit' },
      schema: {
        tags,
        params: S.CampaignParams,
        description:
          'text/csv (first column; streamed, any size) or a JSON list of codes (up to 64 MB). Codes that do not fit the campaign format count as invalid.',
        response: { 200: S.ImportResult, ...errors },
      },
    },
    async (req, reply) => {
      const campaign = await s.campaigns.get(req.params.id);
      const body = req.body as unknown;
      // A CSV body is the request's stream (the parser above); anything else was parsed as JSON.
      const source =
        body && typeof (body as Readable).pipe === 'function'
          ? Transfer.csvFirstColumn(body as Readable, ctx.stopping)
          : Transfer.jsonCodes(body);
      try {
        return await timed(s.metrics, 'import', () => s.transfer.importCodes(campaign, source, ctx.stopping));
      } catch (err) {
        if (err instanceof ImportStopped) {
          const { inserted, duplicate, invalid } = err.result;
          ctx.log.warn(
            { campaign: campaign.id, reqId: req.id, inserted, duplicate, invalid },
            'CODES_IMPORT_STOPPED',
          );
          // Closed once answered: a sender that goes on writing after the 503 would otherwise hold
          // the drain (its body read and dropped) until SHUTDOWN_TIMEOUT_MS.
          reply.header('retry-after', '5').header('connection', 'close');
        }
        throw err;
      }
    },
  );

  const EXPORT_URL = '/api/campaigns/:id/codes.csv';
  const exportHeaders = (reply: FastifyReply, campaign: Campaign) =>
    reply
      .header('content-type', 'text/csv; charset=utf-8')
      .header('content-disposition', `attachment; filename="${campaign.id}-codes.csv"`);
  app.get(
    EXPORT_URL,
    {
      // Fastify's own HEAD ran the GET handler: the whole COPY, read and thrown away. The HEAD below
      // answers the headers without running the export.
      exposeHeadRoute: false,
      schema: {
        tags,
        params: S.CampaignParams,
        produces: ['text/csv'],
        description: `Streamed. At most ${s.exports.maxConcurrent} exports run at once on a server: another is a 429 with Retry-After. A client that reads nothing for ${s.exports.stallMs / 1000} s is cut.`,
        response: { ...errors, 429: S.ErrorBody },
      },
    },
    async (req, reply) => {
      const campaign = await s.campaigns.get(req.params.id);
      let stream: Readable;
      try {
        stream = await s.exports.start(campaign, reply.raw, req.id);
      } catch (err) {
        if (err instanceof ExportsBusy) reply.header('retry-after', String(err.retryAfterSeconds));
        throw err;
      }
      return exportHeaders(reply, campaign).send(stream);
    },
  );

  app.head(
    EXPORT_URL,
    {
      schema: {
        tags,
        params: S.CampaignParams,
        description: "The export's headers, without running it (404 for an unknown campaign)",
      },
    },
    async (req, reply) => exportHeaders(reply, await s.campaigns.get(req.params.id)).send(),
  );

  app.get(
    '/api/campaigns/:id/codes/:code',
    { schema: { tags, params: S.CodeParams, response: { 200: S.CodeView, ...errors } } },
    (req) =>
      timed(s.metrics, 'lookup', async () => {
        const campaign = await s.campaigns.get(req.params.id);
        const code = normalizeCode(campaign.format, req.params.code);
        if (!code)
          throw notFound(
            `code ${req.params.code} is not in campaign ${campaign.id}: its codes are ` +
              (campaign.format.prefix ? `"${campaign.format.prefix}" followed by ` : '') +
              `${campaign.format.length} characters of ${campaign.format.alphabet}`,
          );
        const found = await s.lookup(campaign, code);
        if (!found) throw notFound(`code ${code} is not in campaign ${campaign.id}`);
        return found;
      }),
  );

  app.get(
    '/api/campaigns/:id/users/:userId/codes',
    {
      schema: {
        tags,
        params: S.UserParams,
        querystring: S.UserCodesQuery,
        response: { 200: S.UserCodes, ...errors },
      },
    },
    async (req) => {
      const campaign = await s.campaigns.get(req.params.id);
      const { limit, after } = req.query;
      const codes = await s.codesOfUser(campaign, req.params.userId, limit, after);
      return { userId: req.params.userId, codes, next: codes.length === limit ? codes.at(-1)!.code : null };
    },
  );

  app.post(
    '/api/campaigns/:id/reservations',
    {
      schema: {
        tags,
        params: S.CampaignParams,
        body: S.ReserveBody,
        response: { 201: S.ReserveResult, ...errors },
      },
    },
    async (req, reply) => {
      const r = await s.service.reserve({ campaignId: req.params.id, ...req.body });
      reply.code(201);
      return r;
    },
  );

  app.post(
    '/api/campaigns/:id/reservations/:reserveId/assign',
    {
      schema: {
        tags,
        params: S.ReservationParams,
        body: S.AssignBody,
        response: { 200: S.AssignResult, ...errors },
      },
    },
    (req) =>
      s.service.assign({
        campaignId: req.params.id,
        reserveId: req.params.reserveId,
        userId: req.body.userId,
      }),
  );

  app.get(
    '/api/campaigns/:id/reservations/:reserveId',
    { schema: { tags, params: S.ReservationParams, response: { 200: S.ReservationView, ...errors } } },
    (req) => s.service.getReservation({ campaignId: req.params.id, reserveId: req.params.reserveId }),
  );

  app.delete(
    '/api/campaigns/:id/reservations/:reserveId',
    { schema: { tags, params: S.ReservationParams, response: { 200: S.ReleaseResult, ...errors } } },
    (req) => s.service.release({ campaignId: req.params.id, reserveId: req.params.reserveId }),
  );

  app.post(
    '/api/generate',
    {
      config: { public: true, rawBody: true },
      schema: {
        tags,
        description:
          'Seed 000: Standard Webhooks-signed (webhook-id, webhook-timestamp, webhook-signature). Answers {code}, or {codes} for {count} up to 1,000, from the batch-codes campaign (6 characters A-Z0-9).',
        security: [],
        body: S.WebhookGenerateBody,
        response: { 201: S.WebhookGenerateResult, ...errors },
      },
      // The signature is checked before the body's schema: an unsigned caller learns nothing of it.
      // (A body that is not JSON at all is refused first, by the parser: that tells nothing either.)
      // A rejected signature is counted (tessera_auth_failures_total{kind="webhook"}) by verifyRequest.
      preValidation: async (req) => {
        await ctx.webhooks.verifyRequest(req);
        // A signed delivery with no body at all asks for one code, as `{}` does.
        if (req.body === undefined) req.body = {};
      },
    },
    async (req, reply) => {
      const count = req.body?.count;
      const codes = await timed(s.metrics, 'webhook_generate', () => s.webhookGenerate(count ?? 1));
      reply.code(201);
      return count === undefined ? { code: codes[0]! } : { codes };
    },
  );
}
