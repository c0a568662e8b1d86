// The streamed import at size: a CSV generated on the fly (never a file) is sent chunked to a real
// `tessera start --role api` process, which must store codes before the body has ended (streamed,
// at any size), count every line right and keep its memory flat.
//
// TESSERA_TEST_IMPORT_LINES sets the size. The full run is 1,000,000 lines (the figure):
//   TESSERA_TEST_IMPORT_LINES=1000000 npm test -- src/modules/codes/import-stream.test.ts
// `npm test` uses 200,000 by default so the whole suite stays quick on a 2-core machine; the memory
// bound is the same at both sizes, which is the point: it must not grow with the file.
import assert from 'node:assert/strict';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { type IncomingHttpHeaders, request } from 'node:http';
import { Readable } from 'node:stream';
import { after, describe, it } from 'node:test';
import { freshDatabase, spawnTessera, testPool, waitFor } from '../../../test/helpers.ts';
import { createApiKey } from '../../kit/auth.ts';

const LINES = Number(process.env.TESSERA_TEST_IMPORT_LINES || 200_000);
const RSS_GROWTH_LIMIT_MB = 150;
const PRE_IMPORTED = 10;

/** The i-th distinct code of the campaign's format (8 digits): never repeats for i < 10^8. */
const codeOf = (i: number) => String(i).padStart(8, '0');

/**
 * Line i of the file: every 1,000th is invalid (wrong length), every 100th (otherwise) repeats the
 * line before it, the first PRE_IMPORTED repeat codes the campaign already holds; the rest are new.
 * Returns what the import should count the line as.
 */
function line(i: number): { text: string; kind: 'inserted' | 'duplicate' | 'invalid' } {
  if (i % 1000 === 999) return { text: `BAD-${i}`, kind: 'invalid' };
  if (i < PRE_IMPORTED) return { text: codeOf(i), kind: 'duplicate' };
  if (i % 100 === 50) return { text: codeOf(i - 1), kind: 'duplicate' };
  return { text: i % 7 === 0 ? `${codeOf(i)},extra column` : codeOf(i), kind: 'inserted' };
}

/** The file in 64 KB chunks; halfway it waits for `midway` (the server's progress) before going on. */
async function* csv(midway: () => Promise<unknown>): AsyncGenerator<string> {
  yield 'code\n'; // a header line, skipped
  let chunk = '';
  for (let i = 0; i < LINES; i++) {
    chunk += `${line(i).text}\n`;
    if (chunk.length >= 64 * 1024) {
      yield chunk;
      chunk = '';
    }
    if (i === LINES / 2) await midway();
  }
  if (chunk) yield chunk;
}

/** kB figures from /proc/<pid>/status (Linux). */
function procStatus(pid: number, field: 'VmRSS' | 'VmHWM'): number {
  const m = readFileSync(`/proc/${pid}/status`, 'utf8').match(new RegExp(`^${field}:\\s+(\\d+) kB`, 'm'));
  if (!m) throw new Error(`no ${field} in /proc/${pid}/status`);
  return Number(m[1]);
}

const linux = existsSync('/proc/self/clear_refs')
  ? false
  : 'needs Linux /proc (clear_refs, VmHWM) to measure the server process peak memory';

describe('codes: streamed CSV import at size', { skip: linux }, () => {
  it(`when a ${LINES.toLocaleString('en')}-line CSV is streamed to the import, then every line is counted and server memory stays flat`, async () => {
    const { server, pool, key } = await apiWithCampaign('bulk', 'warn');
    const pre = await fetch(`${server.url}/api/campaigns/bulk/codes/import`, {
      method: 'POST',
      headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
      body: JSON.stringify(Array.from({ length: PRE_IMPORTED }, (_, i) => codeOf(i))),
    });
    assert.equal(((await pre.json()) as { inserted: number }).inserted, PRE_IMPORTED);

    const expected = { inserted: 0, duplicate: 0, invalid: 0 };
    for (let i = 0; i < LINES; i++) expected[line(i).kind]++;

    // Peak RSS of the server from here on: writing 5 to clear_refs resets VmHWM to the current RSS.
    const pid = server.proc.pid!;
    const before = procStatus(pid, 'VmRSS');
    writeFileSync(`/proc/${pid}/clear_refs`, '5');
    const started = Date.now();
    // Streamed, not buffered: with half the body still unsent, codes must already be stored.
    const midway = () =>
      waitFor(
        async () =>
          (await pool.query<{ n: number }>('SELECT count(*)::int AS n FROM codes')).rows[0]!.n > PRE_IMPORTED,
        { timeoutMs: 30_000, intervalMs: 100, what: 'codes stored before the body has ended' },
      );
    const result = await postCsv(`${server.url}/api/campaigns/bulk/codes/import`, key, csv(midway));
    const seconds = (Date.now() - started) / 1000;
    const growthMb = (procStatus(pid, 'VmHWM') - before) / 1024;

    assert.equal(result.status, 200, result.body);
    const counts = JSON.parse(result.body);
    assert.deepEqual(
      { inserted: counts.inserted, duplicate: counts.duplicate, invalid: counts.invalid },
      expected,
    );
    assert.equal(counts.invalidSamples[0], 'BAD-999');
    const stored = await pool.query<{ n: number; available: number }>(
      `SELECT (SELECT count(*)::int FROM codes WHERE campaign_no = c.no) AS n, available::int
       FROM codes_campaigns c WHERE id = 'bulk'`,
    );
    assert.deepEqual(stored.rows[0], {
      n: expected.inserted + PRE_IMPORTED,
      available: expected.inserted + PRE_IMPORTED,
    });
    assert.ok(
      growthMb < RSS_GROWTH_LIMIT_MB,
      `server peak RSS grew ${growthMb.toFixed(0)} MB during the import (limit ${RSS_GROWTH_LIMIT_MB} MB)`,
    );
    process.stdout.write(
      `# import: ${LINES} lines in ${seconds.toFixed(1)} s (${Math.round(LINES / seconds)} lines/s), server peak RSS +${growthMb.toFixed(0)} MB over ${Math.round(before / 1024)} MB\n`,
    );
  });
});

/** A fresh `--role api` process, a codes key and an empty 8-digit campaign `id` to import into. */
async function apiWithCampaign(id: string, logLevel: string) {
  const db = await freshDatabase();
  const server = await spawnTessera('api', { DATABASE_URL: db, LOG_LEVEL: logLevel });
  await server.waitHealthy();
  const pool = testPool(db);
  after(() => pool.end());
  const { key } = await createApiKey(pool, `${id} test`, ['codes']);
  const created = await fetch(`${server.url}/api/campaigns`, {
    method: 'POST',
    headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
    body: JSON.stringify({ id, name: id, format: { length: 8, alphabet: 'numeric' } }),
  });
  assert.equal(created.status, 201, await created.text());
  return { server, pool, key };
}

/** POSTs `body` as a chunked text/csv import; answers once the response has ended, then stops sending. */
function postCsv(
  url: string,
  key: string,
  body: AsyncIterable<Buffer | string>,
): Promise<{ status: number; body: string; headers: IncomingHttpHeaders }> {
  return new Promise((resolve, reject) => {
    const req = request(
      url,
      { method: 'POST', headers: { authorization: `Bearer ${key}`, 'content-type': 'text/csv' } },
      (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (d) => {
          text += d;
        });
        res.on('end', () => {
          resolve({ status: res.statusCode ?? 0, body: text, headers: res.headers });
          req.destroy();
        });
      },
    );
    req.on('error', reject);
    Readable.from(body).pipe(req);
  });
}

describe('codes: CSV import of a line with no end', { skip: linux }, () => {
  it('when a CSV has a line of 128 MB, then 400 names the line before much of it is read, server memory stays flat and the next request is answered', async () => {
    const { server, key } = await apiWithCampaign('long', 'warn');

    // Generated as it is sent: one 1 MB buffer again and again, never a file.
    const MB = Buffer.alloc(1024 * 1024, '1');
    let sentMb = 0;
    async function* longLine() {
      yield 'code\n12345678\n';
      for (; sentMb < 128; sentMb++) yield MB;
    }
    const pid = server.proc.pid!;
    const before = procStatus(pid, 'VmRSS');
    writeFileSync(`/proc/${pid}/clear_refs`, '5');
    const res = await postCsv(`${server.url}/api/campaigns/long/codes/import`, key, longLine());
    const growthMb = (procStatus(pid, 'VmHWM') - before) / 1024;

    assert.equal(res.status, 400, res.body);
    assert.match(
      JSON.parse(res.body).message,
      /^the CSV could not be read: line 3 is longer than 8,192 characters: the file must hold one code per line .*Imported before the error \(every row above it\): 1 inserted, 0 duplicate, 0 invalid/,
    );
    assert.ok(sentMb < 128, 'answered before the whole line was sent');
    assert.ok(growthMb < 60, `server peak RSS grew ${growthMb.toFixed(0)} MB (limit 60 MB)`);
    // Still up: the next request is answered.
    const next = await fetch(`${server.url}/api/campaigns/long`, {
      headers: { authorization: `Bearer ${key}` },
    });
    assert.equal(next.status, 200);
    assert.equal(((await next.json()) as { inventory: { total: number } }).inventory.total, 1);
  });
});

describe('codes: an import the client abandons', () => {
  it('when the client closes its connection mid-upload, then that is a client abort, not a PostgreSQL outage', async () => {
    const { server, pool, key } = await apiWithCampaign('gone', 'info');
    const req = request(`${server.url}/api/campaigns/gone/codes/import`, {
      method: 'POST',
      headers: { authorization: `Bearer ${key}`, 'content-type': 'text/csv' },
    });
    req.on('error', () => undefined); // ours to cut
    for (let i = 0; i < 20_000; i++) req.write(`${codeOf(i)}\n`);
    await waitFor(
      async () => (await pool.query<{ n: number }>('SELECT count(*)::int AS n FROM codes')).rows[0]!.n > 0,
      { what: 'the import to be under way' },
    );
    req.destroy(); // the upload cancelled, its body never ended
    await waitFor(() => server.logLines().some((l) => l.msg === 'CLIENT_ABORTED'), {
      what: 'CLIENT_ABORTED',
    });
    assert.deepEqual(
      // DB_SLOW_QUERY may come on a busy machine; only these two would mean an outage was declared.
      server.logLines().filter((l) => /^DB_(MARKED_DOWN|CONNECTION_FAILED)$/.test(String(l.msg))),
      [],
      'no DB_MARKED_DOWN or DB_CONNECTION_FAILED for a client that hung up',
    );
    const health = await fetch(`${server.url}/health`);
    assert.equal(((await health.json()) as { database: string }).database, 'connected');
  });
});

describe('codes: an import when its server is told to stop', () => {
  it('when SIGTERM comes mid-import, then the import stops between batches with a 503 counting what it committed, and the process exits 0', async () => {
    const { server, pool, key } = await apiWithCampaign('stopping', 'info');
    const stored = async () =>
      (await pool.query<{ n: number }>('SELECT count(*)::int AS n FROM codes')).rows[0]!.n;
    // A file with no end: only the server's answer stops it.
    async function* endless() {
      for (let i = 0; ; i += 1000)
        yield Array.from({ length: 1000 }, (_, j) => `${codeOf(i + j)}\n`).join('');
    }
    const answer = postCsv(`${server.url}/api/campaigns/stopping/codes/import`, key, endless());
    await waitFor(async () => (await stored()) > 0, { what: 'the import to be under way' });
    const exitCode = await server.stop('SIGTERM');
    const res = await answer;

    assert.equal(res.status, 503, res.body);
    assert.equal(res.headers['retry-after'], '5');
    const m = JSON.parse(res.body).message.match(
      /^the server is shutting down, so the import stopped after (\d+) inserted, 0 duplicate and 0 invalid \(all committed\): send the whole file again/,
    );
    assert.ok(m, res.body);
    assert.equal(Number(m[1]), await stored(), 'the 503 counts exactly the codes stored');
    assert.equal(exitCode, 0, server.output());
    const line = server.logLines().find((l) => l.msg === 'CODES_IMPORT_STOPPED');
    assert.equal(line?.inserted, Number(m[1]), server.output());
    assert.ok(!server.logLines().some((l) => l.msg === 'SHUTDOWN_TIMEOUT'));
  });

  /** An upload that the test drives by hand: its answer, and whether the server closed it. */
  function openUpload(url: string, key: string) {
    const req = request(url, {
      method: 'POST',
      headers: { authorization: `Bearer ${key}`, 'content-type': 'text/csv' },
    });
    req.on('error', () => undefined); // the server may close it while it writes
    const answer = new Promise<{ status: number; body: string }>((resolve) => {
      req.on('response', (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (d) => {
          body += d;
        });
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      });
    });
    return { req, answer };
  }

  it('when the upload has stalled, then SIGTERM still ends it with a 503 counting every whole line received', async () => {
    const { server, pool, key } = await apiWithCampaign('stalled', 'info');
    const { req, answer } = openUpload(`${server.url}/api/campaigns/stalled/codes/import`, key);
    // 7,000 whole lines, then nothing: one batch of 5,000 commits, 2,000 wait for the next.
    req.write(Array.from({ length: 7000 }, (_, i) => `${codeOf(i)}\n`).join(''));
    await waitFor(
      async () => (await pool.query<{ n: number }>('SELECT count(*)::int AS n FROM codes')).rows[0]!.n > 0,
      { what: 'the first batch' },
    );
    const exitCode = await server.stop('SIGTERM');
    const res = await answer;
    req.destroy();
    assert.equal(res.status, 503, res.body);
    assert.match(
      JSON.parse(res.body).message,
      /import stopped after 7000 inserted, 0 duplicate and 0 invalid/,
    );
    assert.equal((await pool.query('SELECT count(*)::int AS n FROM codes')).rows[0].n, 7000);
    assert.equal(exitCode, 0, server.output());
  });

  it('when the sender goes on writing after the 503, then the server closes the connection and exits 0', async () => {
    const { server, pool, key } = await apiWithCampaign('deaf', 'info');
    const { req } = openUpload(`${server.url}/api/campaigns/deaf/codes/import`, key);
    let i = 0;
    const writer = setInterval(() => {
      if (req.destroyed || req.writableEnded) return clearInterval(writer);
      req.write(Array.from({ length: 2000 }, () => `${codeOf(i++)}\n`).join(''));
    }, 5);
    try {
      await waitFor(
        async () => (await pool.query<{ n: number }>('SELECT count(*)::int AS n FROM codes')).rows[0]!.n > 0,
        { what: 'the import to be under way' },
      );
      const exitCode = await server.stop('SIGTERM');
      // Answered (a sender that reads it gets the 503; one that only writes may meet the reset of
      // the closed connection first), and the drain did not wait for the sender to stop.
      assert.ok(
        server.logLines().some((l) => l.msg === 'CODES_IMPORT_STOPPED'),
        server.output(),
      );
      assert.equal(exitCode, 0, server.output());
      assert.ok(!server.logLines().some((l) => l.msg === 'SHUTDOWN_TIMEOUT'));
    } finally {
      clearInterval(writer);
      req.destroy();
    }
  });
});
