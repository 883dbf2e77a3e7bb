/**
 * `node services/worker/src/main.ts`: the worker process with the built-in and LLM agents. A bad
 * variable — of the core ones or the worker's own, including the rules that tie them together —
 * ends it with status 78 and one stderr line per variable, before anything connects.
 */
import { runWorker } from './index.ts';

runWorker();
