#!/usr/bin/env node
/**
 * An outside client that knows nothing of Kafka: it POSTs a task to the orchestrator and polls the
 * task until it ends, printing each status change. Run it with `npm start` running:
 *
 *   node examples/http-client.ts examples/research.json
 *
 * MESH_ORCHESTRATOR_URL (default http://127.0.0.1:8080) and MESH_API_TOKEN are honoured.
 */
import { readFile } from 'node:fs/promises';
import { setTimeout as sleep } from 'node:timers/promises';

const base = (process.env.MESH_ORCHESTRATOR_URL ?? 'http://127.0.0.1:8080').replace(/\/+$/, '');
const token = process.env.MESH_API_TOKEN;
const file = process.argv[2] ?? 'examples/default.json';

interface Task {
  id: string;
  status: string;
  output?: unknown;
  failure?: { reason: string; detail: string };
}

async function call<T>(method: string, path: string, body?: unknown): Promise<T> {
  const response = await fetch(`${base}${path}`, {
    method,
    headers: {
      'content-type': 'application/json',
      ...(token === undefined ? {} : { authorization: `Bearer ${token}` }),
    },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
  const answer = (await response.json()) as T & { message?: string };
  if (!response.ok)
    throw new Error(`${method} ${path}: ${response.status} ${answer.message ?? ''}`);
  return answer;
}

const request: unknown = JSON.parse(await readFile(file, 'utf8'));
const { taskId } = await call<{ taskId: string }>('POST', '/v1/tasks', request);
console.log(`task ${taskId} accepted`);
let last = '';
for (;;) {
  const task = await call<Task>('GET', `/v1/tasks/${taskId}`);
  if (task.status !== last) {
    last = task.status;
    console.log(`task ${taskId}: ${last}`);
    if (last === 'awaiting_approval')
      console.log(`approve it with: npx mesh task ${taskId} --approve (or --deny)`);
  }
  if (['completed', 'failed', 'cancelled'].includes(task.status)) {
    console.log(JSON.stringify(task.output ?? task.failure ?? {}, null, 2));
    break;
  }
  await sleep(500);
}
