// `tessera codes generate --campaign ID --count N`: starts the same tracked job as
// POST /api/campaigns/:id/codes and draws a progress bar from the job's progress row. The command
// runs a job runner itself, so it works with no server running; when workers are running, whichever
// process picks the job up first does it and the bar follows it all the same.
// `codes create` and `codes list` are in cli-campaigns.ts.
// `tessera codes import` and `codes export` stream a CSV file in and out, as the HTTP routes do;
// import also reads the JSON list the HTTP route takes.
import { createReadStream, createWriteStream, type Stats, statSync, type WriteStream } from 'node:fs';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import cliProgress, { type Options as BarOptions, type Params, SingleBar } from 'cli-progress';
import { type Command, InvalidArgumentError } from 'commander';
import type { Kit } from '../../kit/kit.ts';
import { moduleLogger } from '../../kit/log.ts';
import { refuseBatchCampaign } from './campaigns.ts';
import { registerCampaignCommands } from './cli-campaigns.ts';
import { GENERATE_MAX } from './generate.ts';
import { codesModule, codesStateOf } from './index.ts';
import { JSON_IMPORT_LIMIT, jsonOpener, Transfer } from './transfer.ts';

/** A command stopped by Ctrl-C: the shell's convention for SIGINT is exit code 130. */
class Interrupted extends Error {
  readonly exitCode = 130;
}

export interface Helpers {
  withKit<T>(fn: (kit: Kit) => Promise<T>): Promise<T>;
  positiveInt(value: string): number;
}

const MAX_TEXT = GENERATE_MAX.toLocaleString('en-US');

export function registerCodesCommands(program: Command, helpers: Helpers): void {
  const codes = program.command('codes').description('campaign codes');
  registerCampaignCommands(codes, helpers, codesState);
  codes
    .command('generate')
    .description('generate unique codes into a campaign, with a progress bar')
    .requiredOption('--campaign <id>', 'campaign id (create it with POST /api/campaigns)')
    .requiredOption('--count <n>', `how many codes (up to ${MAX_TEXT})`, (v) => {
      const n = helpers.positiveInt(v);
      // The HTTP route's limit: a bigger job would hold one campaign's generation for an hour.
      if (n > GENERATE_MAX)
        throw new InvalidArgumentError(`must be at most ${MAX_TEXT} per run; run it again for more`);
      return n;
    })
    .action(async (opts: { campaign: string; count: number }) => {
      const result = await helpers.withKit(async (kit) => {
        const { campaigns, generator } = await codesState(kit);
        const campaign = await campaigns.get(opts.campaign);
        refuseBatchCampaign(campaign, 'generate codes');
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
        const bar = progressBar('codes {bar} {percentage}% | {value}/{total} | {time_left}');
        bar.start(opts.count, 0);
        // Ctrl-C cancels the job: left queued, a worker ran it later, and a re-run made the codes twice.
        // A second Ctrl-C quits at once (Node's default, the listener being gone).
        let cancelling: Promise<unknown> | undefined;
        const onInterrupt = () => {
          cancelling = kit.jobs.cancelTracked(jobId).catch(() => undefined);
        };
        process.once('SIGINT', onInterrupt);
        try {
          for (;;) {
            const job = await kit.jobs.getTracked(jobId);
            bar.update(Number(job.done));
            if (job.state === 'completed') return job;
            if (job.state === 'failed') throw new Error(`generation failed: ${job.error}`);
            if (job.state === 'cancelled' && !(await kit.jobs.trackedIsRunning(jobId))) break;
            await new Promise((r) => setTimeout(r, 250));
          }
        } finally {
          process.removeListener('SIGINT', onInterrupt);
          bar.stop();
          await cancelling;
          await kit.jobs.stop();
        }
        const made = await generator.committedBy(jobId);
        throw new Interrupted(
          `cancelled job ${jobId}: ${made} of the ${opts.count} codes were written before it stopped, and stay in campaign ${campaign.id}`,
        );
      });
      process.stdout.write(`${opts.count} codes generated into ${opts.campaign} (job ${result.id})\n`);
    });

  codes
    .command('import')
    .description(
      `import existing codes from a CSV file (first column; any size, streamed) or a JSON list (["C1","C2"] or {"codes": [...]}, up to ${JSON_IMPORT_LIMIT / (1024 * 1024)} MB), with a progress bar`,
    )
    .requiredOption('--campaign <id>', 'campaign id')
    .requiredOption(
      '--file <path>',
      'the CSV or JSON file, read as JSON when its name ends in .json or it starts with [ or {; - reads standard input (sniffed the same way)',
      (v) => {
        if (v === '') throw new InvalidArgumentError('give a file path, or - for standard input');
        return v;
      },
    )
    .action(async (opts: { campaign: string; file: string }) => {
      const result = await helpers.withKit(async (kit) => {
        const { campaigns, transfer } = await codesState(kit);
        const campaign = await campaigns.get(opts.campaign);
        // A bar by bytes read, for a file (standard input has no size to measure against).
        const size = opts.file === '-' ? 0 : csvFileSize(opts.file);
        const input = opts.file === '-' ? process.stdin : createReadStream(opts.file);
        const bar = progressBar('import {bar} {percentage}% | {time_left}');
        // Polled rather than a 'data' listener, which would change how the stream flows.
        const tick = size
          ? setInterval(() => bar.update((input as { bytesRead?: number }).bytesRead ?? 0), 200)
          : undefined;
        if (size) bar.start(size, 0);
        try {
          const name = opts.file === '-' ? 'standard input' : opts.file;
          const source = await importSource(name, input, /\.json$/i.test(opts.file));
          const result = await transfer.importCodes(campaign, source);
          if (size) bar.update(size);
          return result;
        } finally {
          clearInterval(tick);
          if (size) bar.stop();
        }
      });
      process.stdout.write(
        `${result.inserted} inserted, ${result.duplicate} duplicate, ${result.invalid} invalid into ${opts.campaign}\n`,
      );
      for (const line of result.invalidSamples) process.stderr.write(`invalid: ${line}\n`);
    });

  codes
    .command('export')
    .description('export a campaign as CSV (code, state, reserveId, userId and dates), streamed')
    .requiredOption('--campaign <id>', 'campaign id')
    .option('--out <path>', 'the file to write; - or none writes standard output', (v) => {
      if (v === '') throw new InvalidArgumentError('give a file path, or - for standard output');
      return v;
    })
    .action(async (opts: { campaign: string; out?: string }) => {
      const file = opts.out === '-' ? undefined : opts.out;
      await helpers.withKit(async (kit) => {
        const { campaigns, transfer } = await codesState(kit);
        const campaign = await campaigns.get(opts.campaign);
        const out = file ? await openForWriting(file) : process.stdout;
        const csv = await transfer.exportCsv(campaign);
        await pipeline(csv, out).catch((err: NodeJS.ErrnoException) => {
          if (err.code === 'ENOSPC')
            throw new Error(`cannot write ${file ?? 'standard output'}: no space left on its disk`);
          ignoreClosedStdout(err);
        });
      });
      if (file) process.stderr.write(`${opts.campaign} exported to ${file}\n`);
    });
}

/**
 * A bar on standard error whose `{time_left}` reads "estimating time left" until there is an ETA.
 * cli-progress's own {eta_formatted} shows 0s before anything has moved and then its INF marker,
 * padded to two characters: "NFs left".
 */
export function progressBar(format: string, options: BarOptions = {}): SingleBar {
  // cli-progress is CommonJS: Node finds SingleBar as a named export, but not Format.
  const { Format } = cliProgress;
  const timeLeft = (o: BarOptions, p: Params) =>
    typeof p.eta === 'number' && Number.isFinite(p.eta) && p.value > 0
      ? `${Format.TimeFormat(p.eta, o, 5)} left`
      : 'estimating time left';
  return new SingleBar({
    stream: process.stderr,
    ...options,
    format: (o, p, payload) =>
      Format.Formatter({ ...o, format }, p, { ...payload, time_left: timeLeft(o, p) }),
  });
}

/** Reads `input` until jsonOpener can tell; returns whether it is JSON and every chunk, the ones read included. */
async function sniff(input: Readable): Promise<{ json: boolean; chunks: AsyncIterable<Buffer> }> {
  const it: AsyncIterator<Buffer> = input[Symbol.asyncIterator]();
  const head: Buffer[] = [];
  let opener: '[' | '{' | false | undefined;
  while (opener === undefined) {
    const next = await it.next();
    if (next.done) break;
    head.push(next.value);
    opener = jsonOpener(Buffer.concat(head));
  }
  async function* chunks() {
    yield* head;
    for (let next = await it.next(); !next.done; next = await it.next()) yield next.value;
  }
  return { json: Boolean(opener), chunks: chunks() };
}

/**
 * A JSON import's whole text, refused past the HTTP route's limit (JSON is parsed whole). A BOM,
 * which Windows editors write and jsonOpener looks past, is dropped: JSON.parse refuses it.
 */
async function readJson(chunks: AsyncIterable<Buffer>, name: string): Promise<string> {
  const read: Buffer[] = [];
  let size = 0;
  for await (const chunk of chunks) {
    size += chunk.length;
    if (size > JSON_IMPORT_LIMIT)
      throw new Error(
        `${name} is over the ${JSON_IMPORT_LIMIT / (1024 * 1024)} MB a JSON import may hold: import a large file as CSV (one code per line), which streams with no size limit`,
      );
    read.push(chunk);
  }
  const text = Buffer.concat(read).toString('utf8');
  return text.startsWith('\ufeff') ? text.slice(1) : text;
}

/**
 * The codes `codes import` reads: JSON, as the HTTP route takes it, from a file named *.json or
 * input whose first byte is [ or { (a JSON file read as CSV failed on its quotes, or imported its
 * brackets as invalid codes); any other input is CSV, as before.
 */
async function importSource(
  name: string,
  input: Readable,
  jsonByName: boolean,
): Promise<AsyncIterable<unknown>> {
  const { json, chunks } = jsonByName ? { json: true, chunks: input } : await sniff(input);
  if (json) return Transfer.jsonText(await readJson(chunks, name), name);
  return Transfer.csvFirstColumn(Readable.from(chunks, { objectMode: false }));
}

/** The export's file, opened before the export starts; an error that names the file when it cannot be written. */
function openForWriting(file: string): Promise<WriteStream> {
  return new Promise((resolve, reject) => {
    const stream = createWriteStream(file);
    stream.once('open', () => resolve(stream));
    stream.once('error', (err: NodeJS.ErrnoException) => {
      // Raw, these read "ENOENT: no such file or directory, open 'F'".
      if (err.code === 'ENOENT') reject(new Error(`cannot write ${file}: its folder does not exist`));
      else if (err.code === 'ENOTDIR')
        reject(new Error(`cannot write ${file}: a part of its path is a file, not a folder`));
      else if (err.code === 'EACCES') reject(new Error(`cannot write ${file}: permission denied`));
      else if (err.code === 'EISDIR') reject(new Error(`${file} is a directory: give a file path in it`));
      else reject(err);
    });
  });
}

/** The size of the CSV file to import; an error that names the file when it is not one to read. */
function csvFileSize(file: string): number {
  let stat: Stats;
  try {
    stat = statSync(file);
  } catch (err) {
    // Raw, these read "ENOENT: no such file or directory, stat 'F'".
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENOTDIR') throw new Error(`no such file: ${file}`);
    if (code === 'EACCES') throw new Error(`${file} cannot be read: permission denied`);
    throw err;
  }
  if (stat.isDirectory()) throw new Error(`${file} is a directory: give the CSV file in it`);
  return stat.size;
}

/**
 * A reader that closed standard output (`… | head -2`) wanted no more: the export ends there,
 * quietly and with exit 0, as other Unix tools do. Any other error is still an error.
 */
function ignoreClosedStdout(err: NodeJS.ErrnoException): void {
  if (err.code !== 'EPIPE') throw err;
}

async function codesState(kit: Kit) {
  const ctx = { ...kit, log: moduleLogger(kit.log, 'codes') };
  await codesModule.setup(ctx);
  return codesStateOf(ctx);
}
