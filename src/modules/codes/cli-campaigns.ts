// `tessera codes create` and `codes list`: campaigns from the command line, through the same
// service (and checks) as POST /api/campaigns and GET /api/campaigns, so the other codes commands'
// `--campaign ID` can be met without an HTTP client.
import type { Command } from 'commander';
import type { Kit } from '../../kit/kit.ts';
import type { CampaignView } from './campaigns.ts';
import type { Helpers } from './cli.ts';
import type { CodesState } from './state.ts';

const LIST_PAGE = 1000;

export function registerCampaignCommands(
  codes: Command,
  helpers: Helpers,
  stateOf: (kit: Kit) => Promise<CodesState>,
): void {
  codes
    .command('create')
    .description('create a campaign, as POST /api/campaigns does')
    .requiredOption('--id <id>', 'campaign id: letters, digits, _ . : -')
    .option('--name <name>', 'a name to show (default: the id)')
    .requiredOption('--length <n>', 'characters after the prefix, 4-32', helpers.positiveInt)
    .requiredOption(
      '--alphabet <alphabet>',
      'alphanumeric (A-Z 0-9), safe (no 0 O 1 I L), numeric, or the characters themselves',
    )
    .option('--prefix <prefix>', 'put before every code, up to 32 characters')
    .option('--ttl <seconds>', 'how long a reservation lasts (default 900)', helpers.positiveInt)
    .option('--max-per-user <n>', 'most codes one userId may be assigned', helpers.positiveInt)
    .action(
      async (opts: {
        id: string;
        name?: string;
        length: number;
        alphabet: string;
        prefix?: string;
        ttl?: number;
        maxPerUser?: number;
      }) => {
        const c = await helpers.withKit(async (kit) =>
          (await stateOf(kit)).service.createCampaign({
            id: opts.id,
            name: opts.name ?? opts.id,
            format: { length: opts.length, alphabet: opts.alphabet, prefix: opts.prefix },
            reservationTtlSeconds: opts.ttl,
            maxPerUser: opts.maxPerUser,
          }),
        );
        process.stdout.write(
          `campaign ${c.id} created: ${formatOf(c)}, capacity ${c.capacity.toLocaleString('en-US')}; ` +
            `reservations last ${c.reservationTtlSeconds} s${c.maxPerUser ? `; at most ${c.maxPerUser} per user` : ''}\n`,
        );
      },
    );

  codes
    .command('list')
    .description('list campaigns with their inventory, as GET /api/campaigns does')
    .action(async () => {
      const rows = await helpers.withKit(async (kit) => {
        const { campaigns } = await stateOf(kit);
        const all: CampaignView[] = [];
        for (let page = await campaigns.list(LIST_PAGE); ; ) {
          all.push(...page);
          if (page.length < LIST_PAGE) return all;
          page = await campaigns.list(LIST_PAGE, page.at(-1)!.id);
        }
      });
      process.stdout.write(table(rows));
    });
}

/** `8 × safe, prefix SP-` */
function formatOf(c: CampaignView): string {
  const f = c.format;
  const alphabet = f.preset === 'custom' ? `"${f.alphabet}"` : f.preset;
  return `${f.length} × ${alphabet}${f.prefix ? `, prefix ${f.prefix}` : ''}`;
}

/** Density as a percentage: generation stops at 1%, and most campaigns sit far below it. */
function percent(fraction: number): string {
  if (fraction === 0) return '0%';
  return fraction < 0.00001 ? '<0.001%' : `${(fraction * 100).toFixed(3)}%`;
}

function table(rows: CampaignView[]): string {
  const head = ['id', 'format', 'available', 'reserved', 'assigned', 'density', 'name'];
  const body = rows.map((c) => [
    c.id,
    formatOf(c),
    String(c.inventory.available),
    String(c.inventory.reserved),
    String(c.inventory.assigned),
    percent(c.density),
    c.name,
  ]);
  const widths = head.map((h, i) => Math.max(h.length, ...body.map((r) => r[i]!.length)));
  // Numbers right-aligned; the name, last, is not padded.
  const line = (r: string[]) =>
    r
      .map((v, i) => (i === r.length - 1 ? v : i >= 2 ? v.padStart(widths[i]!) : v.padEnd(widths[i]!)))
      .join('  ');
  return `${[head, ...body].map(line).join('\n')}\n`;
}
