// Module services callable by name from one call site. Without NATS the call is a plain function
// call; with NATS, worker processes serve each service in a queue group (`tessera.<service>`) and
// api processes send requests: NATS load-balances across workers and reports "no responders" at
// once when none is running. This is seed 002's gateway → orchestrator → worker shape, minus the
// orchestrator: the queue group is the registry. An HttpError keeps its status across the wire.
import {
  connect,
  type NatsConnection,
  RequestError,
  type Subscription,
  TimeoutError,
} from '@nats-io/transport-node';
import { HttpError, unavailable } from './errors.ts';
import type { Logger } from './log.ts';
import type { KitMetrics } from './metrics.ts';

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

const subjectOf = (service: string, method: string) => `tessera.rpc.${service}.${method}`;

export type RpcTransport = 'local' | 'nats';

export class Rpc {
  private readonly services = new Map<string, Handlers>();
  private readonly subs: Subscription[] = [];
  private readonly inflight = new Set<Promise<unknown>>();

  constructor(
    private readonly log: Logger,
    private readonly metrics: KitMetrics,
    private readonly timeoutMs: number,
    /** Set when calls should go over NATS (api role with NATS_URL). */
    private readonly nats?: NatsConnection,
    private readonly callTransport: RpcTransport = 'local',
  ) {}

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
      get: (_t, method: string) => (input: unknown) => this.call(service, method, input),
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
      outcome = err instanceof HttpError ? String(err.statusCode) : 'error';
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

  private async callNats(service: string, method: string, input: unknown): Promise<unknown> {
    const nc = this.nats!;
    let reply: WireReply;
    try {
      const msg = await nc.request(subjectOf(service, method), JSON.stringify(input ?? null), {
        timeout: this.timeoutMs,
      });
      reply = msg.json<WireReply>();
    } catch (err) {
      if (err instanceof RequestError && err.isNoResponders()) {
        throw unavailable(`no ${service} worker is running: start one with \`tessera start --role worker\``);
      }
      if (err instanceof TimeoutError || (err instanceof RequestError && err.cause instanceof TimeoutError)) {
        throw unavailable(`${service}.${method} did not answer within ${this.timeoutMs} ms`);
      }
      throw unavailable(`${service} service unreachable over NATS: ${(err as Error).message}`);
    }
    if (reply.ok) return reply.data;
    throw new HttpError(reply.error?.statusCode ?? 500, reply.error?.message ?? 'RPC failed');
  }

  /** Worker role with NATS: serve every registered service in its queue group. */
  serve(): void {
    const nc = this.nats;
    if (!nc) return;
    for (const [service, handlers] of this.services) {
      for (const method of Object.keys(handlers)) {
        const sub = nc.subscribe(subjectOf(service, method), {
          queue: `tessera.${service}`,
          callback: (err, msg) => {
            if (err) return this.log.error({ err, service, method }, 'RPC_SUBSCRIPTION_ERROR');
            const work = this.answer(service, method, msg.data).then((reply) =>
              msg.respond(JSON.stringify(reply)),
            );
            this.inflight.add(work);
            work.finally(() => this.inflight.delete(work));
          },
        });
        this.subs.push(sub);
      }
      this.log.info({ service, queue: `tessera.${service}` }, 'RPC_SERVING');
    }
  }

  private async answer(service: string, method: string, data: Uint8Array): Promise<WireReply> {
    try {
      const input = data.length ? JSON.parse(Buffer.from(data).toString('utf8')) : null;
      return { ok: true, data: await this.handler(service, method)(input) };
    } catch (err) {
      if (err instanceof HttpError)
        return { ok: false, error: { statusCode: err.statusCode, message: err.message } };
      this.log.error({ err, service, method }, 'RPC_HANDLER_FAILED');
      return { ok: false, error: { statusCode: 500, message: 'Internal Server Error' } };
    }
  }

  /**
   * Leave the queue groups without dropping a request: unsubscribe (NATS stops routing new requests
   * here and sends them to the other workers), answer what is in flight, then close.
   */
  async close(): Promise<void> {
    await Promise.all(this.subs.map((s) => s.drain().catch(() => undefined)));
    await Promise.allSettled([...this.inflight]);
    if (this.nats && !this.nats.isClosed()) await this.nats.drain().catch(() => undefined);
  }
}
