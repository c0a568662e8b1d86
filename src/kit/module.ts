// What a module is: a folder with its migrations, a setup that registers its jobs, crons and RPC
// service, and its routes. Modules reach each other only through `kit.rpc.client(<service>)`.
import type { App } from './http.ts';
import type { Kit } from './kit.ts';
import type { Logger } from './log.ts';

export interface ModuleContext extends Kit {
  /** This module's logger (module field set; DEBUG=tessera:<name>* raises it). */
  log: Logger;
}

export interface HealthCheck {
  name: string;
  check(): Promise<void>;
}

export interface TesseraModule {
  name: string;
  /** Scope an API key needs for this module's routes. */
  scope: string;
  /** Folder of numbered .sql migrations. */
  migrationsDir?: string;
  /** Runs in every role: define jobs and crons, register the RPC service, create metrics. */
  setup(ctx: ModuleContext): void | Promise<void>;
  /** Runs in roles that serve the API; routes sit behind auth and API failure injection. */
  routes?(app: App, ctx: ModuleContext): void | Promise<void>;
  /** Extra /health checks. */
  healthChecks?: HealthCheck[];
  /** Release what setup() acquired for this platform (a process may build several, as tests do). */
  stop?(ctx: ModuleContext): Promise<void>;
}

export function defineModule(m: TesseraModule): TesseraModule {
  return m;
}
