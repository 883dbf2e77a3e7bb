/**
 * Set-up of the aggregator's integration tests against the real stack: the aggregator in-process on
 * a fresh topic prefix, a separate runtime that publishes results as a worker would, and a probe on
 * `mesh.stages` and `mesh.outputs`.
 */
import type { TestContext } from 'node:test';
import { newEvent, type MeshEvent } from '@mesh/envelope';
import type { MeshConfig } from '@mesh/config';
import { topicSpecs, type MeshRuntime } from '@mesh/runtime';
import { startService, type RunningService } from '@mesh/service';
import {
  meshEnv,
  onCleanup,
  probeTopics,
  testConfig,
  uniqueName,
  waitFor,
  type TopicProbe,
} from '@mesh/testkit';
import { testRuntime } from '@mesh/testkit/runtime';
import { aggregatorService, deadlinesKey, type JoinSpec, type Usage } from '../src/index.ts';

export interface Harness {
  /** Publishes results and reads what the aggregator wrote. */
  runtime: MeshRuntime;
  probe: TopicProbe;
  /** The aggregator's environment: the stack, the test's prefix, an ephemeral port. */
  env: NodeJS.ProcessEnv;
  /** Starts an aggregator (stopped at the end of the test unless stopped before). */
  startAggregator(): Promise<RunningService>;
  /** Publishes results to `mesh.results`. */
  send(...events: MeshEvent[]): Promise<void>;
  /** Resolves once the aggregator group completed (or skipped as done) every one of `events`. */
  handled(...events: MeshEvent[]): Promise<void>;
  /** Decoded events of `taskId` on a topic, in the order they were read. */
  eventsOf(topic: string, taskId: string): Promise<MeshEvent[]>;
  /**
   * Waits until the probe has read everything written to `topic` for `taskId` so far: a marker
   * with the same key lands after it in the same partition. Use before asserting "nothing more".
   */
  flush(topic: string, taskId: string): Promise<void>;
  /** Waits for `count` events of `taskId` on `topic` and returns them. */
  waitForEvents(topic: string, taskId: string, count?: number): Promise<MeshEvent[]>;
}

const markerType = 'io.mesh.task.cancel';

/**
 * `vars` apply to the test's runtime and the aggregator; `aggregatorVars` (the aggregator's own
 * variables, unknown to other services) to the aggregator only.
 */
export async function startHarness(
  t: TestContext,
  vars: Record<string, string> = {},
  aggregatorVars: Record<string, string> = {},
): Promise<Harness> {
  const stack = await meshEnv();
  // Join state and final markers of a test need not outlive it by the default week.
  vars = { MESH_IDEMPOTENCY_TTL: '1h', ...vars };
  const config = testConfig(stack, 'aggregator-test', vars);
  const runtime = testRuntime(t, config);
  onCleanup(t, () => runtime.redis.del(deadlinesKey(config)).catch(() => undefined));
  await createTopics(runtime, config);
  await runtime.start();
  const probe = await probeTopics(runtime.kafka, [runtime.topics.stages, runtime.topics.outputs]);
  onCleanup(t, () => probe.stop());
  const env: NodeJS.ProcessEnv = {
    ...stack,
    MESH_TOPIC_PREFIX: config.topicPrefix,
    MESH_HTTP_PORT: '0',
    MESH_PARTITIONS: String(config.partitions),
    MESH_SHUTDOWN_TIMEOUT: '5s',
    MESH_LOG_LEVEL: 'warn',
    MESH_AGGREGATOR_TICK: '100ms',
    ...vars,
    ...aggregatorVars,
  };
  const groupId = runtime.groupId('aggregator');

  const eventsOf = async (topic: string, taskId: string): Promise<MeshEvent[]> => {
    const events: MeshEvent[] = [];
    for (const record of probe.on(topic)) {
      if (record.key?.toString() !== taskId) continue;
      const event = await runtime.codec.decode(record);
      if (event.type !== markerType) events.push(event);
    }
    return events;
  };

  return {
    runtime,
    probe,
    env,
    async startAggregator() {
      const service = await startService(aggregatorService, env);
      onCleanup(t, () => service.stop());
      return service;
    },
    async send(...events) {
      await runtime.publish(events.map((event) => ({ topic: runtime.topics.results, event })));
    },
    async handled(...events) {
      await waitFor(
        async () => {
          for (const event of events) {
            const marker = await runtime.redis.get(runtime.idempotency.key(groupId, event.id));
            if (marker?.startsWith('done:') !== true) return false;
          }
          return true;
        },
        { message: 'the aggregator did not handle the results' },
      );
    },
    eventsOf,
    async flush(topic, taskId) {
      const marker = newEvent({
        type: markerType,
        source: '/test',
        correlationid: taskId,
        data: { taskId, reason: 'flush marker' },
      });
      await runtime.publish([{ topic, event: marker }]);
      await waitFor(() => probe.on(topic).some((r) => probe.header(r, 'ce_id') === marker.id), {
        message: `the probe did not read ${topic}`,
      });
    },
    async waitForEvents(topic, taskId, count = 1) {
      return waitFor(
        async () => {
          const events = await eventsOf(topic, taskId);
          return events.length >= count ? events : undefined;
        },
        { timeout: 30_000, message: `expected ${count} event(s) of ${taskId} on ${topic}` },
      );
    },
  };
}

/**
 * Creates the test's topics and waits until the broker serves their metadata, before any client
 * subscribes. A freshly created topic can answer UNKNOWN_TOPIC_OR_PARTITION for a moment on a busy
 * broker, which fails `ensureTopics` or a consumer's subscription at start.
 */
async function createTopics(runtime: MeshRuntime, config: MeshConfig): Promise<void> {
  const specs = topicSpecs(config, []);
  await waitFor(() => runtime.admin.ensureTopics(specs).then(() => true), {
    timeout: 30_000,
    interval: 250,
    message: 'could not create the test topics',
  });
  await waitFor(
    async () => {
      for (const { topic } of specs) await runtime.admin.endOffsets(topic);
      return true;
    },
    { timeout: 30_000, interval: 250, message: 'the test topics did not become available' },
  );
}

export interface ResultInit {
  taskId: string;
  stageId?: string;
  nodeId: string;
  stage?: JoinSpec;
  usage?: Usage;
}

/** An `io.mesh.subtask.completed` as a worker publishes it. */
export function completed(init: ResultInit & { output?: Record<string, unknown> }): MeshEvent {
  return newEvent({
    type: 'io.mesh.subtask.completed',
    source: '/test/worker',
    correlationid: init.taskId,
    data: {
      taskId: init.taskId,
      stageId: init.stageId ?? 's1',
      nodeId: init.nodeId,
      agent: 'echo',
      output: init.output ?? { text: `output of ${init.nodeId}` },
      ...(init.usage === undefined ? {} : { usage: init.usage }),
      ...(init.stage === undefined ? {} : { stage: init.stage }),
    },
  });
}

/** An `io.mesh.subtask.failed` as a worker publishes it after its last attempt. */
export function failed(init: ResultInit & { failure?: string; detail?: string }): MeshEvent {
  return newEvent({
    type: 'io.mesh.subtask.failed',
    source: '/test/worker',
    correlationid: init.taskId,
    data: {
      taskId: init.taskId,
      stageId: init.stageId ?? 's1',
      nodeId: init.nodeId,
      agent: 'echo',
      failure: init.failure ?? 'handler_error',
      detail: init.detail ?? `node ${init.nodeId} gave up`,
      attempts: 3,
      ...(init.usage === undefined ? {} : { usage: init.usage }),
      ...(init.stage === undefined ? {} : { stage: init.stage }),
    },
  });
}

export function taskId(): string {
  return uniqueName('task');
}
