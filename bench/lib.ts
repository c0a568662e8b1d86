// Bench harness: servers run in child processes, autocannon drives load from this process, and
// every figure is printed next to the bare-Fastify ceiling measured in the same run.
import { type ChildProcess, spawn } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
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
  // BENCH_PROFILE=<dir>: every server writes a V8 CPU profile there when it exits (for `--cpu-prof`).
  const profile = process.env.BENCH_PROFILE
    ? ['--cpu-prof', `--cpu-prof-dir=${process.env.BENCH_PROFILE}`]
    : [];
  // BENCH_NODE_FLAGS: node options for every server, for A/B runs (e.g. `--allocation-site-pretenuring`).
  const nodeFlags = process.env.BENCH_NODE_FLAGS?.split(/\s+/).filter(Boolean) ?? [];
  const proc = spawn(
    process.execPath,
    [...profile, ...nodeFlags, '--import', 'tsx', path.join(ROOT, script), ...args],
    {
      cwd: ROOT,
      env: { ...process.env, ...env },
      stdio: ['ignore', 'pipe', 'inherit'],
    },
  );
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

/** A bare Fastify server kept up through a benchmark, so each figure gets a ceiling beside it. */
export function startCeiling(): Promise<Server> {
  return startServer('bench/ceiling.ts');
}

/**
 * Unmeasured load on the ceiling and on the figure before their slices. A route's first seconds in
 * a fresh server include JIT compilation and each pooled connection's first plan of its
 * statements: with 1 s, reserve cost 106 µs of server CPU a request in a fresh server's first
 * measurement and 80 µs in the next one on the same server; with 3 s, 85 µs the first time.
 */
const WARM_UP_SEC = 3;

/** WARM_UP_SEC of `opts`' load, unmeasured: run it before a figure measured without a ceiling. */
export function warmUp(opts: LoadOptions): Promise<LoadResult> {
  return load({ ...opts, durationSec: WARM_UP_SEC });
}

/**
 * A figure and its ceiling measured interleaved, in ROUNDS slices each (ceiling, figure, ceiling,
 * figure, …), driven alike: same method, headers, body and request generator. The speed of a
 * shared 2-core VM drifts by a third over minutes, so a ceiling measured once at the start of a
 * run and a figure measured minutes later compare two different machines; slices side by side
 * compare the same one.
 */
export async function againstCeiling(
  ceiling: Server,
  figure: LoadOptions,
  rounds = 3,
): Promise<{ figure: LoadResult; ceiling: LoadResult; served: number; gc: string }> {
  const seconds = figure.durationSec ?? Number(process.env.BENCH_SECONDS ?? 5);
  const slice = Math.max(1, Math.round(seconds / rounds));
  const bare: LoadOptions = { ...figure, url: `${ceiling.url}/ceiling` };
  await warmUp(bare);
  const warm = await warmUp(figure);
  const gcBefore = await gcCounters(figure.url);
  const c: LoadResult[] = [];
  const f: LoadResult[] = [];
  for (let r = 0; r < rounds; r++) {
    c.push(await load({ ...bare, durationSec: slice }));
    f.push(await load({ ...figure, durationSec: slice }));
  }
  const gc = gcNote(gcBefore, await gcCounters(figure.url), slice * rounds);
  const result = combine(f);
  // `served`: every request the figure's server answered here, warm-up included. CPU read around
  // this call is divided by it: divided by the measured slices alone, it was ~1/6 too high.
  return { figure: result, ceiling: combine(c), served: result.total + warm.total, gc };
}

/** The server's GC totals by kind (prom-client's `nodejs_gc_duration_seconds` on its /metrics). */
async function gcCounters(url: string): Promise<Map<string, number> | undefined> {
  try {
    const res = await fetch(new URL('/metrics', url));
    if (!res.ok) return undefined;
    const totals = new Map<string, number>();
    for (const line of (await res.text()).split('\n')) {
      const m = /^nodejs_gc_duration_seconds_(sum|count)\{[^}]*kind="(\w+)"[^}]*\} (\S+)$/.exec(line);
      if (m) totals.set(`${m[1]}:${m[2]}`, Number(m[3]));
    }
    return totals;
  } catch {
    return undefined;
  }
}

/**
 * The server's GC while the figure was measured, so a figure whose server fell into the slow GC
 * mode (docs/PERFORMANCE.md) says so: GET of a code showed GC pauses in 15–17% of the load's time
 * and 3 major GCs in slow processes, 3% and none in the others. The ceiling's slices are idle
 * time for this server and add little.
 */
function gcNote(
  before: Map<string, number> | undefined,
  after: Map<string, number> | undefined,
  loadSec: number,
) {
  if (!before || !after) return 'GC not read';
  const delta = (key: string) => (after.get(key) ?? 0) - (before.get(key) ?? 0);
  const seconds = [...after.keys()].filter((k) => k.startsWith('sum:')).reduce((a, k) => a + delta(k), 0);
  return `GC ${Math.round((100 * seconds) / loadSec)}% of the load's time, ${delta('count:major')} major`;
}

/** Slices of one load as one: mean rate, worst p99, median p50, summed failures. */
function combine(parts: LoadResult[]): LoadResult {
  const total = parts.reduce((a, p) => a + p.total, 0);
  const p50s = parts.map((p) => p.p50).sort((a, b) => a - b);
  return {
    rps: parts.reduce((a, p) => a + p.rps, 0) / parts.length,
    p50: p50s[Math.floor(p50s.length / 2)]!,
    p99: Math.max(...parts.map((p) => p.p99)),
    errors: parts.reduce((a, p) => a + p.errors, 0),
    non2xx: parts.reduce((a, p) => a + p.non2xx, 0),
    total,
  };
}

export interface RateResult {
  rate: number;
  p50: number;
  p99: number;
  max: number;
  errors: number;
}

/**
 * Latency at a fixed request rate, open loop: request i is due at start + i/rate and its latency
 * counts from that moment, so a stall delays (and is charged to) every request behind it, as wrk2
 * does. autocannon's rate mode sends in bursts and shows a bare Fastify route at p99 7–23 ms at
 * 1,000 req/s on a 2-core machine, which measures the generator, not the server.
 */
export async function latencyAtRate(opts: {
  url: string;
  rate: number;
  durationSec?: number;
  /** Run at the rate this long first, unrecorded, on the same connections (JIT, pools, sockets). */
  warmupSec?: number;
  headers?: Record<string, string>;
  path?: () => string;
}): Promise<RateResult> {
  const base = new URL(opts.url);
  const agent = new http.Agent({ keepAlive: true, maxSockets: 64 });
  const warmup = Math.round(opts.rate * (opts.warmupSec ?? 1));
  const total = Math.round(opts.rate * (opts.durationSec ?? Number(process.env.BENCH_SECONDS ?? 5)));
  const latencies = new Float64Array(total);
  let errors = 0;
  const start = performance.now() + 20;
  const measuredFrom = start + (warmup * 1000) / opts.rate;
  const one = (i: number) =>
    new Promise<void>((resolve) => {
      const due = start + (i * 1000) / opts.rate;
      const done = (failed: boolean) => {
        if (i < warmup) return resolve();
        if (failed) errors++;
        latencies[i - warmup] = performance.now() - due;
        resolve();
      };
      const req = http.request(
        {
          agent,
          host: base.hostname,
          port: base.port,
          path: opts.path ? opts.path() : base.pathname + base.search,
          headers: opts.headers,
        },
        (res) => {
          res.resume();
          res.on('end', () => done(res.statusCode! >= 400));
        },
      );
      req.on('error', () => done(true));
      req.end();
    });
  const pending: Promise<void>[] = [];
  for (let i = 0; i < warmup + total; i++) {
    // Never early: a late send (timer granularity) is charged to the figure, as wrk2 does.
    const wait = start + (i * 1000) / opts.rate - performance.now();
    if (wait > 0) await sleep(wait);
    pending.push(one(i));
  }
  await Promise.all(pending);
  const elapsed = (performance.now() - measuredFrom) / 1000;
  agent.destroy();
  const sorted = Array.from(latencies).sort((a, b) => a - b);
  // Nearest rank: the q-quantile of n samples is the ceil(q·n)-th smallest. (floor(q·n) read one
  // rank too high: the "p99" of 100 samples was their maximum.)
  const at = (q: number) => Math.round(sorted[Math.max(0, Math.ceil(q * total) - 1)]! * 100) / 100;
  return { rate: total / elapsed, p50: at(0.5), p99: at(0.99), max: at(1), errors };
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
      n === undefined
        ? ''
        : r.unit === 'ms'
          ? `${n.toFixed(2)} ms`
          : `${Math.round(n).toLocaleString('en-US')} ${r.unit}`;
    process.stdout.write(
      `| ${r.name} | ${fmt(r.figure)} | ${fmt(r.ceiling)} | ${ratio} | ${r.target ?? ''} | ${result}${r.note ? ` (${r.note})` : ''} |\n`,
    );
  }
}

/** utime, stime, cutime, cstime of a /proc/<pid>/stat line, and its parent pid. */
function procStat(pid: string): { ppid: number; ticks: number } | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return { ppid: Number(f[1]), ticks: Number(f[11]) + Number(f[12]) + Number(f[13]) + Number(f[14]) };
  } catch {
    return undefined;
  }
}

/**
 * CPU seconds used so far by a process and all its descendants (finished ones included, through
 * cutime/cstime). Unlike wall time, this does not move when other work shares the machine, so it
 * gives a cost per operation that holds on a busy box: read before and after, and divide.
 */
export function treeCpuSeconds(root: number): number {
  const stats = new Map<number, { ppid: number; ticks: number }>();
  for (const d of readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    const st = procStat(d);
    if (st) stats.set(Number(d), st);
  }
  let ticks = 0;
  const visit = (pid: number) => {
    const st = stats.get(pid);
    if (!st) return;
    ticks += st.ticks;
    for (const [child, c] of stats) if (c.ppid === pid) visit(child);
  };
  visit(root);
  return ticks / 100;
}

/** The postmaster's pid of the PostgreSQL server behind `databaseUrl` (must be on this machine). */
export async function postmasterPid(databaseUrl: string): Promise<number | undefined> {
  const { default: pg } = await import('pg');
  const client = new pg.Client({ connectionString: databaseUrl });
  await client.connect();
  try {
    const { rows } = await client.query<{ dir: string }>(`SELECT current_setting('data_directory') AS dir`);
    return Number(readFileSync(`${rows[0]!.dir}/postmaster.pid`, 'utf8').split('\n')[0]);
  } catch {
    return undefined;
  } finally {
    await client.end();
  }
}

export interface CpuSnapshot {
  node: number;
  pg: number;
}

/**
 * CPU seconds of a server process tree and of its PostgreSQL so far. `cost(before, after, n)`
 * turns two snapshots into µs per operation, e.g. "41 + 23 µs" (server + PostgreSQL).
 */
export async function cpuMeter(serverPids: number[], databaseUrl: string) {
  const pg = await postmasterPid(databaseUrl);
  const snap = (): CpuSnapshot => ({
    node: serverPids.reduce((a, pid) => a + treeCpuSeconds(pid), 0),
    pg: pg ? treeCpuSeconds(pg) : 0,
  });
  const cost = (a: CpuSnapshot, b: CpuSnapshot, n: number) =>
    `${(((b.node - a.node) * 1e6) / n).toFixed(0)} + ${(((b.pg - a.pg) * 1e6) / n).toFixed(0)} µs CPU per op (server + PostgreSQL)`;
  return { snap, cost };
}

/**
 * Checkpoints, then waits until no autovacuum worker runs in the benchmark's database (at most
 * `maxSec`): after a bulk load of millions of rows PostgreSQL writes them out, vacuums and analyzes
 * them for a while, and figures taken meanwhile measure that, not the steady state. Returns the
 * seconds waited.
 */
export async function autovacuumSettled(pool: import('pg').Pool, maxSec = 600): Promise<number> {
  const t0 = Date.now();
  // Write the bulk load's dirty pages now rather than under the next measurement.
  await pool.query('CHECKPOINT');
  let quiet = 0;
  while (quiet < 3 && Date.now() - t0 < maxSec * 1000) {
    const { rows } = await pool.query<{ n: number }>(
      `SELECT count(*)::int AS n FROM pg_stat_activity
       WHERE backend_type = 'autovacuum worker' AND datname = current_database()`,
    );
    quiet = rows[0]!.n === 0 ? quiet + 1 : 0;
    await sleep(1000);
  }
  return Math.round((Date.now() - t0) / 1000);
}
