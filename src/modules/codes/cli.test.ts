// `tessera codes generate | export | import` as users run them: real processes against PostgreSQL,
// with no server running.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import { after, describe, it } from 'node:test';
import { freshDatabase, ROOT, runTessera, testPool } from '../../../test/helpers.ts';
import { Campaigns } from './campaigns.ts';
import { progressBar } from './cli.ts';
import { JSON_IMPORT_LIMIT } from './transfer.ts';

describe('tessera codes CLI', async () => {
  const db = await freshDatabase();
  const pool = testPool(db);
  after(() => pool.end());
  const dir = mkdtempSync(path.join(tmpdir(), 'tessera-codes-cli-'));
  after(() => rmSync(dir, { recursive: true, force: true }));
  const campaign = (id: string) =>
    new Campaigns(pool).create({ id, name: id, format: { length: 8, alphabet: 'alphanumeric' } });
  const stored = async (id: string) =>
    (
      await pool.query(
        'SELECT count(*)::int AS n FROM codes WHERE campaign_no = (SELECT no FROM codes_campaigns WHERE id = $1)',
        [id],
      )
    ).rows[0].n as number;

  it('when Ctrl-C stops a generation, then its job is cancelled for good and the command says what it wrote', async () => {
    await campaign('cli-stop');
    let sent = false;
    const run = await runTessera(
      ['codes', 'generate', '--campaign', 'cli-stop', '--count', '3000000'],
      { DATABASE_URL: db },
      undefined,
      (proc) => {
        const poll = setInterval(async () => {
          // Once the job reports progress, so the cancel meets it in the middle of its work.
          const { rows } = await pool.query(
            `SELECT done FROM tessera_job_runs WHERE payload->>'campaignId' = 'cli-stop' AND done > 0`,
          );
          if (sent || rows.length === 0) return;
          sent = true;
          clearInterval(poll);
          proc.kill('SIGINT');
        }, 100);
        proc.on('exit', () => clearInterval(poll));
      },
    );
    assert.ok(sent, run.out);
    assert.equal(run.code, 130, run.out);
    const made = Number(
      /cancelled job [0-9a-f-]{36}: (\d+) of the 3000000 codes were written/.exec(run.stderr)?.[1],
    );
    assert.ok(made >= 0 && made < 3_000_000, run.stderr);
    assert.equal(await stored('cli-stop'), made, 'the figure it gave is what is stored');
    const { rows } = await pool.query(
      `SELECT r.state, (SELECT count(*)::int FROM graphile_worker._private_jobs j
         WHERE j.payload->>'__trackedId' = r.id::text) AS queued
       FROM tessera_job_runs r WHERE r.payload->>'campaignId' = 'cli-stop'`,
    );
    // Before: the job stayed queued, a worker ran it later, and a re-run made the codes twice.
    assert.deepEqual(rows, [{ state: 'cancelled', queued: 0 }]);
    assert.doesNotMatch(run.out, /"level":50/, 'a cancel is not logged as an error');
  });

  it('when codes are generated, exported and imported into another campaign, then every code arrives once', async () => {
    await campaign('cli-a');
    await campaign('cli-b');

    const gen = await runTessera(['codes', 'generate', '--campaign', 'cli-a', '--count', '12000'], {
      DATABASE_URL: db,
    });
    assert.equal(gen.code, 0, gen.out);
    assert.match(gen.stdout, /^12000 codes generated into cli-a \(job [0-9a-f-]{36}\)\n$/);
    assert.equal(await stored('cli-a'), 12000);

    const file = path.join(dir, 'a.csv');
    const exp = await runTessera(['codes', 'export', '--campaign', 'cli-a', '--out', file], {
      DATABASE_URL: db,
    });
    assert.equal(exp.code, 0, exp.out);
    const lines = readFileSync(file, 'utf8').trimEnd().split('\n');
    assert.equal(lines[0], 'code,state,reserveId,userId,createdAt,reservedAt,expiresAt,assignedAt');
    assert.equal(lines.length, 12001);
    const toStdout = await runTessera(['codes', 'export', '--campaign', 'cli-a'], { DATABASE_URL: db });
    assert.equal(toStdout.stdout, readFileSync(file, 'utf8'), 'the same CSV on standard output');

    // The export's header is skipped; a line that is not a code of this format counts as invalid.
    writeFileSync(file, `${readFileSync(file, 'utf8')}not-a-code\n`);
    const imp = await runTessera(['codes', 'import', '--campaign', 'cli-b', '--file', file], {
      DATABASE_URL: db,
    });
    assert.equal(imp.code, 0, imp.out);
    assert.equal(imp.stdout, '12000 inserted, 0 duplicate, 1 invalid into cli-b\n');
    assert.match(imp.stderr, /invalid: not-a-code/);
    const again = await runTessera(['codes', 'import', '--campaign', 'cli-b', '--file', file], {
      DATABASE_URL: db,
    });
    assert.equal(again.stdout, '0 inserted, 12000 duplicate, 1 invalid into cli-b\n');
    assert.equal(await stored('cli-b'), 12000);
    const piped = await runTessera(
      ['codes', 'import', '--campaign', 'cli-b', '--file', '-'],
      { DATABASE_URL: db },
      'code\nZZZZ0000\nZZZZ0001\ncode\n',
    );
    assert.equal(
      piped.stdout,
      '2 inserted, 0 duplicate, 1 invalid into cli-b\n',
      'a header only on the first line',
    );
  });

  it('when the database session is not in UTC, then the export still writes ISO 8601 UTC dates', async () => {
    await campaign('cli-tz');
    await runTessera(
      ['codes', 'import', '--campaign', 'cli-tz', '--file', '-'],
      { DATABASE_URL: db },
      'TZTZ0001\n',
    );
    const { rows } = await pool.query<{ at: Date }>(
      `SELECT created_at AS at FROM codes WHERE code = 'TZTZ0001'`,
    );
    // +05:45, and a session setting, as a database's or a role's default time zone would be.
    const exp = await runTessera(['codes', 'export', '--campaign', 'cli-tz'], {
      DATABASE_URL: db,
      PGOPTIONS: '-c timezone=Asia/Kathmandu',
    });
    assert.equal(exp.code, 0, exp.out);
    assert.equal(exp.stdout.split('\n')[1]!.split(',')[4], rows[0]!.at.toISOString());
  });

  it('when the reader closes standard output early, as head does, then the export ends quietly with exit 0', async () => {
    // cli-a holds 12,000 codes (first test): far more than a pipe buffers, so writes go on after the close.
    const proc = spawn(
      process.execPath,
      [path.join(ROOT, 'bin/tessera.js'), 'codes', 'export', '--campaign', 'cli-a'],
      {
        env: { ...process.env, TESSERA_CONFIG: 'none', DATABASE_URL: db },
      },
    );
    let stderr = '';
    proc.stderr.on('data', (d) => {
      stderr += d;
    });
    proc.stdout.once('data', () => proc.stdout.destroy());
    const code = await new Promise((resolve) => proc.on('close', resolve));
    assert.equal(stderr, '');
    assert.equal(code, 0);
  });

  it('when --out is - or empty, then - writes standard output and empty is refused', async () => {
    const dash = await runTessera(['codes', 'export', '--campaign', 'cli-b', '--out', '-'], {
      DATABASE_URL: db,
    });
    assert.equal(dash.code, 0, dash.out);
    assert.match(
      dash.stdout,
      /^code,state,reserveId,userId,createdAt,reservedAt,expiresAt,assignedAt\n[A-Z0-9]{8},available,/,
    );
    const dashFile = path.join(ROOT, '-'); // where a file named - would land (the command's cwd)
    after(() => rmSync(dashFile, { force: true }));
    assert.ok(!existsSync(dashFile), 'no file named -');
    const empty = await runTessera(['codes', 'export', '--campaign', 'cli-b', '--out', ''], {
      DATABASE_URL: db,
    });
    assert.equal(empty.code, 1);
    assert.match(empty.stderr, /--out .*give a file path, or - for standard output/);
    // A path that cannot be written is said before the export starts, not as a raw ENOENT.
    writeFileSync(path.join(dir, 'a-file'), '');
    if (existsSync('/dev/full')) {
      const full = await runTessera(['codes', 'export', '--campaign', 'cli-b', '--out', '/dev/full'], {
        DATABASE_URL: db,
      });
      assert.equal(full.code, 1, full.out);
      assert.equal(full.stderr, 'tessera: cannot write /dev/full: no space left on its disk\n');
    }
    for (const [out, message] of [
      [
        path.join(dir, 'no-such-folder', 'x.csv'),
        /^tessera: cannot write \S+x\.csv: its folder does not exist\n$/,
      ],
      [dir, /^tessera: \S+ is a directory: give a file path in it\n$/],
      [
        path.join(dir, 'a-file', 'x.csv'),
        /^tessera: cannot write \S+x\.csv: a part of its path is a file, not a folder\n$/,
      ],
    ] as const) {
      const res = await runTessera(['codes', 'export', '--campaign', 'cli-b', '--out', out], {
        DATABASE_URL: db,
      });
      assert.equal(res.code, 1, res.out);
      assert.match(res.stderr, message);
    }
  });

  it('when the file is JSON, by its name or its first byte, then it imports as the HTTP route takes it, with its errors', async () => {
    await new Campaigns(pool).create({
      id: 'cli-json',
      name: 'cli-json',
      format: { length: 6, alphabet: 'alphanumeric', prefix: 'IM-' },
    });
    const env = { DATABASE_URL: db };
    const args = (file: string) => ['codes', 'import', '--campaign', 'cli-json', '--file', file];
    const fromFile = (name: string, text: string | Buffer) => {
      writeFileSync(path.join(dir, name), text);
      return runTessera(args(path.join(dir, name)), env);
    };
    // Read as CSV, this one failed on its quotes.
    const list = await fromFile('c.json', '["IM-PPPPPP","IM-QQQQQQ"]');
    assert.equal(list.code, 0, list.out);
    assert.equal(list.stdout, '2 inserted, 0 duplicate, 0 invalid into cli-json\n');
    // Not named .json: its first byte after a BOM and whitespace says so. As CSV, its brackets
    // were 2 invalid codes.
    const pretty = await fromFile('codes.txt', '\ufeff\n  {"codes":[\n"IM-RRRRRR",\n"IM-SSSSSS"\n]}\n');
    assert.equal(pretty.code, 0, pretty.out);
    assert.equal(pretty.stdout, '2 inserted, 0 duplicate, 0 invalid into cli-json\n');
    // Standard input is sniffed the same way; a CSV there is still a CSV.
    const piped = await runTessera(args('-'), env, ' ["IM-TTTTTT", null, "im-ppppPP"]');
    assert.equal(piped.code, 0, piped.out);
    assert.equal(piped.stdout, '1 inserted, 1 duplicate, 1 invalid into cli-json\n');
    assert.equal(piped.stderr, 'invalid: null\n');
    const csv = await runTessera(args('-'), env, 'code\nIM-UUUUUU\n');
    assert.equal(csv.stdout, '1 inserted, 0 duplicate, 0 invalid into cli-json\n');
    assert.equal(await stored('cli-json'), 6);

    // What the HTTP route refuses, with its words; exit 1 and nothing imported.
    const refused: [string, string | Buffer, string | RegExp][] = [
      [
        'shape.json',
        '{"nothing": true}',
        /^tessera: \S+shape\.json is not a list of codes: write \["CODE1","CODE2"\] or \{"codes"/,
      ],
      ['empty.json', '', /^tessera: \S+empty\.json is not a list of codes/],
      ['cut.json', '["IM-VVVVVV",', /^tessera: \S+cut\.json is not valid JSON: /],
      [
        'big.json',
        Buffer.alloc(JSON_IMPORT_LIMIT + 1, '[ '),
        /^tessera: \S+big\.json is over the 64 MB a JSON import may hold: import a large file as CSV/,
      ],
    ];
    for (const [name, text, message] of refused) {
      const res = await fromFile(name, text);
      assert.equal(res.code, 1, `${name}: ${res.out}`);
      if (typeof message === 'string') assert.equal(res.stderr, `tessera: ${message}\n`, name);
      else assert.match(res.stderr, message, name);
    }
    assert.equal(await stored('cli-json'), 6);

    // An item nested 100,000 deep is one invalid item, as any non-code is; showing it as a sample
    // overflowed the stack and turned the whole file into an error after its first codes were in.
    const deep = await fromFile('deep.json', `["IM-WWWWWW", ${'['.repeat(100_000)}${']'.repeat(100_000)}]`);
    assert.equal(deep.code, 0, deep.out);
    assert.equal(deep.stdout, '1 inserted, 0 duplicate, 1 invalid into cli-json\n');
    assert.equal(deep.stderr, 'invalid: an array nested too deeply to show (not a string)\n');
    assert.equal(await stored('cli-json'), 7);
  });

  it('when the file, the campaign or the CSV is wrong, then the command exits 1 saying what to fix', async () => {
    const missing = await runTessera(
      ['codes', 'import', '--campaign', 'cli-b', '--file', path.join(dir, 'nope.csv')],
      {
        DATABASE_URL: db,
      },
    );
    assert.equal(missing.code, 1);
    assert.equal(missing.stderr, `tessera: no such file: ${path.join(dir, 'nope.csv')}\n`);
    const folder = await runTessera(['codes', 'import', '--campaign', 'cli-b', '--file', dir], {
      DATABASE_URL: db,
    });
    assert.equal(folder.code, 1);
    assert.equal(folder.stderr, `tessera: ${dir} is a directory: give the CSV file in it\n`);
    const blank = await runTessera(['codes', 'import', '--campaign', 'cli-b', '--file', ''], {
      DATABASE_URL: db,
    });
    assert.equal(blank.code, 1);
    assert.match(blank.stderr, /--file .*give a file path, or - for standard input/);
    const noCampaign = await runTessera(['codes', 'export', '--campaign', 'nope'], { DATABASE_URL: db });
    assert.equal(noCampaign.code, 1);
    assert.match(noCampaign.stderr, /campaign nope not found/);
    const broken = path.join(dir, 'broken.csv');
    writeFileSync(broken, 'AAAA1111\n"BBBB2222\n');
    const bad = await runTessera(['codes', 'import', '--campaign', 'cli-b', '--file', broken], {
      DATABASE_URL: db,
    });
    assert.equal(bad.code, 1);
    assert.match(
      bad.stderr,
      /^tessera: the CSV could not be read: .*line.*Imported before the error \(every row above it\): 1 inserted/m,
    );
    // The parser's own words said what it met ("non trimable byte after quote"), not what to fix.
    const quoted = path.join(dir, 'quoted.csv');
    writeFileSync(quoted, 'CCCC3333\n"DDDD4444"x\n');
    const afterQuote = await runTessera(['codes', 'import', '--campaign', 'cli-b', '--file', quoted], {
      DATABASE_URL: db,
    });
    assert.equal(afterQuote.code, 1);
    assert.match(
      afterQuote.stderr,
      /^tessera: the CSV could not be read: fix line 2: a quoted field goes on after its closing quote .*Imported before the error \(every row above it\): 1 inserted/m,
    );
    const noFlag = await runTessera(['codes', 'import', '--campaign', 'cli-b'], { DATABASE_URL: db });
    assert.equal(noFlag.code, 1);
    assert.match(noFlag.stderr, /required option '--file <path>' not specified/);
    // The HTTP route's limit holds here too (it once generated 60,000,000 without a word).
    const tooMany = await runTessera(['codes', 'generate', '--campaign', 'cli-b', '--count', '50000001'], {
      DATABASE_URL: db,
    });
    assert.equal(tooMany.code, 1);
    assert.match(tooMany.stderr, /--count .* must be at most 50,000,000 per run/);
    // Only plain decimal counts: Number() read these as 1000, 16 and 15.
    for (const count of ['1e3', '0x10', '1.5e1', '1,00', '']) {
      const odd = await runTessera(['codes', 'generate', '--campaign', 'cli-b', '--count', count], {
        DATABASE_URL: db,
      });
      assert.equal(odd.code, 1, count);
      assert.match(
        odd.stderr,
        /--count .* must be a whole number of 1 or more in plain digits, such as 10000/,
        count,
      );
    }
    // 50,000,001 written as people do still meets the limit, not the parser.
    const grouped = await runTessera(['codes', 'generate', '--campaign', 'cli-b', '--count', '50_000_001'], {
      DATABASE_URL: db,
    });
    assert.match(grouped.stderr, /must be at most 50,000,000 per run/);
  });

  it('when a campaign is created and listed from the command line, then the service checks it as the HTTP route does', async () => {
    const env = { DATABASE_URL: db };
    const made = await runTessera(
      [
        'codes',
        'create',
        '--id',
        'cli-new',
        '--name',
        'Spring sale',
        '--length',
        '8',
        '--alphabet',
        'safe',
        '--prefix',
        'SP-',
        '--max-per-user',
        '2',
      ],
      env,
    );
    assert.equal(made.code, 0, made.out);
    assert.equal(
      made.stdout,
      'campaign cli-new created: 8 × safe, prefix SP-, capacity 852,891,037,441; reservations last 900 s; at most 2 per user\n',
    );
    const refused: [string[], RegExp][] = [
      [
        ['--id', 'cli-new', '--length', '8', '--alphabet', 'safe'],
        /^tessera: campaign cli-new already exists: choose another id\n$/,
      ],
      [
        ['--id', 'bad/id', '--length', '8', '--alphabet', 'safe'],
        /^tessera: id must be 1-200 characters of A-Z a-z 0-9/,
      ],
      [
        ['--id', 'cli-short', '--length', '3', '--alphabet', 'safe'],
        /^tessera: format.length must be a whole number from 4 to 32\n$/,
      ],
      [['--id', 'cli-case', '--length', '8', '--alphabet', 'SAFE'], /did you mean "safe"\?/],
      [
        ['--id', 'batch-codes', '--length', '6', '--alphabet', 'alphanumeric'],
        /^tessera: batch-codes is the campaign of POST \/api\/generate/,
      ],
    ];
    for (const [args, message] of refused) {
      const res = await runTessera(['codes', 'create', ...args], env);
      assert.equal(res.code, 1, res.out);
      assert.match(res.stderr, message, args.join(' '));
    }
    await runTessera(['codes', 'generate', '--campaign', 'cli-new', '--count', '1000'], env);
    const list = await runTessera(['codes', 'list'], env);
    assert.equal(list.code, 0, list.out);
    const [head, ...rows] = list.stdout.trimEnd().split('\n');
    assert.match(head!, /^id +format +available +reserved +assigned +density +name$/);
    const mine = rows.find((r) => r.startsWith('cli-new '));
    assert.match(mine ?? list.stdout, /^cli-new +8 × safe, prefix SP- +1000 +0 +0 +<0\.001% +Spring sale$/);
  });
});

describe('tessera codes progress bar', () => {
  it('when nothing has moved yet, then the bar says it is estimating, not NFs left, and shows a time once it is known', async () => {
    let out = '';
    const stream = new Writable({
      write(chunk, _encoding, done) {
        out += chunk;
        done();
      },
    });
    // noTTYOutput: draw to a stream that is not a terminal, every 10 ms.
    const bar = progressBar('import {bar} {percentage}% | {time_left}', {
      stream: stream as unknown as NodeJS.WritableStream,
      noTTYOutput: true,
      notTTYSchedule: 10,
    });
    const tick = () => new Promise((r) => setTimeout(r, 60));
    bar.start(1000, 0);
    await tick();
    bar.update(0);
    await tick();
    const before = out;
    bar.update(500);
    await tick();
    bar.stop();
    assert.match(before, /0% \| estimating time left\n/);
    assert.doesNotMatch(out, /NF|INF|NULL/);
    assert.match(out.slice(before.length), /50% \| +\d+s left\n/);
  });
});
