// Bench harness: servers run in child processes, autocannon drives load from this process, and
// every figure is printed next to the bare-Fastify ceiling measured in the same run.
import { type ChildProcess, spawn } from 'node:child_process';
import path from 'node:path';
import autocannon from 'autocannon';

export const ROOT = path.resolve(import.meta.dirname, '..');

export interface Server {
  url: string;
  proc: ChildProcess;
  stop(): Promise<void>;
}

/** Starts `node --import tsx <script> …args` and waits for its `LISTENING <url>` line. */
export async function startServer(
  script: string,
  args: string[] = [],
  env: Record<string, string> = {},
): Promise<Server> {
  const proc = spawn(process.execPath, ['--import', 'tsx', path.join(ROOT, script), ...args], {
    cwd: ROOT,
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const url = await new Promise<string>((resolve, reject) => {
    let buf = '';
    proc.stdout!.on('data', (d) => {
      buf += d;
      const m = buf.match(/LISTENING (\S+)/);
      if (m) resolve(m[1]!);
    });
    proc.on('exit', (code) => reject(new Error(`${script} exited ${code} before listening`)));
  });
  proc.stdout!.resume();
  return {
    url,
    proc,
    stop: () =>
      new Promise<void>((resolve) => {
        if (proc.exitCode !== null) return resolve();
        proc.on('exit', () => resolve());
        proc.kill('SIGTERM');
      }),
  };
}

export interface LoadResult {
  rps: number;
  p50: number;
  p99: number;
  errors: number;
  non2xx: number;
  total: number;
}

export interface LoadOptions {
  url: string;
  method?: 'GET' | 'POST' | 'PUT' | 'DELETE';
  headers?: Record<string, string>;
  body?: string;
  connections?: number;
  durationSec?: number;
  /** Fixed request rate (req/s) for latency-at-rate figures. */
  rate?: number;
  requests?: autocannon.Request[];
}

export async function load(opts: LoadOptions): Promise<LoadResult> {
  const result = await autocannon({
    url: opts.url,
    method: opts.method ?? 'GET',
    headers: opts.headers,
    body: opts.body,
    connections: opts.connections ?? 64,
    duration: opts.durationSec ?? Number(process.env.BENCH_SECONDS ?? 5),
    ...(opts.rate ? { overallRate: opts.rate } : {}),
    ...(opts.requests ? { requests: opts.requests } : {}),
  });
  return {
    rps: result.requests.average,
    p50: result.latency.p50,
    p99: result.latency.p99,
    errors: result.errors + result.timeouts,
    non2xx: result.non2xx,
    total: result.requests.total,
  };
}

export async function measureCeiling(method: 'GET' | 'POST' = 'GET'): Promise<LoadResult> {
  const ceiling = await startServer('bench/ceiling.ts');
  try {
    await load({ url: `${ceiling.url}/ceiling`, durationSec: 1 }); // warm-up
    return await load({
      url: `${ceiling.url}/ceiling`,
      method,
      headers: { 'content-type': 'application/json' },
      body: method === 'POST' ? '{}' : undefined,
    });
  } finally {
    await ceiling.stop();
  }
}

export interface Row {
  name: string;
  figure: number;
  unit: string;
  ceiling?: number;
  target?: string;
  pass?: boolean;
  note?: string;
}

export function printRows(title: string, rows: Row[]): void {
  process.stdout.write(`\n## ${title}\n`);
  process.stdout.write(
    '| benchmark | figure | ceiling | ratio | target | result |\n|---|---|---|---|---|---|\n',
  );
  for (const r of rows) {
    const ratio = r.ceiling ? (r.figure / r.ceiling).toFixed(2) : '';
    const result = r.pass === undefined ? '' : r.pass ? 'PASS' : 'MISS';
    const fmt = (n: number | undefined) =>
      n === undefined ? '' : `${Math.round(n).toLocaleString('en-US')} ${r.unit}`;
    process.stdout.write(
      `| ${r.name} | ${fmt(r.figure)} | ${fmt(r.ceiling)} | ${ratio} | ${r.target ?? ''} | ${result}${r.note ? ` (${r.note})` : ''} |\n`,
    );
  }
}
