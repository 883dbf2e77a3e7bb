/**
 * Shared set-up of the runtime integration tests: a runtime on a fresh topic prefix against the real
 * stack, a probe on its outputs, and sample data for every event type.
 */
import type { TestContext } from 'node:test';
import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { newEvent, type MeshEvent } from '@mesh/envelope';
import {
  meshEnv,
  onCleanup,
  probeTopics,
  testConfig,
  waitFor,
  type TopicProbe,
} from '@mesh/testkit';
import { testRuntime } from '@mesh/testkit/runtime';
import type { MeshRuntime, HandlerContext, HandlerResult } from '../src/index.ts';

export interface Harness {
  runtime: MeshRuntime;
  probe: TopicProbe;
}

export async function startRuntime(
  t: TestContext,
  vars: Record<string, string> = {},
  agents: string[] = ['echo'],
): Promise<Harness> {
  const env = await meshEnv();
  const config = testConfig(env, 'runtime-test', vars);
  const runtime = testRuntime(t, config, { agents });
  await runtime.start();
  const probe = await probeTopics(runtime.kafka, [
    runtime.topics.results,
    runtime.topics.dlq,
    ...config.retryTiers.map((tier) => runtime.topics.retry(tier.name)),
  ]);
  onCleanup(t, () => probe.stop());
  return { runtime, probe };
}

/** Waits until `groupId` has committed every partition of `topic` to its end: nothing left unfinished. */
export async function committedToEnd(
  runtime: MeshRuntime,
  groupId: string,
  topic: string,
): Promise<void> {
  await waitFor(
    async () => {
      const partitions = await runtime.admin.lag(groupId, [topic]);
      return partitions.length > 0 && partitions.every((p) => p.lag === 0);
    },
    { message: `${groupId} did not commit ${topic} to its end` },
  );
}

export const sampleData: Record<string, Record<string, unknown>> = {
  'io.mesh.task.requested': {
    input: { topic: 'tides' },
    template: 'research',
    budget: { maxSteps: 10, maxTokens: 1000, maxCostUsd: 0.5 },
    timeoutMs: 60_000,
  },
  'io.mesh.subtask.assigned': {
    taskId: 't1',
    stageId: 's1',
    nodeId: 'n1',
    agent: 'echo',
    input: { text: 'hi' },
    flags: { strictOutput: true },
  },
  'io.mesh.subtask.completed': {
    taskId: 't1',
    stageId: 's1',
    nodeId: 'n1',
    agent: 'echo',
    output: { text: 'hi' },
    usage: { promptTokens: 1, completionTokens: 2, costUsd: 0 },
    durationMs: 3,
  },
  'io.mesh.subtask.failed': {
    taskId: 't1',
    stageId: 's1',
    nodeId: 'n1',
    agent: 'echo',
    failure: 'timeout',
    detail: 'took too long',
    attempts: 3,
  },
  'io.mesh.stage.completed': {
    taskId: 't1',
    stageId: 's1',
    status: 'partial',
    results: { n1: { text: 'hi' } },
    failures: { n2: { failure: 'timeout' } },
  },
  'io.mesh.task.completed': {
    taskId: 't1',
    output: { summary: 'done' },
    status: 'completed',
    durationMs: 10,
  },
  'io.mesh.task.failed': { taskId: 't1', reason: 'budget_exceeded', detail: 'token budget spent' },
  'io.mesh.task.cancelled': { taskId: 't1', reason: 'user asked' },
  'io.mesh.task.cancel': { taskId: 't1', reason: 'user asked' },
  'io.mesh.approval.granted': { taskId: 't1', gateId: 'review', by: 'ada' },
  'io.mesh.approval.denied': { taskId: 't1', gateId: 'review', by: 'ada', comment: 'no' },
  'io.mesh.approval.requested': { taskId: 't1', gateId: 'review', stageId: 's2', prompt: 'ok?' },
  'io.mesh.escalation.opened': {
    taskId: 't1',
    eventId: 'e1',
    eventType: 'io.mesh.subtask.assigned',
    failure: 'schema_violation',
    detail: 'bad',
    originTopic: 'mesh.work.echo',
  },
};

/** An assigned subtask for `agent`, ready to publish to its work topic. */
export function assigned(
  agent: string,
  input: Record<string, unknown>,
  taskId?: string,
): MeshEvent {
  return newEvent({
    type: 'io.mesh.subtask.assigned',
    source: '/test',
    ...(taskId === undefined ? {} : { correlationid: taskId }),
    agent,
    data: { taskId: taskId ?? 'task', stageId: 's1', nodeId: 'n1', agent, input },
  });
}

/** The handler output every echo test agent returns: a completed subtask for the assignment. */
export function completedFor(
  event: MeshEvent,
  output: Record<string, unknown>,
): Record<string, unknown> {
  const data = event.data as { taskId: string; stageId: string; nodeId: string; agent: string };
  return {
    taskId: data.taskId,
    stageId: data.stageId,
    nodeId: data.nodeId,
    agent: data.agent,
    output,
  };
}

/**
 * What an echo worker's handler returns for `ctx`: the `subtask.completed` of its assignment with
 * `output`, on the results topic, with `echo` added to the agent path as a worker records itself.
 */
export function completion(
  runtime: MeshRuntime,
  ctx: HandlerContext,
  output: Record<string, unknown>,
): HandlerResult {
  return {
    emit: [
      {
        topic: runtime.topics.results,
        event: ctx.derive({
          type: 'io.mesh.subtask.completed',
          data: completedFor(ctx.event, output),
          visited: 'echo',
        }),
      },
    ],
  };
}

const workerFixture = fileURLToPath(new URL('./fixtures/worker-process.ts', import.meta.url));

/**
 * A consumer process of the `echo` work topic (fixtures/worker-process.ts), resolved once it is
 * consuming; killed with SIGKILL when the test ends if it is still running.
 */
export function startWorker(t: TestContext, env: NodeJS.ProcessEnv): Promise<ChildProcess> {
  const child = spawn(process.execPath, [workerFixture], {
    env,
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  t.after(() => {
    child.kill('SIGKILL');
  });
  return new Promise((resolve, reject) => {
    child.stdout?.on('data', (chunk: Buffer) => {
      if (chunk.toString().includes('ready')) resolve(child);
    });
    child.on('exit', (code) => reject(new Error(`worker exited with ${code} before it was ready`)));
  });
}
