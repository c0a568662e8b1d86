// `npm run bench -- sender`: end-to-end batch throughput (CSV upload → every recipient sent) to the
// mock channel, a local webhook receiver (signatures verified) and a local SMTP server, plus the
// server's peak RSS over a 1,000,000-recipient batch. Targets from issue 6.
import { readFileSync } from 'node:fs';
import pg from 'pg';
import { createApiKey } from '../src/kit/auth.ts';
import { startSmtpSink, startWebhookReceiver, WEBHOOK_SECRET } from '../src/modules/sender/test-peers.ts';
import { postmasterPid, printRows, type Row, startServer, treeCpuSeconds } from './lib.ts';

const MOCK_N = Number(process.env.BENCH_SENDER_MOCK ?? 100_000);
const WEBHOOK_N = Number(process.env.BENCH_SENDER_WEBHOOK ?? 20_000);
const SMTP_N = Number(process.env.BENCH_SENDER_SMTP ?? 5_000);
const MILLION_N = Number(process.env.BENCH_SENDER_MILLION ?? 1_000_000);

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

    /** Draft → CSV upload → send → completed; returns {total s, upload s, send s, peak RSS, CPU}. */
    const run = async (n: number, target: Record<string, unknown>) => {
      const cpu0 = cpu();
      let peak = rssMb(server.proc.pid!);
      const sampler = setInterval(() => {
        peak = Math.max(peak, rssMb(server.proc.pid!));
      }, 250);
      const t0 = performance.now();
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
      const t1 = performance.now();
      const cpu1 = cpu();
      await call('POST', `/api/batches/${draft.id}/send`);
      let b: any;
      for (;;) {
        b = await call('GET', `/api/batches/${draft.id}`);
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
  } finally {
    printRows('sender', rows);
    await rx.close();
    await smtp.close();
    await pool.end();
    await server.stop();
  }
}
