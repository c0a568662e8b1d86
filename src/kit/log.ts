// pino everywhere. Each line names its module and role. Formats:
//   json     pino's own JSON (msg holds the seed's event name, e.g. EVENT_INSERTED)
//   logstash @timestamp, @version, message, level — what seed 004's fluentd pipeline reads
//   pretty   `[ts] INFO [role:module] EVENT_INSERTED | userId="user_001"` (seed 003's plain form)
import { Writable } from 'node:stream';
import pino, { type DestinationStream, type Logger, type LoggerOptions } from 'pino';
import type { Config } from './config.ts';

export type { Logger };

const PRETTY_SKIP = new Set(['level', 'time', 'msg', 'module', 'role', 'pid', 'hostname']);

/** Seed 003's plain line. Synchronous so it interleaves correctly with process exit. */
export function formatPrettyLine(entry: Record<string, unknown>): string {
  const level = pino.levels.labels[entry.level as number]?.toUpperCase() ?? String(entry.level);
  const ts = new Date(entry.time as number).toISOString();
  const fields = Object.entries(entry)
    .filter(([k]) => !PRETTY_SKIP.has(k))
    .map(
      ([k, v]) => `${k}=${JSON.stringify(v instanceof Object && 'message' in v ? (v as Error).message : v)}`,
    );
  const where = [entry.role, entry.module].filter(Boolean).join(':');
  return `[${ts}] ${level} [${where}] ${entry.msg ?? ''}${fields.length ? ` | ${fields.join(' ')}` : ''}\n`;
}

function prettyStream(out: NodeJS.WritableStream): DestinationStream {
  return new Writable({
    write(chunk, _enc, done) {
      for (const line of String(chunk).split('\n')) {
        if (line) out.write(formatPrettyLine(JSON.parse(line)));
      }
      done();
    },
  });
}

function formatOptions(format: Config['logFormat'], role: string): LoggerOptions {
  if (format !== 'logstash') return {};
  return {
    messageKey: 'message',
    timestamp: () => `,"@timestamp":"${new Date().toISOString()}"`,
    base: { role, '@version': '1' },
    formatters: { level: (label) => ({ level: label.toUpperCase() }) },
  };
}

export interface LogOptions {
  level: Config['logLevel'];
  format: Config['logFormat'];
  debug: string;
  role: string;
  destination?: NodeJS.WritableStream;
}

export function createRootLogger(opts: LogOptions): Logger {
  const out = opts.destination ?? process.stdout;
  const stream = opts.format === 'pretty' ? prettyStream(out) : (out as DestinationStream);
  const logger = pino(
    {
      level: opts.level,
      base: { role: opts.role },
      serializers: { err: pino.stdSerializers.err },
      ...formatOptions(opts.format, opts.role),
    },
    stream,
  );
  debugPatterns.set(logger, parseDebug(opts.debug));
  return logger;
}

/** `DEBUG=tessera:codes*,tessera:kit:db` → regexes matched against `tessera:<module>`. */
function parseDebug(debug: string): RegExp[] {
  return debug
    .split(/[\s,]+/)
    .filter(Boolean)
    .map((p) => new RegExp(`^${p.replace(/[.+?^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '.*')}$`));
}

const debugPatterns = new WeakMap<Logger, RegExp[]>();
const moduleChildren = new WeakMap<Logger, Map<string, Logger>>();

/**
 * The logger for one module, the kit's own parts included (`kit`, `http`, `rpc`, `jobs`, `chaos`,
 * `health`, `migrate`): every line names its module, and DEBUG namespaces (`tessera:codes*`,
 * `tessera*`) raise exactly the modules they match. One child per root and module, so calling this
 * on an error path allocates nothing.
 */
export function moduleLogger(root: Logger, module: string): Logger {
  let children = moduleChildren.get(root);
  if (!children) {
    children = new Map();
    moduleChildren.set(root, children);
  }
  const cached = children.get(module);
  if (cached) return cached;
  const child = root.child({ module });
  const patterns = debugPatterns.get(root) ?? [];
  if (patterns.some((re) => re.test(`tessera:${module}`)) && child.levelVal > pino.levels.values.debug!) {
    child.level = 'debug';
  }
  debugPatterns.set(child, patterns);
  children.set(module, child);
  return child;
}
