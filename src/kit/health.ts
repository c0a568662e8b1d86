// /health answers within 2 s whatever the dependencies do: every check runs in parallel against a
// 1.5 s deadline, and a hung database connection is destroyed rather than returned to the pool.
import type { Kit } from './kit.ts';
import type { HealthCheck } from './module.ts';

export const CHECK_DEADLINE_MS = 1500;

interface CheckResult {
  status: 'ok' | 'error';
  latencyMs: number;
  error?: string;
}

function deadline<T>(work: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} did not answer within ${ms} ms`)), ms);
  });
  return Promise.race([work, timeout]).finally(() => clearTimeout(timer));
}

export function databaseCheck(kit: Kit): HealthCheck {
  return {
    name: 'database',
    async check() {
      let timedOut = false;
      const attempt = (async () => {
        const client = await kit.pool.connect();
        try {
          await client.query('SELECT 1');
          client.release();
        } catch (err) {
          client.release(err as Error);
          throw err;
        }
        if (timedOut) throw new Error('late');
      })();
      try {
        await deadline(attempt, CHECK_DEADLINE_MS, 'PostgreSQL');
      } catch (err) {
        timedOut = true;
        attempt.catch(() => undefined);
        throw err;
      }
    },
  };
}

export function natsCheck(kit: Kit): HealthCheck {
  return {
    name: 'nats',
    async check() {
      const nc = kit.nats!;
      if (nc.isClosed()) throw new Error('NATS connection closed');
      await deadline(nc.flush(), CHECK_DEADLINE_MS, 'NATS');
    },
  };
}

export async function runHealth(kit: Kit, checks: HealthCheck[]) {
  const entries = await Promise.all(
    checks.map(async (c): Promise<[string, CheckResult]> => {
      const started = performance.now();
      try {
        await c.check();
        return [c.name, { status: 'ok', latencyMs: Math.round(performance.now() - started) }];
      } catch (err) {
        return [
          c.name,
          {
            status: 'error',
            latencyMs: Math.round(performance.now() - started),
            error: (err as Error).message,
          },
        ];
      }
    }),
  );
  const results = Object.fromEntries(entries);
  const failing = entries.filter(([, r]) => r.status === 'error').map(([n]) => n);
  return {
    healthy: failing.length === 0,
    body: {
      status: failing.length === 0 ? 'healthy' : 'unhealthy',
      version: kit.version,
      role: kit.role,
      uptime: Math.round((Date.now() - kit.startedAt) / 1000),
      database: results.database?.status === 'ok' ? 'connected' : 'disconnected',
      ...(failing.length ? { failing } : {}),
      checks: results,
    },
  };
}
