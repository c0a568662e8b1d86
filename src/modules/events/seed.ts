// `tessera seed events --count 100 [--url URL] [--key KEY]`: seed 003's generate-seed-data script.
// Sends realistic events one request at a time to a running Tessera, with a progress bar.
import type { Command } from 'commander';
import { loadConfig } from '../../kit/config.ts';

const USERS = Array.from({ length: 10 }, (_, i) => `user_${String(i + 1).padStart(3, '0')}`);
const ACTIONS = ['page_view', 'click', 'signup', 'purchase', 'logout'];
/** This machine's Tessera at the PORT `tessera start` would read (environment, tessera.config.json). */
export function defaultSeedUrl(): string {
  let port = 3000;
  try {
    port = loadConfig().port || port;
  } catch {
    // A setting seeding does not use is wrong: `tessera start` will say which; seed the default port.
  }
  return `http://localhost:${port}/api/events`;
}
export const DEFAULT_KEY = 'test-api-key';

const pick = <T>(xs: T[]): T => xs[Math.floor(Math.random() * xs.length)]!;

export function seedEvent(i: number) {
  const action = pick(ACTIONS);
  return {
    userId: pick(USERS),
    action,
    timestamp: new Date(Date.now() - Math.floor(Math.random() * 3600_000)).toISOString(),
    properties: {
      seed: true,
      n: i,
      ...(action === 'purchase' ? { amount: 5 + Math.floor(Math.random() * 95) } : {}),
    },
  };
}

const EVENTS_PATH = '/api/events';

/**
 * The POST /api/events URL from --url: the server's base URL (`http://host:3000`) or seed 003's
 * form, the events URL itself. Anything else is refused before sending: `localhost:3251` parses as a
 * URL of scheme "localhost:" (and then "cannot reach" blamed the server), and a base URL with a
 * path (`…/api`) sent every event to a 404.
 */
export function eventsUrl(url: string): string {
  let u: URL | undefined;
  try {
    u = new URL(url);
  } catch {}
  if (!u || (u.protocol !== 'http:' && u.protocol !== 'https:'))
    throw new Error(
      `--url ${url} is not an http(s) URL: include the scheme, e.g. --url http://${url.replace(/^\/+/, '')}`,
    );
  const path = u.pathname.replace(/\/+$/, '');
  if (path !== '' && path !== EVENTS_PATH)
    throw new Error(
      `--url ${url} has the path ${u.pathname}: give the server's base URL (--url ${u.origin}) or its events URL (--url ${u.origin}${EVENTS_PATH})`,
    );
  u.pathname = EVENTS_PATH;
  return u.toString();
}

/** The closing line: how many of `count` the server accepted (201), and how the rest were answered. */
export function seedSummary(count: number, url: string, statuses: Map<number | string, number>): string {
  const accepted = statuses.get(201) ?? 0;
  const failed = [...statuses].filter(([s]) => s !== 201).map(([s, n]) => `${n}× ${s}`);
  if (failed.length === 0) return `sent ${count} events to ${url}: all ${accepted} accepted (201)`;
  return `${accepted} of ${count} events accepted by ${url}, ${count - accepted} failed (${failed.join(', ')})`;
}

function progress(out: NodeJS.WriteStream, done: number, total: number, failed: number): void {
  const width = 30;
  const filled = Math.round((done / total) * width);
  const line = `[${'#'.repeat(filled)}${'-'.repeat(width - filled)}] ${done}/${total}${failed ? ` (${failed} failed)` : ''}`;
  if (out.isTTY) out.write(`\r${line}`);
  else if (done === total || done % Math.max(1, Math.ceil(total / 10)) === 0) out.write(`${line}\n`);
}

export async function seedEvents(opts: {
  count: number;
  url: string;
  key: string;
}): Promise<{ accepted: number; failed: number }> {
  const url = eventsUrl(opts.url);
  const statuses = new Map<number | string, number>();
  let failed = 0;
  for (let i = 1; i <= opts.count; i++) {
    let status: number | string;
    try {
      const res = await fetch(url, {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: `Bearer ${opts.key}` },
        body: JSON.stringify(seedEvent(i)),
      });
      status = res.status;
      if (res.status === 401 || res.status === 403) {
        const body = (await res.json().catch(() => ({}))) as { message?: string };
        throw new Error(`${res.status} from ${url}: ${body.message ?? 'rejected'}; pass --key <API key>`);
      }
      await res.arrayBuffer();
    } catch (err) {
      if ((err as Error).message.includes('--key')) throw err;
      status = (err as { cause?: { code?: string } }).cause?.code ?? 'network error';
      if (i === 1)
        throw new Error(
          `cannot reach ${url} (${status}); is Tessera running there? pass --url http://host:port`,
        );
    }
    if (status !== 201) failed++;
    statuses.set(status, (statuses.get(status) ?? 0) + 1);
    progress(process.stderr, i, opts.count, failed);
  }
  if (process.stderr.isTTY) process.stderr.write('\n');
  process.stdout.write(`${seedSummary(opts.count, url, statuses)}\n`);
  return { accepted: opts.count - failed, failed };
}

export function registerSeedEvents(program: Command, positiveInt: (v: string) => number): void {
  const seed =
    program.commands.find((c) => c.name() === 'seed') ??
    program.command('seed').description('send sample data');
  seed
    .command('events')
    .description('send sample events to a running Tessera (seed 003)')
    .option('--count <n>', 'how many events', positiveInt, 20)
    .option(
      '--url <url>',
      'the server base URL (http://host:port) or its POST /api/events URL (default: http://localhost:<PORT>, the PORT `tessera start` reads, else 3000)',
    )
    .option('--key <key>', 'API key with the events scope', DEFAULT_KEY)
    .action(async (opts: { count: number; url?: string; key: string }) => {
      const { failed } = await seedEvents({ ...opts, url: opts.url ?? defaultSeedUrl() });
      if (failed) process.exitCode = 1;
    });
}
