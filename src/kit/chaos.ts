// Failure injection (seed 003's modes) as a kit piece: API modes run as a hook on module routes,
// worker and cron modes inside the job and cron wrappers. Defaults come from config; an admin call
// stores overrides in PostgreSQL so every process (api, worker, scheduler) picks them up in ~1 s.
import { API_FAILURE_MODES, type Config, CRON_FAILURE_MODES, WORKER_FAILURE_MODES } from './config.ts';
import type { Pool } from './db.ts';
import { type Logger, moduleLogger } from './log.ts';
import type { KitMetrics } from './metrics.ts';

export type ApiMode = (typeof API_FAILURE_MODES)[number];
export type WorkerMode = (typeof WORKER_FAILURE_MODES)[number];
export type CronMode = (typeof CRON_FAILURE_MODES)[number];
export interface Modes {
  api: ApiMode;
  worker: WorkerMode;
  cron: CronMode;
}
export type ModeKind = keyof Modes;
export const MODE_VALUES = { api: API_FAILURE_MODES, worker: WORKER_FAILURE_MODES, cron: CRON_FAILURE_MODES };
export const ALL_MODULES = '*';

/** Seed 003's figures. */
export const RANDOM_500_RATE = 0.3;
export const BAD_SCHEMA_RATE = 0.5;
export const SLOW_WORKER_MS = 5000;
export const CRON_TIMEOUT_MS = 30000;

/**
 * What an injected database outage says, as a thrown connection error (cron) or an API's 503.
 * `origin`: Chaos#origin, where the mode was set, so the message says where to turn it off.
 */
export const injectedDbMessage = (origin: string) => `database unavailable (failure injected: ${origin})`;

export class InjectedDbError extends Error {
  readonly code = 'ECONNREFUSED';
  constructor(origin: string) {
    super(injectedDbMessage(origin));
  }
}

/** The setting each kind of mode starts from. */
export const MODE_SETTINGS: Record<ModeKind, string> = {
  api: 'API_FAILURE_MODE',
  worker: 'WORKER_FAILURE_MODE',
  cron: 'CRON_FAILURE_MODE',
};

type OverrideRow = { module: string } & Partial<Modes>;

/** A stored override as `tessera chaos list` shows it: the modes a module's row sets, and when it last changed. */
export interface StoredOverride {
  module: string;
  modes: Partial<Modes>;
  updatedAt: Date;
}

/**
 * The command that clears the run-time override of `module` straight in the database, for when the
 * API that serves DELETE /api/admin/chaos cannot start: a worker `crash` stored at run time stops
 * every process running the worker at start, which in the default one-process deployment is the API.
 */
export const clearCommand = (module: string) =>
  `tessera chaos clear --module ${module === ALL_MODULES ? "'*'" : module}`;

/** The overrides stored in `pool`'s database (what every process applies), by module. */
export async function listOverrides(pool: Pool): Promise<StoredOverride[]> {
  const { rows } = await pool.query<OverrideRow & { updated_at: Date }>(
    'SELECT module, api, worker, cron, updated_at FROM tessera_chaos ORDER BY module',
  );
  return rows.map((r) => ({ module: r.module, modes: modesOf(r), updatedAt: r.updated_at }));
}

/**
 * Removes the stored overrides, every one or (`module`) that module's row only (`*` is the row
 * for every module, not a wildcard); answers the removed ones by module, as stored. What DELETE
 * /api/admin/chaos (through Chaos#clear) and `tessera chaos clear` run.
 */
export async function clearOverrides(pool: Pool, module?: string): Promise<Record<string, Partial<Modes>>> {
  const { rows } = await pool.query<OverrideRow>(
    'DELETE FROM tessera_chaos WHERE $1::text IS NULL OR module = $1 RETURNING module, api, worker, cron',
    [module ?? null],
  );
  return Object.fromEntries(byModule(rows));
}

function modesOf(r: Partial<Modes>): Partial<Modes> {
  const modes: Partial<Modes> = {};
  if (r.api) modes.api = r.api;
  if (r.worker) modes.worker = r.worker;
  if (r.cron) modes.cron = r.cron;
  return modes;
}

/** Stored override rows as module → the modes it sets (a null column sets nothing). */
function byModule(rows: OverrideRow[]): Map<string, Partial<Modes>> {
  const out = new Map<string, Partial<Modes>>();
  for (const r of rows) out.set(r.module, modesOf(r));
  return out;
}

export class Chaos {
  private overrides = new Map<string, Partial<Modes>>();
  private timer?: NodeJS.Timeout;
  readonly defaults: Modes;

  /** Where the defaults came from, for Chaos#origin: the config file's path, or the environment. */
  private readonly defaultsFile?: string;
  private readonly defaultsFromFile: Set<string>;

  constructor(
    config: Pick<Config, 'apiFailureMode' | 'workerFailureMode' | 'cronFailureMode'> &
      Partial<Pick<Config, 'configFile' | 'fromFile'>>,
    /** The root logger: an injected failure is logged as a line of the module it hits. */
    private readonly log: Logger,
    private readonly metrics: KitMetrics,
  ) {
    this.defaults = {
      api: config.apiFailureMode,
      worker: config.workerFailureMode,
      cron: config.cronFailureMode,
    };
    this.defaultsFile = config.configFile;
    this.defaultsFromFile = new Set(config.fromFile ?? []);
  }

  /**
   * Where the mode in force for `module` and `kind` was set, for messages and logs of an injected
   * failure: an operator has to know whether to clear a run-time override or change the
   * environment or config file (which DELETE /api/admin/chaos does not touch).
   */
  origin(module: string, kind: ModeKind): string {
    const mode = this.mode(module, kind);
    const row = this.overrides.get(module)?.[kind]
      ? module
      : this.overrides.get(ALL_MODULES)?.[kind]
        ? ALL_MODULES
        : undefined;
    if (row === undefined) {
      const setting = `${MODE_SETTINGS[kind]}=${mode}`;
      return this.defaultsFromFile.has(MODE_SETTINGS[kind]) && this.defaultsFile
        ? `${setting} in the config file ${this.defaultsFile}`
        : `${setting} in the environment`;
    }
    const target = row === ALL_MODULES ? 'every module (*)' : `module "${module}"`;
    const set = `${kind}=${mode} set at run time for ${target} by POST /api/admin/chaos`;
    // An api mode is met through the API, which can take the DELETE. A worker or cron mode may be met
    // where no API answers: a worker `crash` stops a one-process deployment (its API too) at start.
    if (kind === 'api') return `${set}; DELETE /api/admin/chaos clears it`;
    return `${set}; DELETE /api/admin/chaos clears it, or \`${clearCommand(row)}\` when no API answers`;
  }

  mode<K extends ModeKind>(module: string, kind: K): Modes[K] {
    return (this.overrides.get(module)?.[kind] ??
      this.overrides.get(ALL_MODULES)?.[kind] ??
      this.defaults[kind]) as Modes[K];
  }

  /** Counts and logs an injected failure under seed 003's event names. */
  record(module: string, kind: ModeKind, mode: string, extra: Record<string, unknown> = {}): void {
    this.metrics.failuresInjected.inc({ module, kind, mode });
    const event = kind === 'api' ? 'API_FAILURE_INJECTED' : 'FAILURE_INJECTION';
    moduleLogger(this.log, module).warn({ kind, mode, origin: this.origin(module, kind), ...extra }, event);
  }

  snapshot() {
    return { defaults: this.defaults, overrides: Object.fromEntries(this.overrides) };
  }

  async set(pool: Pool, module: string, modes: Partial<Modes>): Promise<void> {
    await pool.query(
      `INSERT INTO tessera_chaos (module, api, worker, cron) VALUES ($1, $2, $3, $4)
       ON CONFLICT (module) DO UPDATE SET api = coalesce($2, tessera_chaos.api),
         worker = coalesce($3, tessera_chaos.worker), cron = coalesce($4, tessera_chaos.cron), updated_at = now()`,
      [module, modes.api ?? null, modes.worker ?? null, modes.cron ?? null],
    );
    await this.refresh(pool);
  }

  /**
   * Removes every override, or `module`'s (clearOverrides); returns the ones removed, as stored
   * (another process may have set one this one has not seen yet).
   */
  async clear(pool: Pool, module?: string): Promise<Record<string, Partial<Modes>>> {
    const cleared = await clearOverrides(pool, module);
    await this.refresh(pool);
    return cleared;
  }

  async refresh(pool: Pool): Promise<void> {
    const { rows } = await pool.query<OverrideRow>(
      'SELECT module, api, worker, cron FROM tessera_chaos ORDER BY module',
    );
    const overrides = byModule(rows);
    const applied = Object.fromEntries(overrides);
    // Each process logs the overrides it now applies, once per change: the runbook reads from these
    // lines which processes have picked up a POST or DELETE of /api/admin/chaos (about a second).
    if (JSON.stringify(applied) !== JSON.stringify(Object.fromEntries(this.overrides)))
      moduleLogger(this.log, 'chaos').info({ overrides: applied }, 'FAILURE_MODES_APPLIED');
    this.overrides = overrides;
  }

  /** Poll rather than LISTEN: one tiny query a second survives database restarts with no reconnect logic. */
  startSync(pool: Pool, intervalMs = 1000): void {
    this.timer = setInterval(() => this.refresh(pool).catch(() => undefined), intervalMs);
    this.timer.unref();
  }

  stopSync(): void {
    clearInterval(this.timer);
  }
}
