// `tessera codes generate --campaign ID --count N`: starts the same tracked job as
// POST /api/campaigns/:id/codes and draws a progress bar from the job's progress row. The command
// runs a job runner itself, so it works with no server running; when workers are running, whichever
// process picks the job up first does it and the bar follows it all the same.
import { SingleBar } from 'cli-progress';
import type { Command } from 'commander';
import type { Kit } from '../../kit/kit.ts';
import { moduleLogger } from '../../kit/log.ts';
import { codesModule, codesStateOf } from './index.ts';

interface Helpers {
  withKit<T>(fn: (kit: Kit) => Promise<T>): Promise<T>;
  positiveInt(value: string): number;
}

export function registerCodesCommands(program: Command, helpers: Helpers): void {
  const codes = program.command('codes').description('campaign codes');
  codes
    .command('generate')
    .description('generate unique codes into a campaign, with a progress bar')
    .requiredOption('--campaign <id>', 'campaign id (create it with POST /api/campaigns)')
    .requiredOption('--count <n>', 'how many codes (up to 50,000,000)', helpers.positiveInt)
    .action(async (opts: { campaign: string; count: number }) => {
      const result = await helpers.withKit(async (kit) => {
        const ctx = { ...kit, log: moduleLogger(kit.log, 'codes') };
        await codesModule.setup(ctx);
        const { campaigns, generator } = codesStateOf(ctx);
        const campaign = await campaigns.get(opts.campaign);
        await generator.checkRoom(campaign, opts.count);
        const jobId = await kit.jobs.startTracked(
          kit.pool,
          'codes:generate',
          { campaignId: campaign.id, count: opts.count },
          opts.count,
        );
        process.stderr.write(`job ${jobId} (GET /api/jobs/${jobId})\n`);
        await kit.jobs.start({
          jobs: true,
          cron: false,
          concurrency: 1,
          role: 'cli',
          heartbeatTimeoutMs: kit.config.workerHeartbeatTimeoutMs,
        });
        const bar = new SingleBar({
          format: 'codes {bar} {percentage}% | {value}/{total} | {eta_formatted} left',
          stream: process.stderr,
        });
        bar.start(opts.count, 0);
        try {
          for (;;) {
            const job = await kit.jobs.getTracked(jobId);
            bar.update(Number(job.done));
            if (job.state === 'completed') return job;
            if (job.state === 'failed') throw new Error(`generation failed: ${job.error}`);
            await new Promise((r) => setTimeout(r, 250));
          }
        } finally {
          bar.stop();
          await kit.jobs.stop();
        }
      });
      process.stdout.write(`${opts.count} codes generated into ${opts.campaign} (job ${result.id})\n`);
    });
}
