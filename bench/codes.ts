// `npm run bench -- codes`: generation of 10,000,000 8-character codes (time and the server's peak
// RSS), reservations of one code per request with 64 connections, the signed POST /api/generate
// and GET of one code, each beside a bare-Fastify ceiling measured in interleaved slices.
import { readFileSync } from 'node:fs';
import pg from 'pg';
import { Webhook } from 'standardwebhooks';
import { createApiKey } from '../src/kit/auth.ts';
import {
  againstCeiling,
  autovacuumSettled,
  cpuMeter,
  type LoadResult,
  printRows,
  startCeiling,
  startServer,
} from './lib.ts';

const GENERATE = Number(process.env.BENCH_CODES_GENERATE ?? 10_000_000);

function peakRssMb(pid: number): number {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = Number(status.match(/VmHWM:\s+(\d+)/)?.[1] ?? 0);
  return kb / 1024;
}

export async function benchCodes(databaseUrl: string) {
  const ceiling = await startCeiling();
  const secret = `whsec_${Buffer.from('tessera-bench-webhook-secret-32b').toString('base64')}`;
  const server = await startServer('bench/tessera-server.ts', ['all'], {
    DATABASE_URL: databaseUrl,
    WEBHOOK_SECRET: secret,
    JWT_SECRET: 'bench-jwt-secret-bench-jwt-secret-0123456789',
  });
  const pool = new pg.Pool({ connectionString: databaseUrl, max: 2 });
  try {
    const { key } = await createApiKey(pool, 'bench', ['admin']);
    const headers = { authorization: `Bearer ${key}`, 'content-type': 'application/json' };
    const api = async (method: string, path: string, body?: unknown) => {
      const res = await fetch(`${server.url}${path}`, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
      });
      const json = (await res.json()) as any;
      if (res.status >= 400) throw new Error(`${method} ${path}: ${res.status} ${JSON.stringify(json)}`);
      return json;
    };
    await api('POST', '/api/campaigns', {
      id: 'bench',
      name: 'bench',
      format: { length: 8, alphabet: 'alphanumeric' },
    });

    const meter = await cpuMeter([server.proc.pid!], databaseUrl);
    const g0 = meter.snap();
    const t0 = Date.now();
    const started = await api('POST', '/api/campaigns/bench/codes', { count: GENERATE });
    let job: any;
    for (;;) {
      job = await api('GET', started.statusUrl);
      if (job.state === 'completed' || job.state === 'failed') break;
      await new Promise((r) => setTimeout(r, 200));
    }
    const genSeconds = (Date.now() - t0) / 1000;
    const g1 = meter.snap();
    const genCpu = `CPU ${Math.round(g1.node - g0.node)} s server + ${Math.round(g1.pg - g0.pg)} s PostgreSQL`;
    const rssMb = peakRssMb(server.proc.pid!);
    if (job.state !== 'completed') throw new Error(`generation failed: ${job.error}`);
    const stored = (await pool.query(`SELECT count(*)::int AS n FROM codes`)).rows[0].n;
    // The operations below are measured in the steady state, once autovacuum has digested the
    // generated rows (it vacuums and analyzes 10M new rows for a while, on the same two cores).
    const settledSec = await autovacuumSettled(pool);

    // Each ratio: the figure and a bare-Fastify ceiling driven alike, in interleaved slices.
    let c0 = meter.snap();
    const reserve = await againstCeiling(ceiling, {
      url: `${server.url}/api/campaigns/bench/reservations`,
      method: 'POST',
      headers,
      body: JSON.stringify({ count: 1 }),
    });
    const reserveCost = meter.cost(c0, meter.snap(), reserve.served);

    // Each request signed as it is sent, by the same generator for the ceiling, so signing costs
    // the load generator the same CPU in both.
    const wh = new Webhook(secret);
    let n = 0;
    const signed = [
      {
        method: 'POST' as const,
        path: '/api/generate',
        setupRequest: (req: any) => {
          const id = `msg_${process.pid}_${n++}`;
          const at = new Date();
          const body = '{}';
          return {
            ...req,
            body,
            headers: {
              'content-type': 'application/json',
              'webhook-id': id,
              'webhook-timestamp': String(Math.floor(at.getTime() / 1000)),
              'webhook-signature': wh.sign(id, at, body),
            },
          };
        },
      },
    ];
    c0 = meter.snap();
    const webhook = await againstCeiling(ceiling, {
      url: `${server.url}/api/generate`,
      method: 'POST',
      requests: signed,
    });
    const webhookCost = meter.cost(c0, meter.snap(), webhook.served);

    const one = (await api('POST', '/api/campaigns/bench/reservations', { count: 1 })).codes[0];
    c0 = meter.snap();
    const lookup = await againstCeiling(ceiling, {
      url: `${server.url}/api/campaigns/bench/codes/${one}`,
      headers,
    });
    const lookupCost = meter.cost(c0, meter.snap(), lookup.served);

    const ratio = (r: { figure: LoadResult; ceiling: LoadResult }) => r.figure.rps / r.ceiling.rps;
    printRows('codes', [
      {
        name: `generate ${GENERATE.toLocaleString('en-US')} 8-char codes (job, COPY)`,
        figure: genSeconds,
        unit: 's',
        target: '≤ 30 s, RSS ≤ 512 MB',
        pass: genSeconds <= 30 && rssMb <= 512 && stored >= GENERATE,
        note: `${Math.round(GENERATE / genSeconds).toLocaleString('en-US')} codes/s, server peak RSS ${Math.round(rssMb)} MB, ${stored.toLocaleString('en-US')} rows stored, ${genCpu}; autovacuum then ran ${settledSec} s`,
      },
      {
        name: 'POST reservations, 1 code, 64 conn',
        figure: reserve.figure.rps,
        unit: 'req/s',
        ceiling: reserve.ceiling.rps,
        target: '≥ 10,000 and ≥ 0.3×',
        pass: reserve.figure.rps >= 10_000 && ratio(reserve) >= 0.3 && reserve.figure.non2xx === 0,
        note: `p99 ${reserve.figure.p99} ms, non-2xx ${reserve.figure.non2xx}, errors ${reserve.figure.errors}; ${reserveCost}; ${reserve.gc}`,
      },
      {
        name: 'POST /api/generate (signed; the ceiling signed alike)',
        figure: webhook.figure.rps,
        unit: 'req/s',
        ceiling: webhook.ceiling.rps,
        target: '≥ 0.3×',
        pass: ratio(webhook) >= 0.3 && webhook.figure.non2xx === 0,
        note: `p99 ${webhook.figure.p99} ms, non-2xx ${webhook.figure.non2xx}; ${webhookCost}; ${webhook.gc}`,
      },
      {
        name: 'GET one code',
        figure: lookup.figure.rps,
        unit: 'req/s',
        ceiling: lookup.ceiling.rps,
        target: '≥ 0.5×',
        pass: ratio(lookup) >= 0.5 && lookup.figure.non2xx === 0,
        note: `p99 ${lookup.figure.p99} ms; ${lookupCost}; ${lookup.gc}`,
      },
    ]);
  } finally {
    await pool.end();
    await server.stop();
    await ceiling.stop();
  }
}
