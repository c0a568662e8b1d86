// Optional error reporting (Sentry) and tracing (OpenTelemetry over OTLP/HTTP). Each switches on
// only when configured, loads its packages lazily, and never breaks a start: a failure to set up
// is logged as TELEMETRY_DISABLED and Tessera runs on without it.
//
// Spans are made by the kit itself (one per HTTP request, job and RPC call) rather than by
// monkey-patching instrumentations, which need loader hooks under ESM; explicit spans work the same
// under tsx, in containers and in tests.
import type { Span, Tracer } from '@opentelemetry/api';
import type { Config } from './config.ts';
import type { Logger } from './log.ts';

export interface Telemetry {
  captureException?: (err: unknown) => void;
  tracer?: Tracer;
  shutdown(): Promise<void>;
}

/** Sentry logs and ignores a malformed DSN; we want to say so once, plainly. */
function checkDsn(dsn: string): void {
  let url: URL;
  try {
    url = new URL(dsn);
  } catch {
    throw new Error('SENTRY_DSN is not a URL (expected https://<key>@<host>/<project>)');
  }
  if (!url.username || !/\/\d+$/.test(url.pathname))
    throw new Error('SENTRY_DSN needs a key and a project id: https://<key>@<host>/<project>');
}

async function startSentry(dsn: string, config: Config, version: string) {
  checkDsn(dsn);
  const Sentry = await import('@sentry/node');
  const client = Sentry.init({
    dsn,
    environment: config.nodeEnv,
    release: `tessera@${version}`,
    // Tracing goes through OpenTelemetry when configured; Sentry reports errors only.
    tracesSampleRate: 0,
    defaultIntegrations: false,
    // Our own tracer provider (below) owns OpenTelemetry; Sentry must not register a global one.
    skipOpenTelemetrySetup: true,
  });
  if (!client) throw new Error('Sentry.init returned no client (is the DSN valid?)');
  return {
    capture: (err: unknown) => void Sentry.captureException(err),
    close: () => Sentry.close(2000).then(() => undefined),
  };
}

async function startTracing(endpoint: string, role: string, version: string) {
  const [{ NodeTracerProvider, BatchSpanProcessor }, { OTLPTraceExporter }] = await Promise.all([
    import('@opentelemetry/sdk-trace-node'),
    import('@opentelemetry/exporter-trace-otlp-http'),
  ]);
  const { resourceFromAttributes } = await import('@opentelemetry/resources');
  const exporter = new OTLPTraceExporter({ url: `${endpoint.replace(/\/$/, '')}/v1/traces` });
  const provider = new NodeTracerProvider({
    resource: resourceFromAttributes({
      'service.name': 'tessera',
      'service.version': version,
      'tessera.role': role,
    }),
    spanProcessors: [new BatchSpanProcessor(exporter, { scheduledDelayMillis: 1000 })],
  });
  // The tracer comes from our provider, not the global API, so another library's global provider
  // (Sentry registers one) cannot swallow our spans.
  provider.register();
  return { tracer: provider.getTracer('tessera', version), close: () => provider.shutdown() };
}

export async function startTelemetry(
  config: Config,
  role: string,
  version: string,
  log: Logger,
): Promise<Telemetry> {
  const closers: (() => Promise<void>)[] = [];
  const telemetry: Telemetry = {
    shutdown: async () => void (await Promise.allSettled(closers.map((c) => c()))),
  };
  if (config.sentryDsn) {
    try {
      const sentry = await startSentry(config.sentryDsn, config, version);
      telemetry.captureException = sentry.capture;
      closers.push(sentry.close);
      log.info({ module: 'telemetry' }, 'SENTRY_ENABLED');
    } catch (err) {
      log.warn({ module: 'telemetry', err }, 'TELEMETRY_DISABLED');
    }
  }
  if (config.otelEndpoint) {
    try {
      const tracing = await startTracing(config.otelEndpoint, role, version);
      telemetry.tracer = tracing.tracer;
      closers.push(tracing.close);
      log.info({ module: 'telemetry', endpoint: config.otelEndpoint }, 'TRACING_ENABLED');
    } catch (err) {
      log.warn({ module: 'telemetry', err }, 'TELEMETRY_DISABLED');
    }
  }
  return telemetry;
}

/** Runs fn inside a span when tracing is on; a plain call otherwise. */
export async function traced<T>(
  tracer: Tracer | undefined,
  name: string,
  attrs: Record<string, string | number>,
  fn: (span?: Span) => Promise<T>,
): Promise<T> {
  if (!tracer) return fn();
  return tracer.startActiveSpan(name, { attributes: attrs }, async (span) => {
    try {
      return await fn(span);
    } catch (err) {
      span.recordException(err as Error);
      span.setStatus({ code: 2, message: (err as Error).message });
      throw err;
    } finally {
      span.end();
    }
  });
}
