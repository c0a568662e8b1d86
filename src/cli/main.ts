// The `tessera` command. Modules add their own subcommands through src/cli/commands.ts.
import { Command, InvalidArgumentError, Option } from 'commander';
import { createApiKey, createUser, DEFAULT_ACCOUNT, listApiKeys, revokeApiKey } from '../kit/auth.ts';
import {
  type Config,
  ConfigError,
  configMarkdownTable,
  loadConfig,
  ROLES,
  type Role,
} from '../kit/config.ts';
import { createKit, VERSION } from '../kit/kit.ts';
import { unlockLogin } from '../kit/login-throttle.ts';
import { UUID } from '../kit/text.ts';
import { allModules } from '../modules/index.ts';
import { runMigrations } from '../platform.ts';
import { registerChaosCommands } from './chaos.ts';
import { registerModuleCommands } from './commands.ts';
import { startCommand } from './start.ts';

/** Bad configuration is the user's to fix: say what and exit 2 before touching anything. */
function configOrExit(): Config {
  try {
    return loadConfig();
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`${err.message}\n`);
      process.exit(2);
    }
    throw err;
  }
}

/** Runs `fn` on a kit with migrations applied, then closes everything. For one-shot commands. */
export async function withKit<T>(fn: (kit: Awaited<ReturnType<typeof createKit>>) => Promise<T>): Promise<T> {
  const config = configOrExit();
  const kit = await createKit({
    config: { ...config, logLevel: config.logLevel === 'info' ? 'warn' : config.logLevel },
    role: 'all',
  });
  try {
    await runMigrations(kit, allModules());
    return await fn(kit);
  } finally {
    await kit.pool.end();
    await kit.nats?.close();
    await kit.embedded?.stop();
  }
}

const program = new Command('tessera')
  .description('Tessera: codes, sender, events and books on one runtime')
  .version(VERSION, '-V, --version')
  .showHelpAfterError();

program
  .command('start')
  .description('start Tessera (all roles in one process by default)')
  .addOption(new Option('--role <role>', 'which part to run').choices(ROLES as unknown as string[]))
  .action(async (opts: { role?: Role }) => {
    const config = configOrExit();
    const role = opts.role ?? config.role;
    // A split role on its own embedded PostgreSQL shares nothing with the other roles' processes:
    // it started "healthy", and the deployment ran on two databases without a word.
    if (role !== 'all' && !config.databaseUrl) {
      process.stderr.write(
        `the ${role} role runs beside other processes on one PostgreSQL: set DATABASE_URL (embedded PostgreSQL is only for --role all)\n`,
      );
      process.exit(2);
    }
    await startCommand(config, role);
  });

program
  .command('migrate')
  .description('apply database migrations (and create indexes), then exit')
  .action(async () => {
    await withKit(async () => undefined);
    process.stdout.write('migrations applied\n');
  });

const keys = program.command('keys').description('manage API keys');
keys
  .command('create')
  .description('create an API key; it is printed once and stored only as a hash')
  .requiredOption('--name <name>', 'who or what uses the key')
  .option('--scopes <scopes>', 'comma-separated: admin, codes, events, books, sender', 'admin')
  .option(
    '--account <account>',
    'the account whose sender data the key reaches (codes, events and books are shared)',
    DEFAULT_ACCOUNT,
  )
  .action(async (opts: { name: string; scopes: string; account: string }) => {
    const created = await withKit((kit) =>
      createApiKey(
        kit.pool,
        opts.name,
        opts.scopes.split(',').map((s) => s.trim()),
        { accountId: opts.account },
      ),
    );
    process.stdout.write(`${created.key}\n`);
    process.stderr.write(
      `key "${created.name}" (${created.scopes.join(',')}, account ${created.accountId}) created; it will not be shown again\n`,
    );
  });

keys
  .command('list')
  .description('list API keys, newest first (never the keys themselves): id, name, scopes, last use')
  .action(async () => {
    const rows = await withKit((kit) => listApiKeys(kit.pool));
    const day = (d: Date | null) => (d ? d.toISOString().slice(0, 19).replace('T', ' ') : '-');
    const lines = rows.map((k) =>
      [
        k.id,
        k.name,
        `${k.prefix}…`,
        k.scopes.join(','),
        k.accountId,
        day(k.createdAt),
        day(k.lastUsedAt),
        k.revokedAt ? `revoked ${day(k.revokedAt)}` : 'active',
      ].join('\t'),
    );
    process.stdout.write(
      ['id\tname\tprefix\tscopes\taccount\tcreated\tlast used\tstate', ...lines].join('\n') + '\n',
    );
  });
keys
  .command('revoke')
  .description('revoke an API key by id (from `keys list`); every process refuses it within seconds')
  .argument('<id>', 'the key id')
  .action(async (id: string) => {
    if (!UUID.test(id)) throw new Error(`"${id}" is not a key id; take one from \`tessera keys list\``);
    const revoked = await withKit((kit) => revokeApiKey(kit.pool, id));
    if (!revoked)
      throw new Error(`no active key has id ${id}; \`tessera keys list\` shows ids and which are revoked`);
    process.stderr.write(`key ${id} revoked\n`);
  });

const users = program.command('users').description('manage dashboard users');
users
  .command('create')
  .description('create a dashboard user')
  .requiredOption('--email <email>', 'sign-in e-mail')
  .requiredOption('--password <password>', 'at least 6 characters')
  .addOption(new Option('--role <role>', 'admin sees admin pages').choices(['admin', 'user']).default('user'))
  .option(
    '--account <account>',
    'the account whose sender data the user sees (codes, events and books are shared)',
    DEFAULT_ACCOUNT,
  )
  .action(async (opts: { email: string; password: string; role: 'admin' | 'user'; account: string }) => {
    const user = await withKit((kit) =>
      createUser(kit.pool, opts.email, opts.password, opts.role, opts.account),
    );
    process.stdout.write(`user ${user.email} (${user.role}, account ${user.accountId}) created\n`);
  });

users
  .command('unlock')
  .description('lift the sign-in refusal (429) an e-mail got for too many wrong passwords')
  .requiredOption('--email <email>', 'sign-in e-mail')
  .action(async (opts: { email: string }) => {
    const counts = await withKit((kit) => unlockLogin(kit.pool, opts.email));
    process.stdout.write(
      counts > 0
        ? `${opts.email.toLowerCase()} may sign in again\n`
        : `${opts.email.toLowerCase()} had no failed sign-ins to forget\n`,
    );
  });

registerChaosCommands(program, withKit);

program
  .command('version')
  .description('print the version')
  .action(() => {
    process.stdout.write(`${VERSION}\n`);
  });

program
  .command('config')
  .description('print the effective configuration, or the settings table with --markdown')
  .option('--markdown', 'print the README settings table')
  .action((opts: { markdown?: boolean }) => {
    if (opts.markdown) {
      process.stdout.write(`${configMarkdownTable()}\n`);
      return;
    }
    const { jwtSecret, webhookSecret, ...visible } = configOrExit();
    process.stdout.write(
      `${JSON.stringify({ ...visible, jwtSecret: jwtSecret ? '(set)' : '(unset)', webhookSecret: webhookSecret ? '(set)' : '(unset)' }, null, 2)}\n`,
    );
  });

registerModuleCommands(program, { withKit, positiveInt });

/** Digits, optionally grouped in threes by _ or , (10_000, 10,000): what the docs and people write. */
const DECIMAL = /^\d+$|^\d{1,3}(?:_\d{3})+$|^\d{1,3}(?:,\d{3})+$/;

/**
 * A count typed on the command line: plain decimal only. Number() alone took 1e3, 0x10 and 0b11,
 * and turned 1.5e1 into 15: nobody types a count that way on purpose.
 */
export function positiveInt(value: string): number {
  const n = DECIMAL.test(value) ? Number(value.replace(/[_,]/g, '')) : Number.NaN;
  if (!Number.isSafeInteger(n) || n < 1)
    throw new InvalidArgumentError(
      `must be a whole number of 1 or more in plain digits, such as 10000, 10_000 or 10,000 (got "${value}")`,
    );
  return n;
}

program.parseAsync(process.argv).catch((err) => {
  if (err instanceof ConfigError) {
    process.stderr.write(`${err.message}\n`);
    process.exit(2);
  }
  process.stderr.write(`tessera: ${(err as Error).message}\n`);
  process.exit((err as { exitCode?: number }).exitCode ?? 1);
});
