// Worker threads for CPU-heavy work in TypeScript modules. A worker does not inherit tsx's
// in-process registration (bin/tessera.js calls register(), it passes no --import flag that
// execArgv could forward), so the worker's first step is to register tsx and then import the module.
import { Worker } from 'node:worker_threads';

const tsxApi = import.meta.resolve('tsx/esm/api');

/** Runs the TypeScript module at `moduleUrl` on a new worker thread; it reads `workerData`. */
export function startTsWorker(moduleUrl: URL, workerData: unknown): Worker {
  const boot = `import(${JSON.stringify(tsxApi)}).then(({ register }) => { register(); return import(${JSON.stringify(moduleUrl.href)}); })`;
  return new Worker(boot, { eval: true, workerData });
}

/** The first message of a worker that answers once; rejects on its error or an exit before it. */
export function firstMessage<T>(worker: Worker): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    worker.once('message', resolve);
    worker.once('error', reject);
    worker.once('exit', (code) =>
      reject(new Error(`worker thread exited with code ${code} before answering`)),
    );
  });
}
