// HTTP routes of the events module (DESIGN.md §2 events; paths fixed).
import { Type } from '@sinclair/typebox';
import { badRequest, HttpError } from '../../kit/errors.ts';
import type { App } from '../../kit/http.ts';
import type { ModuleContext } from '../../kit/module.ts';
import { BUCKETS, sharedAnalytics } from './analytics.ts';
import type { Ingestor, Source } from './ingest.ts';
import {
  SEGMENT_TYPES,
  type SegmentBatch,
  segmentBatch,
  segmentPrincipal,
  segmentToEvent,
} from './segment.ts';
import { type EventRow, EventSchema, EventValidationError, MAX_BATCH, validateBody } from './validate.ts';

/** Validation is ours (validate.ts) for field-level messages; the schema documents the body. */
const documentOnly = () => () => true;

export function registerEventRoutes(app: App, ctx: ModuleContext, ingestor: Ingestor): void {
  /** Seed 003's VALIDATION_ERROR line, for a refused request or a refused call of a Segment batch. */
  const logValidationError = (fields: { reqId: string; field?: string; reason: string; source?: Source }) =>
    ctx.log.info(fields, 'VALIDATION_ERROR');
  // Every 400 of these routes is a VALIDATION_ERROR, whoever raised it: our field checks, the kit's
  // JSON parser (a body that is not JSON) or a querystring schema.
  app.addHook('onError', (req, _reply, err, done) => {
    if (err.statusCode === 400) {
      const field = err.cause instanceof EventValidationError ? err.cause.field : undefined;
      logValidationError({ reqId: req.id, field, reason: err.message });
    }
    done();
  });
  // Any other content type: a 415 that says what to send (Fastify's own says only its name).
  app.addContentTypeParser('*', (req, _payload, done) => {
    done(
      new HttpError(
        415,
        `Content-Type ${req.headers['content-type'] ?? '(none)'} is not accepted: send application/json`,
      ),
    );
  });
  const reject = (err: unknown): never => {
    if (err instanceof EventValidationError) {
      const bad = badRequest(err.message);
      bad.cause = err;
      throw bad;
    }
    throw err;
  };
  const ingest = async (rows: () => EventRow[], source: Source) => {
    let valid: EventRow[];
    try {
      valid = rows();
    } catch (err) {
      return reject(err);
    }
    // While PostgreSQL is known down, answer 503 now rather than queue behind a connect attempt.
    ctx.dbStatus.check();
    return ingestor.submit(valid, source);
  };

  app.post(
    '/api/events',
    {
      schema: {
        tags: ['events'],
        summary: 'Ingest one event or an array of up to 1,000; 201 means stored durably',
        body: Type.Union([EventSchema, Type.Array(EventSchema, { minItems: 1, maxItems: MAX_BATCH })]),
        response: {
          201: Type.Object({
            accepted: Type.Integer({ description: 'events stored' }),
            duplicates: Type.Integer({ description: 'events whose messageId was already stored' }),
          }),
        },
      },
      validatorCompiler: documentOnly,
      config: { bodyTooLarge: 'split the events over more requests (up to 1,000 events and 1 MB each)' },
    },
    async (req, reply) => {
      const result = await ingest(() => validateBody(req.body), 'api');
      reply.code(201);
      return result;
    },
  );

  app.get(
    '/api/analytics',
    {
      schema: {
        tags: ['events'],
        summary: 'Totals, by action, by user, a time series, backlog and the cron heartbeat (from rollups)',
        querystring: Type.Object({
          from: Type.Optional(
            Type.String({
              description: 'ISO 8601, a date or a time with Z or an offset; with to, limits every figure',
            }),
          ),
          to: Type.Optional(Type.String({ description: 'ISO 8601 as from, exclusive' })),
          bucket: Type.Union(
            BUCKETS.map((b) => Type.Literal(b)),
            { default: 'hour' },
          ),
          top: Type.Integer({ minimum: 1, maximum: 1000, default: 10, description: 'users listed' }),
        }),
      },
    },
    async (req) => sharedAnalytics(ctx.pool, req.query),
  );

  // Segment Tracking API: the routes authenticate the write key themselves (public to the guard), and
  // take gzip bodies, which some Segment libraries send (analytics-python with gzip=True).
  const segment = { tags: ['segment'], body: Type.Object({}, { additionalProperties: true }) };
  app.post(
    '/v1/batch',
    {
      schema: { ...segment, summary: 'Segment batch' },
      config: { public: true, gzipBody: true },
      validatorCompiler: documentOnly,
    },
    async (req) => {
      await segmentPrincipal(ctx, req);
      let rejected: SegmentBatch['rejected'] = [];
      await ingest(() => {
        const batch = segmentBatch(req.body);
        rejected = batch.rejected;
        return batch.rows;
      }, 'segment');
      // Segment's clients never show an answer's body: the log is where a refused call is seen.
      for (const r of rejected)
        logValidationError({ reqId: req.id, field: r.field, reason: r.message, source: 'segment' });
      return rejected.length ? { success: true, rejected } : { success: true };
    },
  );
  for (const type of SEGMENT_TYPES) {
    app.post(
      `/v1/${type}`,
      {
        schema: { ...segment, summary: `Segment ${type}` },
        config: { public: true, gzipBody: true },
        validatorCompiler: documentOnly,
      },
      async (req) => {
        await segmentPrincipal(ctx, req);
        await ingest(() => [segmentToEvent(req.body, '', type)], 'segment');
        return { success: true };
      },
    );
  }
}
