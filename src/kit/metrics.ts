// One prom-client registry per process: default process and event-loop metrics, the HTTP
// histogram, and every module's business metrics. Served on /metrics without auth.
import client from 'prom-client';

export type Registry = client.Registry;
export { client as prom };

export interface KitMetrics {
  registry: client.Registry;
  httpDuration: client.Histogram<'method' | 'route' | 'status_code'>;
  failuresInjected: client.Counter<'module' | 'kind' | 'mode'>;
  jobsTotal: client.Counter<'task' | 'outcome'>;
  jobDuration: client.Histogram<'task'>;
  rpcDuration: client.Histogram<'service' | 'method' | 'transport' | 'outcome'>;
  rpcExpired: client.Counter<'service' | 'method'>;
  authFailures: client.Counter<'kind'>;
  dbErrors: client.Counter<'kind'>;
  dbQueryDuration: client.Histogram<'outcome'>;
  dbSlowQueries: client.Counter;
  jobLocksReleased: client.Counter;
}

export function createMetrics(labels: Record<string, string>): KitMetrics {
  const registry = new client.Registry();
  registry.setDefaultLabels(labels);
  client.collectDefaultMetrics({ register: registry, eventLoopMonitoringPrecision: 20 });
  return {
    registry,
    httpDuration: new client.Histogram({
      name: 'http_request_duration_seconds',
      help: 'HTTP request duration by method, route and status code',
      labelNames: ['method', 'route', 'status_code'],
      buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
      registers: [registry],
    }),
    failuresInjected: new client.Counter({
      name: 'tessera_failures_injected_total',
      help: 'Failures injected by failure mode (seed 003)',
      labelNames: ['module', 'kind', 'mode'],
      registers: [registry],
    }),
    jobsTotal: new client.Counter({
      name: 'tessera_jobs_total',
      help: 'Jobs run, by task and outcome (success, failure)',
      labelNames: ['task', 'outcome'],
      registers: [registry],
    }),
    jobDuration: new client.Histogram({
      name: 'tessera_job_duration_seconds',
      help: 'Job run time by task',
      labelNames: ['task'],
      buckets: [0.005, 0.025, 0.1, 0.5, 1, 5, 15, 60, 300],
      registers: [registry],
    }),
    rpcDuration: new client.Histogram({
      name: 'tessera_rpc_duration_seconds',
      help: 'RPC call latency by service, method, transport and outcome',
      labelNames: ['service', 'method', 'transport', 'outcome'],
      buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1, 5],
      registers: [registry],
    }),
    rpcExpired: new client.Counter({
      name: 'tessera_rpc_expired_total',
      help: 'RPC requests a worker dropped unrun because they reached it past their deadline (the caller had answered 503)',
      labelNames: ['service', 'method'],
      registers: [registry],
    }),
    authFailures: new client.Counter({
      name: 'tessera_auth_failures_total',
      help: 'Rejected credentials by kind (api_key, session, scope, login, webhook)',
      labelNames: ['kind'],
      registers: [registry],
    }),
    dbErrors: new client.Counter({
      name: 'tessera_db_errors_total',
      help: 'PostgreSQL connection errors (kind=connection only); failed queries are tessera_db_query_duration_seconds{outcome="error"}',
      labelNames: ['kind'],
      registers: [registry],
    }),
    dbQueryDuration: new client.Histogram({
      name: 'tessera_db_query_duration_seconds',
      help: 'PostgreSQL query time by outcome (ok, error), COPY streams excluded',
      labelNames: ['outcome'],
      buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5],
      registers: [registry],
    }),
    dbSlowQueries: new client.Counter({
      name: 'tessera_db_slow_queries_total',
      help: 'Queries that took longer than 1 s (seed 004 alert threshold)',
      registers: [registry],
    }),
    jobLocksReleased: new client.Counter({
      name: 'tessera_job_locks_released_total',
      help: 'Jobs unlocked because the worker holding them stopped heartbeating (presumed dead)',
      registers: [registry],
    }),
  };
}
