// Worker thread of sortedKeySlices: computes and sorts one slice, hands its memory back (transfer).
import { parentPort, workerData } from 'node:worker_threads';
import { computeSortedKeys, type KeySpec } from './sorted-keys.ts';

const job = workerData as KeySpec & { start: number; n: number };
const keys = computeSortedKeys({ ...job, key: Buffer.from(job.key) }, job.start, job.n);
parentPort!.postMessage(keys, [keys.buffer as ArrayBuffer]);
