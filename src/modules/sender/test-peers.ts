// Real peers for the sender's tests and benchmarks: an SMTP server (smtp-server) that parses what it
// receives, and an HTTP receiver that verifies every webhook with the standardwebhooks package and
// dedupes on webhook-id, as a receiver honouring the idempotency key would.
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { SMTPServer } from 'smtp-server';
import { Webhook } from 'standardwebhooks';
import { type TestPlatform, waitFor } from '../../../test/helpers.ts';
import type { Queryable } from '../../kit/db.ts';

export interface ReceivedMail {
  from: string;
  to: string[];
  raw: string;
}

export async function startSmtpSink(
  opts: {
    keep?: boolean;
    /** Answer each message this many ms late, as a slow provider does. */
    delayMs?: number;
  } = {},
) {
  const mails: ReceivedMail[] = [];
  let count = 0;
  const server = new SMTPServer({
    authOptional: true,
    disabledCommands: ['STARTTLS', 'AUTH'],
    logger: false,
    disableReverseLookup: true,
    size: 10 * 1024 * 1024,
    onData(stream, session, callback) {
      const parts: Buffer[] = [];
      stream.on('data', (d: Buffer) => parts.push(d));
      stream.on('end', () => {
        count++;
        if (opts.keep !== false)
          mails.push({
            from: session.envelope.mailFrom ? session.envelope.mailFrom.address : '',
            to: session.envelope.rcptTo.map((r) => r.address),
            raw: Buffer.concat(parts).toString('utf8'),
          });
        if (opts.delayMs) setTimeout(callback, opts.delayMs);
        else callback();
      });
    },
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.server.address() as AddressInfo).port;
  return {
    port,
    mails,
    count: () => count,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}

export const WEBHOOK_SECRET = `whsec_${Buffer.from('tessera-sender-test-secret-0123456789').toString('base64')}`;

export async function startWebhookReceiver(
  opts: {
    secret?: string;
    keep?: boolean;
    failRate?: number;
    /** Addresses (`to`) refused with 422, a permanent failure for the sender. */
    refuse?: string[];
    /** Answer 503 (transient) to the first n deliveries of every webhook-id. */
    failFirst?: number;
    /** Answer each accepted delivery this many ms after it arrived, as a slow receiver does. */
    delayMs?: number;
  } = {},
) {
  const refuse = new Set(opts.refuse ?? []);
  const wh = new Webhook(opts.secret ?? WEBHOOK_SECRET);
  /** webhook-id → deliveries with that id (a receiver keeps the first) */
  const seen = new Map<string, number>();
  /** webhook-id → deliveries tried (verified), for failFirst */
  const attempts = new Map<string, number>();
  const bodies: Record<string, unknown>[] = [];
  /** Every accepted delivery in arrival order: webhook-id and Date.now() at the receiver. */
  const arrivals: { id: string; at: number }[] = [];
  let rejected = 0;
  let raw = 0;
  const server: Server = createServer((req, res) => {
    const parts: Buffer[] = [];
    req.on('data', (d: Buffer) => parts.push(d));
    req.on('end', () => {
      const body = Buffer.concat(parts).toString('utf8');
      raw++;
      try {
        const payload = wh.verify(body, req.headers as Record<string, string>) as Record<string, unknown>;
        if (refuse.has(String(payload.to))) {
          res.writeHead(422).end();
          return;
        }
        const tries = (attempts.get(String(req.headers['webhook-id'])) ?? 0) + 1;
        attempts.set(String(req.headers['webhook-id']), tries);
        if (opts.failFirst && tries <= opts.failFirst) {
          res.writeHead(503).end();
          return;
        }
        if (opts.failRate && Math.random() < opts.failRate) {
          res.writeHead(503).end();
          return;
        }
        const id = String(req.headers['webhook-id']);
        const n = seen.get(id) ?? 0;
        seen.set(id, n + 1);
        arrivals.push({ id, at: Date.now() });
        if (n === 0 && opts.keep !== false) bodies.push(payload);
        if (opts.delayMs) setTimeout(() => res.writeHead(200).end(), opts.delayMs);
        else res.writeHead(200).end();
      } catch {
        rejected++;
        res.writeHead(401).end();
      }
    });
  });
  server.keepAliveTimeout = 30_000;
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  return {
    url: `http://127.0.0.1:${port}/hook`,
    seen,
    bodies,
    arrivals,
    rejected: () => rejected,
    raw: () => raw,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

/**
 * The pids of the processes holding a running chunk of the batch (sender_chunks.owner is
 * `pid:uuid`): which workers are sending it, and none once every chunk is let go.
 */
export async function chunkHolders(db: Queryable, batchId: string): Promise<Set<number>> {
  const { rows } = await db.query<{ pid: string }>(
    `SELECT DISTINCT split_part(owner, ':', 1) AS pid FROM sender_chunks WHERE batch_id = $1 AND state = 'running'`,
    [batchId],
  );
  return new Set(rows.map((r) => Number(r.pid)));
}

/** A webhook send config pointing at `url`, signed with WEBHOOK_SECRET; returns its id. */
export async function webhookSendConfig(p: Pick<TestPlatform, 'app' | 'auth'>, url: string): Promise<string> {
  const res = await p.app.inject({
    method: 'POST',
    url: '/api/send-configs',
    headers: p.auth,
    payload: {
      name: `receiver-${Math.random()}`,
      channel: 'webhook',
      settings: { url },
      secret: WEBHOOK_SECRET,
    },
  });
  if (res.statusCode !== 201) throw new Error(`send config: ${res.statusCode} ${res.body}`);
  return res.json().id as string;
}

/**
 * Waits for a batch to reach a final state and returns it; on timeout the error carries the
 * batch and up to 10 unsent recipients, which is what one needs to see why it stalled.
 */
export async function batchFinished(p: TestPlatform, id: string, timeoutMs: number) {
  const get = async () =>
    (await p.app.inject({ method: 'GET', url: `/api/batches/${id}`, headers: p.auth })).json();
  try {
    return await waitFor(
      async () => {
        const b = await get();
        return ['completed', 'cancelled', 'failed'].includes(b.state) ? b : undefined;
      },
      { timeoutMs, what: `batch ${id} to finish` },
    );
  } catch (err) {
    const { rows } = await p.kit.pool.query(
      `SELECT state, attempts, next_attempt_at FROM sender_recipients WHERE batch_id = $1 AND state <> 'sent' LIMIT 10`,
      [id],
    );
    throw new Error(
      `${(err as Error).message}; batch ${JSON.stringify(await get())}; unsent ${JSON.stringify(rows)}`,
    );
  }
}
