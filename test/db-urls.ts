export const TEMPLATE_DB = 'tessera_template';

export function withDatabase(url: string, database: string): string {
  const u = new URL(url);
  u.pathname = `/${database}`;
  return u.toString();
}

/**
 * Names of this run's databases on a shared external server: `tessera_x<pid>_<time>_…`. Unique per
 * run, so concurrent runs against one server never drop each other's template or suites.
 */
export function externalRunPrefix(pid: number): string {
  return `tessera_x${pid}_${Date.now().toString(36)}_`;
}
