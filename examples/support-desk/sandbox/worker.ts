/**
 * The sandbox thread of `run_code`: evaluates one program (the job in `workerData`) with QuickJS and
 * posts the outcome back. Its parent ends the thread if the program outlives its time limit.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { evaluate, type SandboxJob } from './quickjs.js';

const job = workerData as SandboxJob;
parentPort!.postMessage('started');
parentPort!.postMessage(await evaluate(job.code, job.input, job.limits));
