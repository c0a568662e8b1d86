// Seed 002's HTTP API at its own paths (/books, /checkout, /racks: not under /api), answering its
// {statusCode, data, message} envelope. Every handler calls the books service through RPC: a
// plain function call in the single-process default, a NATS request to a worker with NATS_URL.
//
// Errors keep the kit's {statusCode, error, message} shape and add no `data: null`: seed 002's
// clients branch on statusCode (which both shapes carry), and one error shape across every module
// is worth more than mimicking a field that is empty by definition.
import { Type } from '@sinclair/typebox';
import type { FastifySchemaValidationError } from 'fastify/types/schema.js';
import { badRequest, HttpError } from '../../kit/errors.ts';
import { type App, unsupportedMediaTypeMessage } from '../../kit/http.ts';
import {
  Book,
  BookInput,
  BookPatch,
  CheckoutInput,
  Envelope,
  HistoryEntry,
  IdParams,
  ListQuery,
  PageEnvelope,
  PageQuery,
  Rack,
} from './schemas.ts';
import type { BooksService } from './service.ts';

/** Ajv's first error as a sentence that names the field and what it accepts. */
export function formatSchemaError(errors: FastifySchemaValidationError[], dataVar: string): Error {
  const e = errors[0];
  if (!e) return badRequest(`${dataVar} is invalid`);
  const field = `${dataVar}${e.instancePath.replace(/\//g, '.')}`;
  const p = e.params as Record<string, unknown>;
  switch (e.keyword) {
    case 'required':
      return badRequest(`${field}.${p.missingProperty} is required`);
    case 'additionalProperties':
      return badRequest(
        `${field} has an unknown field "${p.additionalProperty}"; remove it or check its spelling`,
      );
    case 'enum':
      return badRequest(`${field} must be one of: ${(p.allowedValues as unknown[]).join(', ')}`);
    case 'const':
      return badRequest(`${field} must be ${JSON.stringify(p.allowedValue)}`);
    case 'pattern':
      return badRequest(
        `${field} may hold only letters, digits and . _ : - and must start with a letter or digit`,
      );
    default:
      return badRequest(`${field} ${e.message ?? 'is invalid'}`);
  }
}

/**
 * The version a write expects: If-Match (the ETag we sent, `"3"`, weak or bare too) and/or the
 * body's `version`. `*` means any version. Undefined: no check, the write applies as is.
 */
export function expectedVersion(ifMatch: string | undefined, bodyVersion?: number): number | undefined {
  let fromHeader: number | undefined;
  const h = ifMatch?.trim();
  if (h !== undefined && h !== '*') {
    const m = /^(?:W\/)?"?(\d{1,9})"?$/.exec(h);
    if (!m) throw badRequest(`If-Match must be the book's version as sent in its ETag, e.g. If-Match: "3"`);
    fromHeader = Number(m[1]);
  }
  if (fromHeader !== undefined && bodyVersion !== undefined && fromHeader !== bodyVersion) {
    throw badRequest(
      `If-Match asks for version ${fromHeader} but the body's version is ${bodyVersion}; send one, or make them agree`,
    );
  }
  return fromHeader ?? bodyVersion;
}

/**
 * POST /books' Idempotency-Key (the IETF draft's header; Stripe's form): 1 to 255 visible ASCII
 * characters, bare or as a quoted string. A UUID per book the client means to create is the usual
 * choice; the client sends the same key again when it retries that create.
 */
export function idempotencyKeyOf(header: string | string[] | undefined): string | undefined {
  if (header === undefined) return undefined;
  const raw = Array.isArray(header) ? header.join(', ') : header;
  const key = /^"(.*)"$/.exec(raw)?.[1] ?? raw;
  if (!/^[\x21-\x7e]{1,255}$/.test(key)) {
    throw badRequest(
      'Idempotency-Key must be one value of 1 to 255 visible ASCII characters (no spaces), e.g. a UUID',
    );
  }
  return key;
}

const etag = (b: Book) => `"${b.version}"`;
const ok = <T>(data: T, message = 'Success', statusCode = 200) => ({ statusCode, data, message });

export function registerBookRoutes(app: App, books: BooksService): void {
  // Fastify reads text/plain as a string, which every route then refused as "body must be object":
  // a 415 that says to send JSON, as any other type gets.
  app.addContentTypeParser('text/plain', (req, _payload, done) =>
    done(new HttpError(415, unsupportedMediaTypeMessage(req))),
  );
  app.addHook('onRoute', (route) => {
    route.schemaErrorFormatter ??= formatSchemaError;
    route.schema = { tags: ['books'], ...route.schema };
  });

  app.get(
    '/books',
    { schema: { querystring: ListQuery, response: { 200: PageEnvelope(Book) } } },
    async (req) => {
      const page = await books.list(req.query);
      return { ...ok(page.items), nextCursor: page.nextCursor };
    },
  );

  app.post(
    '/books',
    {
      schema: {
        body: BookInput,
        // Documents the header in /docs; idempotencyKeyOf checks it, with a message that says what to send.
        headers: Type.Object({
          'idempotency-key': Type.Optional(
            Type.String({
              description: 'Makes a retried create answer the book the first one made (24 hours)',
            }),
          ),
        }),
        response: { 201: Envelope(Book) },
      },
    },
    async (req, reply) => {
      const idempotencyKey = idempotencyKeyOf(req.headers['idempotency-key']);
      const { book, replayed } = await books.create({ book: req.body, idempotencyKey });
      reply.code(201).header('location', `/books/${book.id}`).header('etag', etag(book));
      if (replayed) reply.header('idempotent-replayed', 'true');
      return ok(book, replayed ? 'Book already created with this Idempotency-Key' : 'Book created', 201);
    },
  );

  app.get(
    '/books/:id',
    { schema: { params: IdParams, response: { 200: Envelope(Book) } } },
    async (req, reply) => {
      const book = await books.get({ id: req.params.id });
      reply.header('etag', etag(book));
      return ok(book);
    },
  );

  app.put(
    '/books/:id',
    { schema: { params: IdParams, body: BookPatch, response: { 200: Envelope(Book) } } },
    async (req, reply) => {
      const version = expectedVersion(req.headers['if-match'], req.body.version);
      const book = await books.update({ id: req.params.id, version, patch: req.body });
      reply.header('etag', etag(book));
      return ok(book, 'Book updated');
    },
  );

  app.delete(
    '/books/:id',
    { schema: { params: IdParams, response: { 200: Envelope(Book) } } },
    async (req) => {
      const version = expectedVersion(req.headers['if-match']);
      return ok(await books.remove({ id: req.params.id, version }), 'Book deleted');
    },
  );

  app.post(
    '/checkout',
    { schema: { body: CheckoutInput, response: { 200: Envelope(Book) } } },
    async (req, reply) => {
      const { book, event } = await books.checkout(req.body);
      reply.header('etag', etag(book));
      return ok(book, event.action === 'checkout' ? 'Book checked out' : 'Book returned');
    },
  );

  app.get(
    '/books/:id/history',
    { schema: { params: IdParams, querystring: PageQuery, response: { 200: PageEnvelope(HistoryEntry) } } },
    async (req) => {
      const page = await books.history({ id: req.params.id, ...req.query });
      return { ...ok(page.items), nextCursor: page.nextCursor };
    },
  );

  app.get('/racks', { schema: { response: { 200: Envelope(Type.Array(Rack)) } } }, async () =>
    ok(await books.racks({})),
  );
}
