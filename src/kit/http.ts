// The Fastify app every role serves: JSON-schema routes that also generate /openapi.json and /docs,
// the {statusCode, error, message} envelope, request ids, a 1 MB body limit, an access log that
// leaves out probe and scrape paths, and the request histogram.
import { randomUUID } from 'node:crypto';
import type { Readable } from 'node:stream';
import { createGunzip, type Gunzip } from 'node:zlib';
import AjvCompiler from '@fastify/ajv-compiler';
import swagger from '@fastify/swagger';
import swaggerUi from '@fastify/swagger-ui';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import Fastify, {
  type FastifyError,
  type FastifyInstance,
  type FastifyReply,
  type FastifyRequest,
  LogController,
} from 'fastify';
import { hasScope, lacksScope, type Principal } from './auth.ts';
import { injectedDbMessage, RANDOM_500_RATE } from './chaos.ts';
import {
  DB_UNAVAILABLE_MESSAGE,
  isConnectionError,
  NUL_IN_TEXT,
  recordConnectionFailure,
  unstorableInputError,
} from './db.ts';
import { badRequest, forbidden, HttpError, unauthorized } from './errors.ts';
import { findString, parseJsonBody, utf8JsonText } from './json-body.ts';
import type { Kit } from './kit.ts';
import { moduleLogger } from './log.ts';
import { formatSchemaErrors } from './schema-errors.ts';

/** Fastify's Ajv options but for coercion, and additional properties refused rather than dropped. */
const AJV_OPTIONS = { removeAdditional: false, useDefaults: true, allErrors: false } as const;
export type App = FastifyInstance<
  import('node:http').Server,
  import('node:http').IncomingMessage,
  import('node:http').ServerResponse,
  import('fastify').FastifyBaseLogger,
  TypeBoxTypeProvider
>;

declare module 'fastify' {
  interface FastifyRequest {
    principal?: Principal;
    rawBody?: string;
    /** The webhook-id this request recorded (WebhookVerifier#verifyRequest). */
    webhookId?: string;
  }
  interface FastifyContextConfig {
    /** Keep the raw body for signature verification (Standard Webhooks). */
    rawBody?: boolean;
    /** Route needs no credentials (ops, login, signed webhooks that verify themselves). */
    public?: boolean;
    /** The module that registered the route: its error lines are logged as that module's. */
    module?: string;
    /** What a 413 tells the caller to do instead (default: send less in each request). */
    bodyTooLarge?: string;
    /**
     * Accept a gzip body (`Content-Encoding: gzip`), as clients of Segment's API may send one. The
     * body limit applies to the decoded bytes, so a small bomb cannot grow past it.
     */
    gzipBody?: boolean;
    /**
     * The content types the route takes, for the 415 a body of any other type gets (default:
     * application/json). Fastify knows only which types a plugin's parsers read, not which a route
     * takes, so a route that reads more than JSON (a CSV upload) lists them here.
     */
    accepts?: string[];
  }
}

export const BODY_LIMIT = 1024 * 1024;

/**
 * preParsing for routes with `gzipBody`: the body as decoded. Fastify checks the route's limit
 * against the decoded bytes and Content-Length against `receivedEncodedLength`; a body that is not
 * gzip is a 400 that says so, not zlib's "incorrect header check".
 */
function gunzipBody(
  req: FastifyRequest,
  _reply: FastifyReply,
  payload: Readable,
  done: (err: Error | null, body?: Readable) => void,
): void {
  if (req.headers['content-encoding']?.trim().toLowerCase() !== 'gzip') {
    done(null, payload);
    return;
  }
  const gunzip = createGunzip() as Gunzip & { receivedEncodedLength: number };
  gunzip.receivedEncodedLength = 0;
  payload.on('data', (chunk: Buffer) => {
    gunzip.receivedEncodedLength += chunk.length;
  });
  payload.on('error', (err) => gunzip.destroy(err));
  gunzip.on('error', (err: Error & { statusCode?: number }) => {
    if (err.statusCode !== undefined) return;
    err.statusCode = 400;
    err.message = `the body is sent as Content-Encoding gzip but is not valid gzip (${err.message}): compress it whole with gzip, or send it uncompressed without that header`;
  });
  done(null, payload.pipe(gunzip));
}

export interface RouteInfo {
  method: string;
  url: string;
  public: boolean;
}
const routeTables = new WeakMap<object, RouteInfo[]>();
/** Every route the app registered (method, path, public): what the Ingress allowlist must match. */
export function routeTable(app: App): RouteInfo[] {
  return routeTables.get(app) ?? [];
}
/** A request id a caller may choose: up to 128 characters of letters, digits and `_ . : / + = -`. */
const REQUEST_ID = /^[A-Za-z0-9_.:/+=-]{1,128}$/;
/** Probes and scrapes: never in the access log, never behind auth, never failure-injected. */
const QUIET_PATHS = new Set(['/metrics', '/api/metrics', '/heartbeat']);

export async function createHttpApp(kit: Kit): Promise<App> {
  const app = Fastify({
    loggerInstance: moduleLogger(kit.log, 'http'),
    // Our own access log (onResponse below) replaces Fastify's two lines per request.
    logController: new LogController({ disableRequestLogging: true }),
    // One logger for all requests instead of a pino child per request; our lines carry reqId.
    childLoggerFactory: (logger) => logger,
    bodyLimit: BODY_LIMIT,
    // Ids in paths (reserveId, userId, campaign id) may be 200 characters, which URL-encoding can
    // make 2,400 (12 for each character of 4 UTF-8 bytes, as an emoji); Fastify's default of 100
    // refused a long reserveId on assign and release after reserve had accepted it in the body.
    routerOptions: { maxParamLength: 4096 },
    // A caller's x-request-id is kept when it looks like an id; anything else (a 10 KB value would
    // be repeated in every log line of the request and echoed back) gets a fresh UUID instead.
    requestIdHeader: false,
    genReqId: (req) => {
      const given = req.headers['x-request-id'];
      return typeof given === 'string' && REQUEST_ID.test(given) ? given : randomUUID();
    },
    trustProxy: kit.config.trustProxy,
    return503OnClosing: true,
    forceCloseConnections: 'idle',
    schemaErrorFormatter: formatSchemaErrors,
    // The router's own 400s (a path with a bad %-escape) in the envelope every other error uses.
    frameworkErrors: (err, _req, reply) => {
      const hint =
        err.code === 'FST_ERR_BAD_URL'
          ? ': a % in a URL must start a %XX escape, and the escapes must spell UTF-8 text (encode the path part with encodeURIComponent)'
          : '';
      (reply as FastifyReply).code(400).send(badRequest(`${err.message}${hint}`).toJSON());
    },
  }).withTypeProvider<TypeBoxTypeProvider>() as unknown as App;
  // Query strings, path parameters and headers are text, so their numbers and booleans are read
  // from it (Fastify's default coercion). A JSON body carries its own types: coerced, {"count": true}
  // generated one code, {"count": "5"} five and {"count": null} was told "must be >= 1".
  const coercing = AjvCompiler()({}, { customOptions: { ...AJV_OPTIONS, coerceTypes: 'array' } });
  const exact = AjvCompiler()({}, { customOptions: { ...AJV_OPTIONS, coerceTypes: false } });
  app.setValidatorCompiler((route) => (route.httpPart === 'body' ? exact : coercing)(route));

  const routes: RouteInfo[] = [];
  routeTables.set(app, routes);
  app.addHook('onRoute', (r) => {
    if (r.config?.gzipBody) r.preParsing = [...[r.preParsing ?? []].flat(), gunzipBody];
    const check = checkTextFields(r.schema?.querystring, r.schema?.params);
    if (check) r.preValidation = [...[r.preValidation ?? []].flat(), check];
    for (const method of [r.method].flat())
      routes.push({ method: String(method), url: r.url, public: Boolean(r.config?.public) });
  });

  // JSON parsing that can keep the exact bytes a webhook signature covers.
  // Read as bytes, so a body that is not UTF-8 is refused (decoded as text, it was stored with U+FFFD
  // in place of its bad bytes: "N\xff" became "N�" in a book's name and an event's userId).
  app.addContentTypeParser('application/json', { parseAs: 'buffer' }, (req, body, done) => {
    try {
      const text = utf8JsonText(body as Buffer);
      if (req.routeOptions.config?.rawBody) req.rawBody = text;
      done(null, text === '' ? undefined : parseJsonBody(text));
    } catch (err) {
      done(err as HttpError, undefined);
    }
  });

  // Hooks are plain callbacks, not async functions: they run on every request, and a promise per
  // hook per request is measurable against a bare Fastify route.
  const tracer = kit.telemetry.tracer;
  const spans = new WeakMap<FastifyRequest, import('@opentelemetry/api').Span>();
  const accessLog = moduleLogger(kit.log, 'http');
  app.addHook('onRequest', (req, reply, done) => {
    reply.header('x-request-id', req.id);
    // Seed 003's "request received" line, at debug (DEBUG=tessera:http): at info it would double
    // the access log, whose API_REQUEST line comes when the answer goes.
    if (accessLog.isLevelEnabled('debug') && !QUIET_PATHS.has(req.routeOptions.url ?? ''))
      accessLog.debug({ reqId: req.id, method: req.method, url: req.url, ip: req.ip }, 'API_REQUEST_START');
    if (tracer) {
      const name = `${req.method} ${req.routeOptions.url ?? 'unmatched'}`;
      const attributes = {
        'http.request.method': req.method,
        'url.path': req.url,
        'tessera.request_id': req.id,
      };
      spans.set(req, tracer.startSpan(name, { attributes }));
    }
    // A compressed body on a route that does not decode one was parsed as it came: gzip read as
    // "not valid JSON: Unexpected token \u001f", which pointed at the JSON rather than the encoding.
    const encoding = req.headers['content-encoding']?.trim().toLowerCase();
    if (encoding && encoding !== 'identity' && !(encoding === 'gzip' && req.routeOptions.config?.gzipBody))
      return done(
        new HttpError(
          415,
          req.routeOptions.config?.gzipBody
            ? `Content-Encoding ${encoding} is not supported: send the body uncompressed or gzip-compressed`
            : `Content-Encoding ${encoding} is not supported: send the body uncompressed`,
        ),
      );
    done();
  });

  // Once shutdown begins, each answer in flight closes its keep-alive socket when it is sent;
  // otherwise an idle socket would hold server.close() open until the drain timeout.
  let closing = false;
  app.addHook('preClose', (done) => {
    closing = true;
    done();
  });

  app.addHook('onResponse', (req, reply, done) => {
    const route = req.routeOptions.url ?? 'unmatched';
    const status = reply.statusCode;
    kit.metrics.httpDuration.observe(
      { method: req.method, route, status_code: status },
      reply.elapsedTime / 1000,
    );
    if (!QUIET_PATHS.has(route) && accessLog.isLevelEnabled('info')) {
      const ms = Math.round(reply.elapsedTime * 10) / 10;
      accessLog.info(
        { reqId: req.id, method: req.method, url: req.url, statusCode: status, ms, ip: req.ip },
        'API_REQUEST',
      );
    }
    const span = spans.get(req);
    if (span) {
      span.setAttribute('http.response.status_code', status);
      if (status >= 500) span.setStatus({ code: 2 });
      span.end();
    }
    // A verified delivery that failed did nothing: its sender's retry must not meet a replay 401.
    if (req.webhookId && status >= 400) kit.webhooks.forgetFailed(req.webhookId);
    if (closing) app.server.closeIdleConnections();
    done();
  });

  app.setErrorHandler((err: FastifyError, req, reply) => sendError(kit, err, req, reply));
  app.setNotFoundHandler((req, reply) => {
    reply.code(404).send({
      statusCode: 404,
      error: 'Not Found',
      message: `no route for ${req.method} ${req.url.split('?')[0]}`,
    });
  });

  await app.register(swagger, {
    openapi: {
      info: {
        title: 'Tessera API',
        version: kit.version,
        description: 'codes, sender, events and books on one runtime',
      },
      components: {
        securitySchemes: {
          bearer: { type: 'http', scheme: 'bearer' },
          apiKey: { type: 'apiKey', in: 'header', name: 'X-API-Key' },
        },
      },
      security: [{ bearer: [] }, { apiKey: [] }],
    },
    transform: ({ schema, url }) => ({ schema: schema && documentedSchema(schema), url }),
  });
  await app.register(swaggerUi, { routePrefix: '/docs' });
  app.get('/openapi.json', { schema: { hide: true }, config: { public: true } }, async () => app.swagger());
  return app;
}

interface ObjectSchema {
  properties?: Record<string, { default?: unknown }>;
  required?: string[];
}

/**
 * A route's schema as /docs shows it. A query parameter with a default is filled in by validation
 * when left out, so it is optional to a caller, but TypeBox lists it as required, and Swagger UI
 * and generated clients then insisted on `limit`. A copy: the route validates with the original.
 */
function documentedSchema<S extends { querystring?: unknown }>(schema: S): S {
  const query = schema.querystring as ObjectSchema | undefined;
  if (!query?.required || !query.properties) return schema;
  const required = query.required.filter((k) => query.properties![k]?.default === undefined);
  return { ...schema, querystring: { ...query, required } };
}

function sendError(kit: Kit, err: FastifyError, req: FastifyRequest, reply: FastifyReply) {
  // The envelope is JSON whatever the route had set: a CSV export that lost PostgreSQL before its
  // first byte kept text/csv, which cannot serialize an object, and its 503 became a 500.
  reply.type('application/json; charset=utf-8').removeHeader('content-disposition');
  if (err instanceof HttpError) return reply.code(err.statusCode).send(withNulPath(err, req).toJSON());
  // A module route's failure is that module's line (and its DEBUG namespace); anything else is http's.
  const log = moduleLogger(kit.log, req.routeOptions.config?.module ?? 'http');
  if (err.validation) {
    log.debug({ reqId: req.id, validation: err.validation }, 'VALIDATION_ERROR');
    return reply.code(400).send({ statusCode: 400, error: 'Bad Request', message: err.message });
  }
  if (isStackOverflow(err)) {
    // JSON.parse takes any depth, but whatever walks the value next (JSON.stringify for a jsonb
    // column, a validator) recurses: a 200 KB body nested 100,000 deep was a 500 on four routes.
    // Logged at warn with its stack, in case one day the recursion is ours.
    log.warn({ reqId: req.id, err }, 'VALIDATION_ERROR');
    return reply.code(400).send({ statusCode: 400, error: 'Bad Request', message: TOO_DEEP_MESSAGE });
  }
  const unstorable = unstorableInputError(err);
  if (unstorable) {
    log.debug({ reqId: req.id, err: { message: err.message } }, 'VALIDATION_ERROR');
    return reply.code(400).send(withNulPath(unstorable, req).toJSON());
  }
  const status = err.statusCode ?? 500;
  if (err.code === 'FST_ERR_CTP_BODY_TOO_LARGE') {
    // Fastify's "Request body is too large" names neither the limit nor the way out.
    const limit = req.routeOptions.bodyLimit ?? BODY_LIMIT;
    const hint = req.routeOptions.config?.bodyTooLarge ?? 'send less in each request';
    return reply.code(413).send({
      statusCode: 413,
      error: httpErrorName(413),
      message: `the request body is over this route's limit of ${formatBytes(limit)}: ${hint}`,
    });
  }
  if (err.code === 'FST_ERR_CTP_INVALID_MEDIA_TYPE') {
    // Fastify's "Unsupported Media Type" names neither the type received nor the one to send.
    return reply
      .code(415)
      .send({ statusCode: 415, error: httpErrorName(415), message: unsupportedMediaTypeMessage(req) });
  }
  if (status < 500) {
    return reply
      .code(status)
      .send({ statusCode: status, error: httpErrorName(status), message: err.message });
  }
  if (clientHungUp(req, err)) {
    // The caller's own socket closed mid-body (an upload cancelled): its ECONNRESET is not
    // PostgreSQL's, and read as one it marked the database down and answered others 503.
    log.info({ reqId: req.id, err: { message: err.message } }, 'CLIENT_ABORTED');
    return reply.code(400).send({
      statusCode: 400,
      error: 'Bad Request',
      message: 'the connection closed before the request body was complete: send it again',
    });
  }
  if (isConnectionError(err)) {
    kit.dbStatus.reportFailure(err);
    recordConnectionFailure(log, kit.metrics, err, { reqId: req.id });
    return reply.code(503).header('retry-after', '5').send({
      statusCode: 503,
      error: 'Service Unavailable',
      message: DB_UNAVAILABLE_MESSAGE,
    });
  }
  log.error({ reqId: req.id, err }, 'REQUEST_FAILED');
  kit.captureException?.(err);
  return reply
    .code(500)
    .send({ statusCode: 500, error: 'Internal Server Error', message: 'Internal Server Error' });
}

/**
 * What a 415 says: the type received and what the route takes (its `accepts` config, else JSON).
 * `curl -d` sends application/x-www-form-urlencoded unless told otherwise, the usual way to get here.
 */
export function unsupportedMediaTypeMessage(req: FastifyRequest): string {
  const accepts = req.routeOptions.config?.accepts ?? ['application/json'];
  const send = `send Content-Type: ${accepts.join(' or ')}`;
  const route = `${req.method} ${req.routeOptions.url ?? req.url.split('?')[0]}`;
  const header = req.headers['content-type']?.trim();
  if (!header) return `the request has a body but no Content-Type: ${send} to ${route}`;
  const received = header.length > 100 ? `${header.slice(0, 100)}…` : header;
  const curl = /^application\/x-www-form-urlencoded\b/i.test(header)
    ? ` (curl -d sends ${received} unless given -H 'Content-Type: ${accepts[0]}')`
    : '';
  return `Content-Type ${received} is not accepted by ${route}: ${send}${curl}`;
}

/** The request's own stream failed because the client closed its connection before the body's end. */
function clientHungUp(req: FastifyRequest, err: FastifyError): boolean {
  return err.code === 'ECONNRESET' && (req.raw.readableAborted || req.raw.destroyed) && !req.raw.complete;
}

const hasNul = (s: string) => s.includes('\u0000');

type FieldSchemas = Record<string, { type?: unknown }>;
const propertiesOf = (schema: unknown): FieldSchemas =>
  (schema as { properties?: FieldSchemas } | undefined)?.properties ?? {};
const namesWhere = (props: FieldSchemas, test: (type: unknown) => boolean) =>
  Object.entries(props)
    .filter(([, p]) => test(p.type))
    .map(([name]) => name);
const DECIMAL_INTEGER = /^[+-]?\d+$/;

/**
 * Checks of a query string and path as sent, before the schema coerces their text, or undefined
 * when the route has nothing to check:
 * - `?limit=5&limit=6` reaches the schema as [5, 6], refused as "must be integer", true of neither;
 * - the coercion reads an integer as JavaScript does, so " " was 0 and "0x10" was 16.
 */
function checkTextFields(querySchema: unknown, paramsSchema: unknown) {
  const query = propertiesOf(querySchema);
  const once = namesWhere(query, (t) => t !== 'array');
  const integers = [
    ...namesWhere(query, (t) => t === 'integer').map((name) => ['querystring', name] as const),
    ...namesWhere(propertiesOf(paramsSchema), (t) => t === 'integer').map(
      (name) => ['params', name] as const,
    ),
  ];
  if (once.length === 0 && integers.length === 0) return undefined;
  return (req: FastifyRequest, _reply: FastifyReply, done: (err?: Error) => void) => {
    const q = req.query as Record<string, unknown>;
    for (const name of once) {
      const v = q[name];
      if (Array.isArray(v))
        return done(badRequest(`querystring/${name} is given ${v.length} times: send it once`));
    }
    for (const [part, name] of integers) {
      const v = (part === 'querystring' ? q : (req.params as Record<string, unknown>))[name];
      if (typeof v === 'string' && !DECIMAL_INTEGER.test(v))
        return done(
          badRequest(
            `${part}/${name} must be a whole number in decimal digits, such as 42; got ${JSON.stringify(v)}`,
          ),
        );
    }
    done();
  };
}

/**
 * PostgreSQL does not say which value held a NUL (nor does an RPC handler that met it); the
 * request does: the first field holding one, in the body, then the query, then the path.
 */
function withNulPath(err: HttpError, req: FastifyRequest): HttpError {
  if (err.message !== NUL_IN_TEXT) return err;
  const where =
    findString(req.body, hasNul, 'body') ??
    findString(req.query, hasNul, 'querystring') ??
    findString(req.params, hasNul, 'params');
  return where ? badRequest(NUL_IN_TEXT.replace('the request', where)) : err;
}

const formatBytes = (n: number) =>
  n % (1024 * 1024) === 0 ? `${n / (1024 * 1024)} MB` : `${n.toLocaleString('en-US')} bytes`;

const TOO_DEEP_MESSAGE = 'the request body is nested too deeply to process (thousands of levels): flatten it';

function isStackOverflow(err: unknown): boolean {
  return err instanceof RangeError && err.message.includes('Maximum call stack size exceeded');
}

function httpErrorName(status: number): string {
  return new HttpError(status, '').error;
}

function bearerOrApiKey(req: FastifyRequest): string | undefined {
  const auth = req.headers.authorization;
  if (auth?.startsWith('Bearer ')) return auth.slice(7).trim();
  const key = req.headers['x-api-key'];
  return typeof key === 'string' ? key : undefined;
}

function sessionCookie(req: FastifyRequest): string | undefined {
  const cookie = req.headers.cookie;
  if (!cookie) return undefined;
  for (const part of cookie.split(';')) {
    const [name, ...rest] = part.trim().split('=');
    if (name === 'tessera_session') return rest.join('=');
  }
  return undefined;
}

const SAFE_METHODS = new Set(['GET', 'HEAD', 'OPTIONS']);

/**
 * A browser sends the session cookie with any request to this host, whichever page made it. The
 * cookie is SameSite=Strict, which stops other sites but not a sibling subdomain (same site), and
 * browsers without it: so a change made with the cookie must come from this origin's own pages, as
 * the browser's Sec-Fetch-Site or Origin says. Scripts use API keys, which a page cannot borrow.
 */
export function refuseCrossSite(req: FastifyRequest): void {
  if (SAFE_METHODS.has(req.method)) return;
  const site = req.headers['sec-fetch-site'];
  const origin = req.headers.origin;
  // The browser's own word wins; Origin against Host is for browsers that send no Sec-Fetch-Site
  // (a proxy that rewrites Host without X-Forwarded-Host would otherwise refuse every write).
  if (site === 'same-origin' || site === 'none') return;
  let from: string | undefined;
  if (site === 'cross-site' || site === 'same-site') from = `a ${site} page`;
  else if (origin !== undefined && !sameHost(origin, req.host)) from = `a page of ${origin}`;
  if (from)
    throw forbidden(
      `a signed-in change must come from Tessera's own pages, and this one came from ${from}; scripts send an API key instead`,
    );
}

/** Host and port compared, the scheme's default port left out of both ("localhost:80" is "localhost"). */
function sameHost(origin: string, host: string): boolean {
  try {
    const from = new URL(origin);
    return from.host === new URL(`${from.protocol}//${host}`).host;
  } catch {
    return false; // "null" (a sandboxed page or a file) is no origin of ours either
  }
}

/** Resolves the caller from an API key or a session cookie; null when neither is valid. */
export async function authenticate(kit: Kit, req: FastifyRequest): Promise<Principal | null> {
  const key = bearerOrApiKey(req);
  if (key) {
    const p = await kit.apiKeys.verify(key);
    if (!p) kit.metrics.authFailures.inc({ kind: 'api_key' });
    return p;
  }
  const token = sessionCookie(req);
  if (token) {
    refuseCrossSite(req);
    const p = await kit.sessions.verify(token);
    if (!p) kit.metrics.authFailures.inc({ kind: 'session' });
    return p;
  }
  return null;
}

/** Credentials with the given scope on every route of `app` (routes with `config.public` opt out). */
export function requireScope(app: App, kit: Kit, scope: string): void {
  app.addHook('onRequest', async (req) => {
    if (req.routeOptions.config?.public) return;
    const principal = await authenticate(kit, req);
    if (!principal) {
      throw unauthorized(
        'missing or invalid credentials: send Authorization: Bearer <api key>, X-API-Key, or sign in',
      );
    }
    if (!hasScope(principal, scope)) {
      kit.metrics.authFailures.inc({ kind: 'scope' });
      throw forbidden(lacksScope(principal, scope));
    }
    req.principal = principal;
  });
}

/** Seed 003's API failure modes for one module's routes. Never on ops or admin routes. */
export function injectApiFailures(app: App, kit: Kit, module: string): void {
  app.addHook('onRequest', (req, reply, done) => {
    const mode = kit.chaos.mode(module, 'api');
    if (mode === 'db') {
      kit.chaos.record(module, 'api', mode, { url: req.url });
      // As a real outage answers, so clients tested against the drill meet what an outage sends.
      reply.header('retry-after', '5');
      return done(new HttpError(503, injectedDbMessage(kit.chaos.origin(module, 'api'))));
    }
    if (mode === 'random_500' && Math.random() < RANDOM_500_RATE) {
      kit.chaos.record(module, 'api', mode, { url: req.url });
      return done(
        new HttpError(500, `Internal Server Error (failure injected: ${kit.chaos.origin(module, 'api')})`),
      );
    }
    done();
  });
}

/** The hooks every module's routes run behind: credentials with the module's scope, then failure injection. */
export function guardModuleRoutes(app: App, kit: Kit, module: string, scope: string): void {
  // Marks each route with its module at registration: no per-request cost.
  app.addHook('onRoute', (route) => {
    route.config = { ...(route.config as object), module } as typeof route.config;
  });
  requireScope(app, kit, scope);
  injectApiFailures(app, kit, module);
}
