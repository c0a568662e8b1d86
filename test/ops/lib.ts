// Helpers for the operations suites: YAML/JSON loading, optional system binaries (skip with a
// reason when absent; CI installs them), a live Tessera's metric names, and PromQL name extraction.
import { spawnSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { parseAllDocuments, parse as parseYaml } from 'yaml';
import { freshDatabase, ROOT, spawnTessera } from '../helpers.ts';

export { ROOT };
export const DEPLOY = path.join(ROOT, 'deploy');

export function read(rel: string): string {
  return readFileSync(path.join(ROOT, rel), 'utf8');
}

/** One YAML document; `<<` merge keys resolved (compose uses them). */
export function yamlFile(rel: string): any {
  return parseYaml(read(rel), { merge: true });
}

export function yamlDocs(text: string): any[] {
  return parseAllDocuments(text).map((d) => {
    if (d.errors.length) throw new Error(d.errors.map((e) => e.message).join('; '));
    return d.toJS({ maxAliasCount: -1 });
  });
}

export function filesIn(relDir: string, ext: string): string[] {
  return readdirSync(path.join(ROOT, relDir))
    .filter((f) => f.endsWith(ext))
    .sort()
    .map((f) => path.join(relDir, f));
}

/** The path of a system binary, or undefined. */
export function which(bin: string): string | undefined {
  const r = spawnSync('sh', ['-c', `command -v ${bin}`], { encoding: 'utf8' });
  return r.status === 0 ? r.stdout.trim() : undefined;
}

/** `{ skip: reason }` when a Debian binary is missing (printed by node:test), else {}. */
export function needsBinary(bin: string, pkg: string): { skip?: string } {
  return which(bin) ? {} : { skip: `${bin} is not installed (Debian package ${pkg}; CI installs it)` };
}

/**
 * Metric families a real `tessera start` (every module) serves on /metrics, from its `# TYPE`
 * lines, with the series names histograms and summaries add.
 */
export async function liveMetricNames(): Promise<Set<string>> {
  const db = await freshDatabase();
  const t = await spawnTessera('all', { DATABASE_URL: db });
  await t.waitHealthy(30000);
  const text = await (await fetch(`${t.url}/metrics`)).text();
  await t.stop();
  return metricNamesFromExposition(text);
}

export function metricNamesFromExposition(text: string): Set<string> {
  const names = new Set<string>();
  for (const m of text.matchAll(/^# TYPE (\S+) (\S+)$/gm)) {
    const [, name, type] = m as unknown as [string, string, string];
    names.add(name);
    if (type === 'histogram') for (const s of ['_bucket', '_sum', '_count']) names.add(name + s);
    if (type === 'summary') for (const s of ['_sum', '_count']) names.add(name + s);
  }
  return names;
}

const PROMQL_WORDS = new Set([
  'and',
  'or',
  'unless',
  'by',
  'without',
  'on',
  'ignoring',
  'group_left',
  'group_right',
  'bool',
  'offset',
  'inf',
  'nan',
]);

/** Metric names a PromQL expression reads (functions, labels, strings and durations removed). */
export function metricNamesInPromQL(expr: string): string[] {
  const stripped = expr
    .replace(/"(?:[^"\\]|\\.)*"/g, '""')
    .replace(/'(?:[^'\\]|\\.)*'/g, "''")
    .replace(/\{[^}]*\}/g, '')
    .replace(/\[[^\]]*\]/g, '')
    .replace(/\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)/g, '');
  const out = new Set<string>();
  for (const m of stripped.matchAll(/[a-zA-Z_:][a-zA-Z0-9_:]*(\s*\()?/g)) {
    const word = m[0].replace(/\s*\($/, '');
    if (m[1]) continue; // a function call
    if (PROMQL_WORDS.has(word.toLowerCase())) continue;
    const before = stripped[(m.index ?? 0) - 1];
    if (before && /[0-9.$]/.test(before)) continue; // 1e3, $job, 5m leftovers
    out.add(word);
  }
  return [...out];
}
