// `npm run bench -- sender`: end-to-end batch throughput (CSV upload → every recipient sent) to the
// mock channel, a local webhook receiver (signatures verified) and a local SMTP server, plus the
// server's peak RSS over a 1,000,000-recipient batch, and how soon a pause and a cancel stop a batch
// that three processes are sending. Targets from issue 6.
import { readFileSync } from 'node:fs';
import pg from 'pg';
import { createApiKey } from '../src/kit/auth.ts';
import {
  chunkHolders,
  startSmtpSink,
  startWebhookReceiver,
  WEBHOOK_SECRET,
} from '../src/modules/sender/test-peers.ts';
import { waitFor } from '../test/helpers.ts';
import { postmasterPid, printRows, type Row, startServer, treeCpuSeconds } from './lib.ts';

const MOCK_N = Number(process.env.BENCH_SENDER_MOCK ?? 100_000);
const WEBHOOK_N = Number(process.env.BENCH_SENDER_WEBHOOK ?? 20_000);
const SMTP_N = Number(process.env.BENCH_SENDER_SMTP ?? 5_000);
const MILLION_N = Number(process.env.BENCH_SENDER_MILLION ?? 1_000_000);
const STOP_N = Number(process.env.BENCH_SENDER_STOP ?? 20_000);
/** A rate at which the worker's sub-batch is its largest (200 messages): the slowest to stop. */
const STOP_RATE = 1_000;

function rssMb(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) / 1024 : 0;
}

export async function benchSender(databaseUrl: string) {
  const server = await startServer('bench/tessera-server.ts', ['all'], {
    DATABASE_URL: databaseUrl,
    WORKER_CONCURRENCY: '8',
    DB_POOL_MAX: '40',
  });
  const pool = new pg.Pool({ connectionString: databaseUrl, max: 2 });
  const rx = await startWebhookReceiver({ keep: false });
  const smtp = await startSmtpSink({ keep: false });
  const rows: Row[] = [];
  try {
    const { key } = await createApiKey(pool, 'bench', ['admin']);
    const headers = { authorization: `Bearer ${key}`, 'content-type': 'application/json' };
    const call = async (method: string, path: string, body?: unknown) => {
      const res = await fetch(`${server.url}${path}`, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
      });
      if (!res.ok) throw new Error(`${method} ${path}: ${res.status} ${await res.text()}`);
      return res.json() as Promise<any>;
    };
    const config = async (body: unknown) => (await call('POST', '/api/send-configs', body)).id as string;

    const pgPid = await postmasterPid(databaseUrl);
    /** CPU seconds of the server and PostgreSQL so far: a cost that other load does not move. */
    const cpu = () => ({ node: treeCpuSeconds(server.proc.pid!), pg: pgPid ? treeCpuSeconds(pgPid) : 0 });

    /** A draft batch of n recipients uploaded as CSV; returns its id. */
    const uploadDraft = async (n: number, target: Record<string, unknown>): Promise<string> => {
      const draft = await call('POST', '/api/batches', {
        ...target,
        draft: true,
        template: { subject: 'Hello {{name}}', html: '<p>Hi {{name}}, code {{n}}</p>', text: 'Hi {{name}}' },
      });
      const csv = async function* () {
        yield 'address,name,n\n';
        for (let i = 0; i < n; i += 10_000) {
          let s = '';
          for (let j = i; j < Math.min(n, i + 10_000); j++) s += `user${j}@example.com,Name ${j},${j}\n`;
          yield s;
        }
      };
      const up = await fetch(`${server.url}/api/batches/${draft.id}/recipients`, {
        method: 'POST',
        headers: { authorization: headers.authorization, 'content-type': 'text/csv' },
        body: ReadableStream.from(csv()),
        duplex: 'half',
      } as RequestInit);
      if (!up.ok) throw new Error(`upload: ${up.status} ${await up.text()}`);
      return draft.id;
    };

    /** Draft → CSV upload → send → completed; returns {total s, upload s, send s, peak RSS, CPU}. */
    const run = async (n: number, target: Record<string, unknown>) => {
      const cpu0 = cpu();
      let peak = rssMb(server.proc.pid!);
      const sampler = setInterval(() => {
        peak = Math.max(peak, rssMb(server.proc.pid!));
      }, 250);
      const t0 = performance.now();
      const id = await uploadDraft(n, target);
      const t1 = performance.now();
      const cpu1 = cpu();
      await call('POST', `/api/batches/${id}/send`);
      let b: any;
      for (;;) {
        b = await call('GET', `/api/batches/${id}`);
        if (['completed', 'failed', 'cancelled'].includes(b.state)) break;
        await new Promise((r) => setTimeout(r, 100));
      }
      const t2 = performance.now();
      clearInterval(sampler);
      if (b.progress.sent !== n) throw new Error(`batch ended ${b.state} with ${b.progress.sent}/${n} sent`);
      const cpu2 = cpu();
      // CPU ms per 1,000 messages, server + PostgreSQL: upload / send.
      const perK = (a: { node: number; pg: number }, b: { node: number; pg: number }) =>
        `${(((b.node - a.node) * 1e6) / n).toFixed(0)} + ${(((b.pg - a.pg) * 1e6) / n).toFixed(0)} ms`;
      const cost = `CPU per 1,000 msgs (server + PostgreSQL): upload ${perK(cpu0, cpu1)}, send ${perK(cpu1, cpu2)}`;
      return { total: (t2 - t0) / 1000, upload: (t1 - t0) / 1000, send: (t2 - t1) / 1000, peak, cost };
    };

    // Each section runs unless its count is set to 0 (BENCH_SENDER_MOCK=0 …), to measure one alone.
    if (MOCK_N > 0) {
      const mock = await run(MOCK_N, { channel: 'mock' });
      rows.push({
        name: `${MOCK_N.toLocaleString('en-US')} recipients → mock, end to end (upload + send)`,
        figure: MOCK_N / mock.total,
        unit: 'msg/s',
        target: '≥ 20,000 msg/s',
        pass: MOCK_N / mock.total >= 20_000,
        note: `upload ${mock.upload.toFixed(1)} s, send ${mock.send.toFixed(1)} s = ${Math.round(MOCK_N / mock.send)} msg/s; ${(MOCK_N / mock.total / 5000).toFixed(1)}× BatchSender's 5,000/s plan; ${mock.cost}`,
      });
    }
    if (WEBHOOK_N > 0) {
      const hook = await run(WEBHOOK_N, {
        sendConfigId: await config({
          name: 'bench hook',
          channel: 'webhook',
          settings: { url: rx.url },
          secret: WEBHOOK_SECRET,
        }),
      });
      rows.push({
        name: `${WEBHOOK_N.toLocaleString('en-US')} recipients → local webhook receiver (signed, verified)`,
        figure: WEBHOOK_N / hook.total,
        unit: 'msg/s',
        target: '≥ 5,000 msg/s',
        pass: WEBHOOK_N / hook.total >= 5000,
        note: `send phase ${Math.round(WEBHOOK_N / hook.send)} msg/s; receiver verified ${rx.seen.size}, rejected ${rx.rejected()}; ${hook.cost}`,
      });
    }
    if (SMTP_N > 0) {
      const mail = await run(SMTP_N, {
        sendConfigId: await config({
          name: 'bench smtp',
          channel: 'email',
          settings: {
            host: '127.0.0.1',
            port: smtp.port,
            from: 'bench@example.com',
            ignoreTLS: true,
            maxConnections: 16,
          },
        }),
      });
      rows.push({
        name: `${SMTP_N.toLocaleString('en-US')} recipients → local SMTP server (smtp-server)`,
        figure: SMTP_N / mail.total,
        unit: 'msg/s',
        target: '≥ 1,000 msg/s',
        pass: SMTP_N / mail.total >= 1000,
        note: `send phase ${Math.round(SMTP_N / mail.send)} msg/s; server received ${smtp.count()}; ${mail.cost}`,
      });
    }
    if (MILLION_N > 0) {
      const big = await run(MILLION_N, { channel: 'mock' });
      rows.push({
        name: `${MILLION_N.toLocaleString('en-US')} recipients → mock: peak server RSS`,
        figure: big.peak,
        unit: 'MB',
        target: '≤ 512 MB',
        pass: big.peak <= 512,
        note: `end to end ${Math.round(MILLION_N / big.total)} msg/s (upload ${big.upload.toFixed(0)} s, send ${big.send.toFixed(0)} s)`,
      });
    }
    if (STOP_N > 0) {
      const hookConfig = await config({
        name: 'bench stop',
        channel: 'webhook',
        settings: { url: rx.url },
        secret: WEBHOOK_SECRET,
      });
      const id = await uploadDraft(STOP_N, { sendConfigId: hookConfig, ratePerSecond: STOP_RATE });
      rows.push(await stopAcrossWorkers({ databaseUrl, pool, rx, call, id }));
    }
  } finally {
    printRows('sender', rows);
    await rx.close();
    await smtp.close();
    await pool.end();
    await server.stop();
  }
}

/**
 * Issue 6: "pause, resume and cancel take effect within 1 s across all workers". The bench's server
 * (role all) and two worker processes send one batch; the figure is the longer of the two waits
 * from the pause (then the cancel) call to the last message the receiver got after it, with the
 * wait until every process had let its chunks go beside it.
 */
async function stopAcrossWorkers(ctx: {
  databaseUrl: string;
  pool: pg.Pool;
  rx: Awaited<ReturnType<typeof startWebhookReceiver>>;
  call: (method: string, path: string, body?: unknown) => Promise<any>;
  id: string;
}): Promise<Row> {
  const { pool, rx, call, id } = ctx;
  const workers = await Promise.all(
    [1, 2].map(() =>
      startServer('bench/tessera-server.ts', ['worker'], {
        DATABASE_URL: ctx.databaseUrl,
        WORKER_CONCURRENCY: '2',
      }),
    ),
  );
  try {
    const workerPids = workers.map((w) => w.proc.pid!);
    /** Calls the action while all three processes send; ms until the last arrival, and until no chunk runs. */
    const stop = async (action: 'pause' | 'cancel') => {
      // Called while all three hold chunks and messages are arriving (a sub-batch in flight), since
      // between sub-batches there is nothing to stop and the figure would read 0.
      const arrived = rx.arrivals.length;
      // Polled every 10 ms: the figures are read to about that.
      const poll = (what: string) => ({ what: `${action}: ${what}`, timeoutMs: 60_000, intervalMs: 10 });
      await waitFor(async () => {
        const holders = await chunkHolders(pool, id);
        const last = rx.arrivals.at(-1)?.at ?? 0;
        return (
          holders.size >= 3 &&
          workerPids.every((p) => holders.has(p)) &&
          rx.arrivals.length >= arrived + 200 &&
          Date.now() - last < 5
        );
      }, poll('all three processes sending'));
      const at = Date.now();
      await call('POST', `/api/batches/${id}/${action}`);
      await waitFor(async () => (await chunkHolders(pool, id)).size === 0, poll('every chunk let go'));
      const released = Date.now() - at;
      await new Promise((r) => setTimeout(r, 1000)); // for a straggler, which the figure must show
      const late = rx.arrivals.filter((a) => a.at >= at);
      const last = late.length ? Math.max(...late.map((a) => a.at)) - at : 0;
      return { last, released, late: late.length };
    };
    await call('POST', `/api/batches/${id}/send`);
    const paused = await stop('pause');
    await call('POST', `/api/batches/${id}/resume`);
    const cancelled = await stop('cancel');
    const figure = Math.max(paused.last, cancelled.last);
    const say = (what: string, r: { last: number; released: number; late: number }) =>
      `${what}: last message ${r.last} ms after the call (${r.late} arrived after it), every chunk let go at ${r.released} ms`;
    return {
      name: `pause and cancel, one batch sent by three processes (${STOP_RATE.toLocaleString('en-US')} msg/s)`,
      figure,
      unit: 'ms',
      target: '≤ 1,000 ms',
      pass: figure <= 1000,
      note: `${say('pause', paused)}; ${say('cancel', cancelled)}`,
    };
  } finally {
    await Promise.all(workers.map((w) => w.stop()));
  }
}
