// Module services callable by name from one call site. Without NATS the call is a plain function
// call; with NATS, worker processes serve each service in a queue group (`<prefix>.<service>`, the
// prefix being NATS_SUBJECT_PREFIX, `tessera` by default) and
// api processes send requests: NATS load-balances across workers and reports "no responders" at
// once when none is running. This is seed 002's gateway → orchestrator → worker shape, minus the
// orchestrator: the queue group is the registry. An HttpError keeps its status across the wire.
//
// Over NATS, concurrent calls to one method travel together: a request carries a JSON array of
// inputs and its reply an array of answers, one each. At most MAX_BATCHES_IN_FLIGHT requests per
// method are out at once (spread over the workers by the queue group); calls that come meanwhile
// wait and leave together in the next one. At low load a call goes at once, alone; under load one
// NATS round trip (two messages, two socket writes, one timer) serves dozens of calls.
import {
  connect,
  headers,
  type NatsConnection,
  RequestError,
  type Subscription,
  TimeoutError,
} from '@nats-io/transport-node';
import { Coalescer } from './coalescer.ts';
import { callerError, DB_UNAVAILABLE_MESSAGE, isConnectionError, recordConnectionFailure } from './db.ts';
import { HttpError, unavailable } from './errors.ts';
import { type Logger, moduleLogger } from './log.ts';
import type { KitMetrics } from './metrics.ts';

/** A request's deadline (epoch ms, the caller's clock): past it, the caller has answered 503. */
const DEADLINE_HEADER = 'Tessera-Deadline';

// biome-ignore lint/suspicious/noExplicitAny: handler inputs are typed by each service's interface
export type Handler = (input: any) => Promise<unknown>;
export type Handlers = Record<string, Handler>;
/** What a caller holds: the same method names, always async. */
export type ServiceClient<H> = {
  [K in keyof H]: H[K] extends (input: infer I) => infer R ? (input: I) => R : never;
};

interface WireReply {
  ok: boolean;
  data?: unknown;
  error?: { statusCode: number; message: string };
}

/**
 * Requests out per method at once. Two keep two workers busy while each batch carries everything
 * that queued during the last round trip; more go out only while a long queue can fill them (so
 * a large deployment spreads a heavy load over more workers) or once both have been out 25 ms
 * (so slow calls never hold up the ones behind them). Measured on 2 cores, 1 api and 2
 * workers, 64 connections: 2 in flight 10.1k req/s, 4: 7.9k, 8: 5.2k, 16: 5.3k (every NATS
 * message is a socket write and a wake-up on both sides, so fewer, fuller batches win).
 */
const BATCHES_IN_FLIGHT = 2;
const BURST_IN_FLIGHT = 16;
const MAX_BATCH = 128;

export type RpcTransport = 'local' | 'nats';

export class Rpc {
  private readonly services = new Map<string, Handlers>();
  private readonly subs: Subscription[] = [];
  private readonly inflight = new Set<Promise<unknown>>();
  private readonly natsBatches = new Coalescer<unknown, unknown>(
    (subject, inputs) => this.sendBatch(subject, inputs),
    {
      maxBatch: MAX_BATCH,
      maxInflight: BATCHES_IN_FLIGHT,
      burstInflight: BURST_IN_FLIGHT,
      burstWhenQueued: MAX_BATCH / 2,
      // A slow call holds its slot; calls behind it go in another request after this long.
      burstAfterMs: 25,
    },
  );

  /** The rpc module's own lines (serving, bad requests); a handler's failure is its service's line. */
  private readonly log: Logger;

  constructor(
    /** The root logger. */
    private readonly rootLog: Logger,
    private readonly metrics: KitMetrics,
    private readonly timeoutMs: number,
    /** Set when calls should go over NATS (api role with NATS_URL). */
    private readonly nats?: NatsConnection,
    private readonly callTransport: RpcTransport = 'local',
    /** NATS_SUBJECT_PREFIX: one token, so a subject splits into prefix, rpc, service, method. */
    private readonly prefix = 'tessera',
  ) {
    this.log = moduleLogger(rootLog, 'rpc');
  }

  private subjectOf(service: string, method: string): string {
    return `${this.prefix}.rpc.${service}.${method}`;
  }

  private queueOf(service: string): string {
    return `${this.prefix}.${service}`;
  }

  static async connectNats(url: string, name: string): Promise<NatsConnection> {
    // noAsyncTraces: otherwise every request builds two Error objects up front (stack traces for a
    // timeout that almost never comes), which costs more CPU than the rest of the call.
    return connect({
      servers: url,
      name,
      maxReconnectAttempts: -1,
      reconnectTimeWait: 500,
      noAsyncTraces: true,
    });
  }

  get natsConnection(): NatsConnection | undefined {
    return this.nats;
  }

  register(service: string, handlers: Handlers): void {
    this.services.set(service, handlers);
  }

  client<H>(service: string): ServiceClient<H> {
    return new Proxy({} as ServiceClient<H>, {
      // Not a thenable: `await`ing a client (or returning it from an async function) must not
      // turn into an RPC call named "then".
      get: (_t, method) =>
        typeof method !== 'string' || method === 'then'
          ? undefined
          : (input: unknown) => this.call(service, method, input),
    });
  }

  async call(service: string, method: string, input: unknown): Promise<unknown> {
    const started = process.hrtime.bigint();
    const transport = this.callTransport;
    let outcome = 'ok';
    try {
      return transport === 'nats'
        ? await this.callNats(service, method, input)
        : await this.callLocal(service, method, input);
    } catch (err) {
      // In-process, a value PostgreSQL cannot store comes back as its own error; over NATS the
      // worker has already made it the caller's 400. Labelled alike, so the error alert sees neither.
      const known = callerError(err);
      outcome = known ? String(known.statusCode) : 'error';
      throw err;
    } finally {
      const seconds = Number(process.hrtime.bigint() - started) / 1e9;
      this.metrics.rpcDuration.observe({ service, method, transport, outcome }, seconds);
    }
  }

  private handler(service: string, method: string): Handler {
    const h = this.services.get(service)?.[method];
    if (!h) throw new HttpError(501, `RPC ${service}.${method} is not registered in this process`);
    return h;
  }

  private callLocal(service: string, method: string, input: unknown): Promise<unknown> {
    return this.handler(service, method)(input);
  }

  private callNats(service: string, method: string, input: unknown): Promise<unknown> {
    return this.natsBatches.submit(this.subjectOf(service, method), input ?? null);
  }

  /**
   * Sends a batch of calls as few NATS requests as the server's max_payload allows (usually one);
   * answers one result or HttpError per call, in order. A reply too large for one message comes
   * back as `{tooLarge: true}`, and its calls go again one per request.
   */
  private async sendBatch(subject: string, inputs: unknown[]): Promise<unknown[]> {
    const results: unknown[] = new Array(inputs.length);
    const limit = (this.nats!.info?.max_payload ?? 1024 * 1024) - 1024;
    const groups: { at: number[]; body: string[]; bytes: number }[] = [];
    let group = { at: [] as number[], body: [] as string[], bytes: 2 };
    inputs.forEach((input, i) => {
      let text: string;
      try {
        text = JSON.stringify(input);
      } catch (err) {
        // One call that cannot be sent must not fail the calls batched with it.
        results[i] = new HttpError(500, `the ${subject} call is not JSON: ${(err as Error).message}`);
        return;
      }
      const bytes = Buffer.byteLength(text) + 1;
      if (bytes > limit) {
        results[i] = new HttpError(
          413,
          `the ${subject} call is ${bytes} bytes; NATS carries at most ${limit}`,
        );
        return;
      }
      if (group.bytes + bytes > limit) {
        groups.push(group);
        group = { at: [], body: [], bytes: 2 };
      }
      group.at.push(i);
      group.body.push(text);
      group.bytes += bytes;
    });
    if (group.at.length) groups.push(group);
    await Promise.all(
      groups.map(async (g) => {
        const answers = await this.request(subject, `[${g.body.join(',')}]`).catch((err: Error) => err);
        if (answers === 'tooLarge' && g.at.length > 1) {
          await Promise.all(
            g.at.map(async (i, k) => {
              const one = await this.request(subject, `[${g.body[k]}]`).catch((err: Error) => err);
              results[i] = this.toResult(subject, one, 0);
            }),
          );
          return;
        }
        g.at.forEach((i, k) => {
          results[i] = this.toResult(subject, answers, k);
        });
      }),
    );
    return results;
  }

  /** One request/reply; the replies, or 'tooLarge' when the answer did not fit one message. */
  private async request(subject: string, body: string): Promise<WireReply[] | 'tooLarge'> {
    const [, , service, method] = subject.split('.');
    try {
      // The deadline travels with the request: a worker that gets it too late does not run it.
      const h = headers();
      h.set(DEADLINE_HEADER, String(Date.now() + this.timeoutMs));
      const msg = await this.nats!.request(subject, body, { timeout: this.timeoutMs, headers: h });
      const replies = msg.json<WireReply[] | { tooLarge: true }>();
      return Array.isArray(replies) ? replies : 'tooLarge';
    } catch (err) {
      if (err instanceof RequestError && err.isNoResponders()) {
        throw unavailable(`no ${service} worker is running: start one with \`tessera start --role worker\``);
      }
      if (err instanceof TimeoutError || (err instanceof RequestError && err.cause instanceof TimeoutError)) {
        throw unavailable(`${service}.${method} did not answer within ${this.timeoutMs} ms`);
      }
      throw unavailable(`${service} service unreachable over NATS: ${(err as Error).message}`);
    }
  }

  private toResult(subject: string, answers: WireReply[] | 'tooLarge' | Error, k: number): unknown {
    if (answers instanceof Error) return answers;
    if (answers === 'tooLarge')
      return new HttpError(502, `the answer to ${subject} is larger than NATS's max_payload`);
    const reply = answers[k];
    if (reply?.ok) return reply.data;
    return new HttpError(reply?.error?.statusCode ?? 500, reply?.error?.message ?? 'RPC failed');
  }

  /**
   * Worker role with NATS: serve every registered service in its queue group. Resolves once the
   * NATS server has the subscriptions (a flush): a worker that says it started is one a call can
   * reach, not one whose SUB is still on the wire (the caller would get "no responders", a 503).
   */
  async serve(): Promise<void> {
    const nc = this.nats;
    if (!nc) return;
    for (const [service, handlers] of this.services) {
      for (const method of Object.keys(handlers)) {
        const sub = nc.subscribe(this.subjectOf(service, method), {
          queue: this.queueOf(service),
          callback: (err, msg) => {
            if (err) return this.log.error({ err, service, method }, 'RPC_SUBSCRIPTION_ERROR');
            const late = Date.now() - Number(msg.headers?.get(DEADLINE_HEADER) || Number.POSITIVE_INFINITY);
            if (late > 0) {
              // The caller has answered 503 already; running it now would do a write it was told had
              // not happened (a retried create made twice). It waited in this worker's queue (a stalled
              // event loop, a paused process) or on the wire, or the clocks disagree.
              this.metrics.rpcExpired.inc({ service, method });
              return this.log.warn({ service, method, lateMs: late }, 'RPC_EXPIRED');
            }
            const work = this.answer(service, method, msg.data).then((replies) => {
              const text = JSON.stringify(replies);
              const fits = Buffer.byteLength(text) <= (nc.info?.max_payload ?? 1024 * 1024) - 1024;
              msg.respond(fits ? text : '{"tooLarge":true}');
            });
            // The caller times out and answers 503; here the failed reply is logged, never thrown.
            work.catch((err) => this.log.error({ err, service, method }, 'RPC_REPLY_FAILED'));
            this.inflight.add(work);
            work.finally(() => this.inflight.delete(work)).catch(() => undefined);
          },
        });
        this.subs.push(sub);
      }
      this.log.info({ service, queue: this.queueOf(service) }, 'RPC_SERVING');
    }
    await nc.flush();
  }

  /** Answers a batch: every call runs concurrently (so the service can coalesce their queries). */
  private async answer(service: string, method: string, data: Uint8Array): Promise<WireReply[]> {
    let inputs: unknown[];
    try {
      inputs = JSON.parse(Buffer.from(data).toString('utf8'));
      if (!Array.isArray(inputs)) throw new Error('an RPC request is a JSON array of inputs');
    } catch (err) {
      this.log.error({ err, service, method }, 'RPC_BAD_REQUEST');
      return [];
    }
    const handler = this.services.get(service)?.[method];
    return Promise.all(inputs.map((input) => this.answerOne(service, method, handler, input)));
  }

  private async answerOne(
    service: string,
    method: string,
    handler: Handler | undefined,
    input: unknown,
  ): Promise<WireReply> {
    try {
      if (!handler) throw new HttpError(501, `RPC ${service}.${method} is not registered in this process`);
      return { ok: true, data: await handler(input) };
    } catch (err) {
      // A query on the caller's text PostgreSQL cannot store is the caller's 400, as in-process.
      const known = callerError(err);
      if (known) return { ok: false, error: { statusCode: known.statusCode, message: known.message } };
      const log = moduleLogger(this.rootLog, service);
      // The worker's database is down: the caller may retry, exactly as with the in-process path,
      // whose HTTP error handler answers the same 503.
      if (isConnectionError(err)) {
        recordConnectionFailure(log, this.metrics, err as Error, { service, method });
        return { ok: false, error: { statusCode: 503, message: DB_UNAVAILABLE_MESSAGE } };
      }
      log.error({ err, service, method }, 'RPC_HANDLER_FAILED');
      return { ok: false, error: { statusCode: 500, message: 'Internal Server Error' } };
    }
  }

  /**
   * Leave the queue groups without dropping a request: unsubscribe (NATS stops routing new requests
   * here and sends them to the other workers), answer what is in flight, then close.
   */
  async close(): Promise<void> {
    await Promise.all(this.subs.map((s) => s.drain().catch(() => undefined)));
    // Each drain flushed its UNSUB: from here NATS routes new calls to the other workers.
    if (this.subs.length) this.log.info({ inflight: this.inflight.size }, 'RPC_LEFT_QUEUE_GROUPS');
    await Promise.allSettled([...this.inflight]);
    if (this.nats && !this.nats.isClosed()) await this.nats.drain().catch(() => undefined);
  }
}
