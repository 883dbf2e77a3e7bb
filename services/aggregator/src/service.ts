/**
 * The aggregator service: the `aggregator` group on `mesh.results`, joining each stage's results
 * and publishing `io.mesh.stage.completed` to `mesh.stages` (and the final stage's task outcome to
 * `mesh.outputs`), plus the timer that decides stages whose deadline passed.
 */
import { parseDuration, type MeshConfig } from '@mesh/config';
import { redisKeyPrefix } from '@mesh/runtime';
import type { ServiceDefinition } from '@mesh/service';
import { Aggregator } from './aggregator.ts';
import { eventTypes } from './outcome.ts';

export const defaultTick = '250ms';

/**
 * The sorted set of stage deadlines: `mesh:agg:deadlines` for the default topic prefix. Another
 * prefix (a second mesh, or a test, on the same Redis) has its own key prefix and so its own set:
 * its timer never decides a stage of another mesh.
 */
export function deadlinesKey(config: Pick<MeshConfig, 'topicPrefix'>): string {
  return `${redisKeyPrefix(config.topicPrefix)}agg:deadlines`;
}

export const aggregatorService: ServiceDefinition = {
  name: 'aggregator',
  defaultHttpPort: 8083,
  async setup({ config, runtime }) {
    const aggregator = new Aggregator(runtime, {
      tickMs: parseDuration(config.env.MESH_AGGREGATOR_TICK ?? defaultTick),
      // A closed stage still unpublished after a lease TTL lost its publisher (the process died).
      republishAfterMs: config.leaseTtlMs,
    });
    await runtime.consume({
      groupId: 'aggregator',
      topics: [runtime.topics.results],
      handlers: {
        [eventTypes.subtaskCompleted]: (ctx) => aggregator.handleResult(ctx),
        [eventTypes.subtaskFailed]: (ctx) => aggregator.handleResult(ctx),
      },
      // The loop guards stop circular delegation where work is dispatched (the worker); a result
      // dead-lettered here would only leave its stage without a join.
      loopGuards: false,
      agentLabel: () => 'aggregator',
    });
    aggregator.start();
    return () => aggregator.stop();
  },
};
