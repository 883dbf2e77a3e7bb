/**
 * Shared set-up of the worker's integration tests: the worker started in-process on a fresh topic
 * prefix against the real stack, a separate client runtime that publishes assignments and reads
 * Redis, and a probe on `mesh.results`, `mesh.dlq` and the retry tiers.
 */
import type { TestContext } from 'node:test';
import type { AddressInfo } from 'node:net';
import { newEvent, type MeshEvent } from '@mesh/envelope';
import type { ConsumedRecord } from '@mesh/kafka';
import type { MeshRuntime } from '@mesh/runtime';
import { startService, type RunningService } from '@mesh/service';
import {
  disposable,
  meshEnv,
  onCleanup,
  probeTopics,
  testConfig,
  uniqueName,
  waitFor,
  type TopicProbe,
} from '@mesh/testkit';
import { testRuntime } from '@mesh/testkit/runtime';
import {
  createFakeLlm,
  workerService,
  type FakeLlmBehaviour,
  type FakeLlmStats,
} from '../src/index.ts';

/** The client side of a test: publishes assignments, reads Redis and the topics. */
export interface TestClient {
  client: MeshRuntime;
  probe: TopicProbe;
  /** The environment a worker of this test starts with (another replica uses it too). */
  env: NodeJS.ProcessEnv;
}

export interface Harness extends TestClient {
  worker: RunningService;
}

const core = {
  MESH_PARTITIONS: '3',
  MESH_RETRY_TIERS: '1s,2s',
  MESH_SHUTDOWN_TIMEOUT: '5s',
  MESH_LOG_LEVEL: 'warn',
};

/**
 * The client side of a test on a fresh topic prefix (topics created, probe running) and the
 * environment a worker for it is started with: the stack's addresses, the test defaults, `vars`.
 */
export async function startClient(
  t: TestContext,
  vars: Record<string, string> = {},
  agents: string[] = ['echo', 'research', 'summarize', 'fact-check', 'draft', 'llm'],
): Promise<TestClient> {
  const stack = await meshEnv();
  const prefix = `${uniqueName('w')}.`;
  const coreVars = Object.fromEntries(
    Object.entries(vars).filter(
      ([name]) => (name in core && name !== 'MESH_LOG_LEVEL') || name === 'MESH_MAX_ATTEMPTS',
    ),
  );
  const config = testConfig(stack, 'worker-test', {
    ...core,
    ...coreVars,
    MESH_TOPIC_PREFIX: prefix,
  });
  const client = testRuntime(t, config, { agents });
  await client.start();
  const probe = await probeTopics(client.kafka, [
    client.topics.results,
    client.topics.dlq,
    ...config.retryTiers.map((tier) => client.topics.retry(tier.name)),
  ]);
  onCleanup(t, () => probe.stop());
  const env: NodeJS.ProcessEnv = {
    ...stack,
    ...core,
    MESH_TOPIC_PREFIX: prefix,
    MESH_HTTP_HOST: '127.0.0.1',
    MESH_HTTP_PORT: '0',
    ...vars,
  };
  return { client, probe, env };
}

/** Starts a worker (in-process, HTTP on port 0) with `vars` on top of the test defaults. */
export async function startWorker(
  t: TestContext,
  vars: Record<string, string> = {},
  agents?: string[],
): Promise<Harness> {
  const harness = await startClient(t, vars, agents);
  const worker = await startReplica(t, harness.env);
  return { ...harness, worker };
}

/** Another worker process-equivalent on the same environment (same groups: a replica). */
export async function startReplica(
  t: TestContext,
  env: NodeJS.ProcessEnv,
): Promise<RunningService> {
  const worker = await startService(workerService, env);
  onCleanup(t, () => worker.stop());
  return worker;
}

let sequence = 0;

/** An `io.mesh.subtask.assigned` for `agent`, as the orchestrator publishes it. */
export function assignment(
  agent: string,
  input: Record<string, unknown>,
  extra: Record<string, unknown> = {},
): MeshEvent<Record<string, unknown>> {
  sequence += 1;
  const taskId = (extra.taskId as string | undefined) ?? `${uniqueName('task')}-${sequence}`;
  return newEvent({
    type: 'io.mesh.subtask.assigned',
    source: '/test/orchestrator',
    correlationid: taskId,
    agent,
    data: { taskId, stageId: 's1', nodeId: 'n1', agent, input, ...extra },
  });
}

/** Publishes assignments to their agents' work topics. */
export async function publish(h: TestClient, ...events: MeshEvent[]): Promise<void> {
  await h.client.publish(
    events.map((event) => ({ topic: h.client.topics.work(event.agent ?? ''), event })),
  );
}

/** Records of `topic` that belong to the task of `event`. */
export function recordsOf(h: TestClient, topic: string, event: MeshEvent): ConsumedRecord[] {
  return h.probe
    .on(topic)
    .filter((r) => h.probe.header(r, 'ce_correlationid') === event.correlationid);
}

/** Waits for the result (completed or failed) of `event` on mesh.results and decodes it. */
export async function resultOf<D = Record<string, unknown>>(
  h: TestClient,
  event: MeshEvent,
  timeout = 20_000,
): Promise<MeshEvent<D>> {
  const record = await waitFor(() => recordsOf(h, h.client.topics.results, event)[0], {
    timeout,
    message: `no result for ${event.correlationid}`,
  });
  return (await h.client.codec.decode(record)) as MeshEvent<D>;
}

/** Waits for `event` on the retry tier `tier` (default the first) and returns the record. */
export function retriedOf(h: TestClient, event: MeshEvent, tier = '1s'): Promise<ConsumedRecord> {
  return waitFor(() => recordsOf(h, h.client.topics.retry(tier), event)[0], {
    message: `${event.correlationid} not on the ${tier} retry tier`,
  });
}

/** The in-process fake LLM on a free port, closed at the end of the test. */
export async function startFakeLlm(
  t: TestContext,
  behaviour: Partial<FakeLlmBehaviour> = {},
): Promise<{
  baseUrl: string;
  stats(): Promise<FakeLlmStats>;
  configure(change: Partial<FakeLlmBehaviour>): Promise<void>;
}> {
  const app = disposable(t, createFakeLlm(behaviour), (a) => a.close());
  await app.listen({ host: '127.0.0.1', port: 0 });
  const { port } = app.server.address() as AddressInfo;
  return {
    baseUrl: `http://127.0.0.1:${port}/v1`,
    stats: async () =>
      (await app.inject({ method: 'GET', url: '/admin/stats' })).json<FakeLlmStats>(),
    configure: async (change) => {
      const response = await app.inject({ method: 'POST', url: '/admin/config', payload: change });
      if (response.statusCode !== 200) throw new Error(`fake LLM refused ${response.body}`);
    },
  };
}

/** The variables of a worker that serves `llm` from the fake at `baseUrl`. */
export function llmVars(
  baseUrl: string,
  vars: Record<string, string> = {},
): Record<string, string> {
  return {
    MESH_WORKER_AGENTS: 'llm',
    MESH_LLM_BASE_URL: baseUrl,
    MESH_LLM_MODEL: 'fake-model',
    MESH_LLM_API_KEY: 'test-key',
    MESH_LLM_PROVIDER: uniqueName('fake'),
    ...vars,
  };
}
