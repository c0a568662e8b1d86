// `tessera chaos list|clear`: the failure-injection overrides stored in PostgreSQL, read and cleared
// straight in the database. The way out when the API that serves DELETE /api/admin/chaos cannot
// start: a worker `crash` stored at run time stops every process running the worker at start, and
// in the default one-process deployment that is the API too.
import type { Command } from 'commander';
import { type Chaos, listOverrides, MODE_SETTINGS, type ModeKind, type Modes } from '../kit/chaos.ts';
import type { Kit } from '../kit/kit.ts';

type WithKit = <T>(fn: (kit: Kit) => Promise<T>) => Promise<T>;

const KINDS: ModeKind[] = ['api', 'worker', 'cron'];

/** `worker=crash cron=db_fail`: the modes a stored row sets. */
const describeModes = (modes: Partial<Modes>) =>
  KINDS.filter((k) => modes[k])
    .map((k) => `${k}=${modes[k]}`)
    .join(' ');

/**
 * The modes this command's own configuration (environment or config file) sets other than none:
 * a process started with the same settings applies them, which clearing overrides does not change.
 */
function configuredModes(chaos: Chaos): string[] {
  return KINDS.filter((k) => chaos.defaults[k] !== 'none').map(
    (k) => `${MODE_SETTINGS[k]}=${chaos.defaults[k]}`,
  );
}

const time = (d: Date) => d.toISOString().slice(0, 19).replace('T', ' ');

export function registerChaosCommands(program: Command, withKit: WithKit): void {
  const chaos = program
    .command('chaos')
    .description(
      'list or clear the failure-injection overrides stored in the database (POST /api/admin/chaos), with no server needed',
    );

  chaos
    .command('list')
    .description(
      'list the stored overrides every process applies: module, api, worker, cron, last change (UTC)',
    )
    .action(async () => {
      const { rows, configured } = await withKit(async (kit) => ({
        rows: await listOverrides(kit.pool),
        configured: configuredModes(kit.chaos),
      }));
      const lines = rows.map((r) =>
        [r.module, ...KINDS.map((k) => r.modes[k] ?? '-'), time(r.updatedAt)].join('\t'),
      );
      process.stdout.write(['module\tapi\tworker\tcron\tupdated', ...lines].join('\n') + '\n');
      process.stderr.write(
        rows.length === 0
          ? 'no failure-injection overrides are stored\n'
          : 'stored overrides win over API_FAILURE_MODE, WORKER_FAILURE_MODE and CRON_FAILURE_MODE; `tessera chaos clear [--module M]` removes them\n',
      );
      if (configured.length > 0)
        process.stderr.write(
          `this environment also sets ${configured.join(', ')} (not stored; unset it to stop it)\n`,
        );
    });

  chaos
    .command('clear')
    .description(
      "remove stored overrides (all, or one module's row): DELETE /api/admin/chaos for when no API answers, as when a worker crash set at run time stops `tessera start`",
    )
    .option(
      '--module <module>',
      "only this module's row (* is the row for every module, quote it in a shell)",
    )
    .action(async (opts: { module?: string }) => {
      const { cleared, remaining, configured } = await withKit(async (kit) => {
        // The function DELETE /api/admin/chaos runs.
        const cleared = await kit.chaos.clear(kit.pool, opts.module);
        return {
          cleared,
          remaining: await listOverrides(kit.pool),
          configured: configuredModes(kit.chaos),
        };
      });
      const removed = Object.entries(cleared);
      for (const [module, modes] of removed)
        process.stdout.write(`cleared ${module}: ${describeModes(modes) || '(no modes)'}\n`);
      if (removed.length > 0)
        process.stderr.write(
          'running processes drop it within about a second; the next start no longer applies it\n',
        );
      else if (remaining.length === 0) process.stderr.write('no overrides are stored; nothing to clear\n');
      else {
        // Likely a misspelt module: the override the operator means to remove is still in force.
        const stored = remaining.map((r) => `${r.module} (${describeModes(r.modes)})`).join(', ');
        throw new Error(
          `no override is stored for module "${opts.module}"; stored: ${stored}. \`tessera chaos list\` shows them; \`tessera chaos clear\` with no --module removes all`,
        );
      }
      if (configured.length > 0)
        process.stderr.write(
          `this environment still sets ${configured.join(', ')}: a process started with it applies that mode; unset it to stop it\n`,
        );
    });
}
