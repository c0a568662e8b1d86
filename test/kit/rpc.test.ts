// RPC over real NATS, in one process: a serving Rpc and a calling Rpc on two connections. Batching
// must be invisible to callers: each call gets its own answer or its own error, whatever else
// travelled in the same request, and answers larger than one NATS message still arrive.
import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { headers } from '@nats-io/transport-node';
import { type HttpError, notFound } from '../../src/kit/errors.ts';
import { createRootLogger } from '../../src/kit/log.ts';
import { createMetrics } from '../../src/kit/metrics.ts';
import { Rpc } from '../../src/kit/rpc.ts';
import { NATS_URL, needsNats, testPool } from '../helpers.ts';

interface Echo {
  echo(input: { n: number }): Promise<{ n: number }>;
  blob(input: { kb: number }): Promise<string>;
  fail(input: { n: number }): Promise<never>;
  slow(input: { ms: number; n: number }): Promise<{ n: number }>;
  stored(input: { text: string }): Promise<string>;
}

describe('RPC over NATS (batched)', { skip: needsNats }, () => {
  const log = createRootLogger({ level: 'silent', format: 'json', debug: '', role: 'test' });
  const start = async () => {
    const server = new Rpc(
      log,
      createMetrics({ role: 'worker' }),
      5000,
      await Rpc.connectNats(NATS_URL!, 'w'),
    );
    // A subject of its own per run, so a parallel suite on the same NATS never answers here.
    const service = `rpctest${process.pid}${Math.floor(Math.random() * 1e6)}`;
    server.register(service, {
      echo: async (input: { n: number }) => ({ n: input.n }),
      blob: async (input: { kb: number }) => 'x'.repeat(input.kb * 1024),
      fail: async (input: { n: number }) => {
        throw notFound(`no ${input.n}`);
      },
      slow: async (input: { ms: number; n: number }) => {
        await new Promise((r) => setTimeout(r, input.ms));
        return { n: input.n };
      },
      // A worker's query on text from the caller, on a real PostgreSQL.
      stored: async (input: { text: string }) => {
        const pool = testPool(process.env.TESSERA_TEST_ADMIN_URL!);
        try {
          return (await pool.query<{ t: string }>('SELECT $1::text AS t', [input.text])).rows[0]!.t;
        } finally {
          await pool.end();
        }
      },
    });
    await server.serve();
    const client = new Rpc(
      log,
      createMetrics({ role: 'api' }),
      5000,
      await Rpc.connectNats(NATS_URL!, 'a'),
      'nats',
    );
    after(async () => {
      await client.close();
      await server.close();
    });
    return client.client<Echo>(service);
  };

  it('when 500 calls go at once, then each gets its own answer and errors keep their status', async () => {
    const svc = await start();
    const answers = await Promise.all(Array.from({ length: 500 }, (_, n) => svc.echo({ n })));
    assert.deepEqual(
      answers.map((a) => a.n),
      Array.from({ length: 500 }, (_, n) => n),
    );
    const mixed = await Promise.allSettled(
      Array.from({ length: 40 }, (_, n) => (n % 2 ? svc.fail({ n }) : svc.echo({ n }))),
    );
    mixed.forEach((r, n) => {
      if (n % 2 === 0) assert.deepEqual(r, { status: 'fulfilled', value: { n } });
      else {
        assert.equal(r.status, 'rejected');
        const err = (r as PromiseRejectedResult).reason as HttpError;
        assert.equal(err.statusCode, 404);
        assert.equal(err.message, `no ${n}`);
      }
    });
  });

  it('when slow calls hold every request slot of a method, then a later call on it is not held behind them', async () => {
    const svc = await start();
    const order: string[] = [];
    const slow = [1, 2].map((n) => svc.slow({ ms: 2000, n }).then(() => order.push(`slow ${n}`)));
    await new Promise((r) => setTimeout(r, 100)); // both slots are taken
    const fast = svc.slow({ ms: 0, n: 3 }).then(() => order.push('fast'));
    await Promise.all([...slow, fast]);
    assert.equal(order[0], 'fast', order.join(', '));
  });

  it('when batched answers together exceed one NATS message, then every call still gets its answer', async () => {
    const svc = await start();
    // 20 × 300 KB: the first 2 go alone (2 requests in flight per method), the other 18 wait and
    // go together: 5.4 MB, far over the 1 MB default max_payload, each well under it alone.
    const blobs = await Promise.all(Array.from({ length: 20 }, () => svc.blob({ kb: 300 })));
    assert.ok(blobs.every((b) => b.length === 300 * 1024));
  });

  it('when one answer alone exceeds a NATS message, then that call fails with a clear 502 and others succeed', async () => {
    const svc = await start();
    const [big, small] = await Promise.allSettled([svc.blob({ kb: 2048 }), svc.echo({ n: 1 })]);
    assert.equal(big.status, 'rejected');
    assert.equal(((big as PromiseRejectedResult).reason as HttpError).statusCode, 502);
    assert.match(((big as PromiseRejectedResult).reason as Error).message, /larger than NATS's max_payload/);
    assert.deepEqual(small, { status: 'fulfilled', value: { n: 1 } });
  });

  it("when a handler's query fails on a NUL character from the caller, then that call gets 400 and the others their answers", async () => {
    const svc = await start();
    const [bad, good] = await Promise.allSettled([
      svc.stored({ text: 'a\u0000b' }),
      svc.stored({ text: 'ab' }),
    ]);
    assert.equal(bad.status, 'rejected');
    assert.equal(((bad as PromiseRejectedResult).reason as HttpError).statusCode, 400);
    assert.match(((bad as PromiseRejectedResult).reason as HttpError).message, /NUL character/);
    assert.deepEqual(good, { status: 'fulfilled', value: 'ab' });
  });

  it('when one call is too large to send, then it fails with 413 and the rest of its batch goes through', async () => {
    const svc = await start();
    const huge = { n: 0, pad: 'y'.repeat(2 * 1024 * 1024) };
    const [tooBig, ok] = await Promise.allSettled([svc.echo(huge), svc.echo({ n: 2 })]);
    assert.equal(tooBig.status, 'rejected');
    assert.equal(((tooBig as PromiseRejectedResult).reason as HttpError).statusCode, 413);
    assert.deepEqual(ok, { status: 'fulfilled', value: { n: 2 } });
  });

  it('when a request reaches the worker past its deadline, then the handler does not run and it is counted as expired', async () => {
    const metrics = createMetrics({ role: 'worker' });
    const server = new Rpc(log, metrics, 5000, await Rpc.connectNats(NATS_URL!, 'w'));
    const service = `rpcdeadline${process.pid}${Math.floor(Math.random() * 1e6)}`;
    let ran = 0;
    server.register(service, {
      create: async () => {
        ran++;
        return 'made';
      },
    });
    await server.serve();
    const raw = await Rpc.connectNats(NATS_URL!, 'raw');
    after(async () => {
      await raw.close();
      await server.close();
    });
    const subject = `tessera.rpc.${service}.create`;
    const call = (deadline: number) => {
      const h = headers();
      h.set('Tessera-Deadline', String(deadline));
      return raw.request(subject, '[{}]', { timeout: 1000, headers: h });
    };
    // As a request that waited in a stalled worker (or on the wire) until its caller gave up.
    await assert.rejects(call(Date.now() - 1), 'no answer: the caller is gone');
    assert.equal(ran, 0, 'the write was not made');
    const expired = await metrics.registry.getSingleMetricAsString('tessera_rpc_expired_total');
    assert.match(expired, new RegExp(`service="${service}",method="create"[^}]*} 1$`, 'm'));
    // Within its deadline, the same request runs.
    const ok = await call(Date.now() + 5000);
    assert.deepEqual(ok.json(), [{ ok: true, data: 'made' }]);
    assert.equal(ran, 1);
  });
});
