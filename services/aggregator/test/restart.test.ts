/**
 * Crash safety against the real stack: the join state lives in Redis, so a new aggregator process
 * carries on a stage another one started, and a stage closed but never published is published by
 * the redelivered result or, failing that, by the timer.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { MeshEvent } from '@mesh/envelope';
import { waitFor } from '@mesh/testkit';
import {
  causeOf,
  decide,
  JoinStore,
  stageCompletedData,
  taskOutcome,
  type JoinSpec,
  type NodeOutcome,
  type StageCompletedData,
} from '../src/index.ts';
import { completed, startHarness, taskId } from './helpers.ts';

test('join state survives a restart of the aggregator', async (t) => {
  const h = await startHarness(t);
  const first = await h.startAggregator();
  const task = taskId();
  const stage: JoinSpec = { nodes: ['n1', 'n2'], join: 'all', final: true };
  const r1 = completed({ taskId: task, nodeId: 'n1', stage, usage: { promptTokens: 1 } });
  await h.send(r1);
  await h.handled(r1);
  assert.ok(await h.runtime.redis.hexists(h.runtime.key(`agg`, task, `s1`), 'node:n1'));
  await first.stop();

  const second = await h.startAggregator();
  const r2 = completed({ taskId: task, nodeId: 'n2', stage, usage: { promptTokens: 2 } });
  await h.send(r2);
  const [event] = await h.waitForEvents(h.runtime.topics.stages, task);
  const data = event?.data as StageCompletedData;
  assert.equal(data.status, 'completed');
  assert.deepEqual(data.results, { n1: { text: 'output of n1' }, n2: { text: 'output of n2' } });
  assert.deepEqual(data.usage, { promptTokens: 3 });
  const [outcome] = await h.waitForEvents(h.runtime.topics.outputs, task);
  assert.deepEqual((outcome?.data as { output: unknown }).output, data.results);
  // The new process handled the second result only: the first outcome came from Redis.
  const consumed = await second.runtime.metrics.consumed.get();
  const handled = consumed.values
    .filter((v) => v.labels.type === 'io.mesh.subtask.completed')
    .reduce((n, v) => n + v.value, 0);
  assert.equal(handled, 1);
});

test('a stage closed but not published is published by the redelivery, else by the timer', async (t) => {
  const h = await startHarness(t);
  const agg = await h.startAggregator();
  const store = new JoinStore(h.runtime.redis, {
    prefix: agg.runtime.keyPrefix,
    ttlMs: agg.config.idempotencyTtlMs,
  });
  const stage: JoinSpec = { nodes: ['n1'], join: 'all', final: true };
  /** Leaves the stage as a process that crashed right after closing it would. */
  const closeWithoutPublishing = async (result: MeshEvent, republishAt: number): Promise<void> => {
    const data = result.data as { taskId: string; stageId: string; output: object };
    const ref = { taskId: data.taskId, stageId: data.stageId };
    const outcomes: Record<string, NodeOutcome> = {
      n1: { ok: true, output: data.output as Record<string, unknown> },
    };
    const decision = decide(stage, outcomes, false);
    assert.ok(decision.status !== 'undecided');
    const stageData = stageCompletedData(ref, stage, outcomes, decision);
    const outcome = taskOutcome(stage, stageData, decision);
    const result_ = await store.commit(ref, '0', {
      node: { id: 'n1', outcome: outcomes.n1 as NodeOutcome },
      spec: stage,
      first: causeOf(result),
      close: {
        closed: { cause: causeOf(result), reason: decision.reason, stage: stageData, outcome },
        finalType: outcome.type,
        republishAt,
      },
    });
    assert.deepEqual(result_, { state: 'closed', final: 'claimed' });
  };

  // Redelivered: the result whose handler crashed comes again and publishes the stage.
  const redelivered = taskId();
  const r1 = completed({ taskId: redelivered, nodeId: 'n1', stage });
  await closeWithoutPublishing(r1, Date.now() + 600_000);
  await h.send(r1);
  const [event] = await h.waitForEvents(h.runtime.topics.stages, redelivered);
  assert.equal(event?.causationid, r1.id);
  const [outcome] = await h.waitForEvents(h.runtime.topics.outputs, redelivered);
  assert.equal(outcome?.type, 'io.mesh.task.completed');
  await waitFor(
    async () =>
      (await h.runtime.redis.hget(h.runtime.key(`agg`, redelivered, `s1`), 'published')) === '1',
  );

  // Not redelivered (its offset was committed, say): the timer publishes it once it is due.
  const orphan = taskId();
  const r2 = completed({ taskId: orphan, nodeId: 'n1', stage });
  await closeWithoutPublishing(r2, Date.now());
  const [orphanEvent] = await h.waitForEvents(h.runtime.topics.stages, orphan);
  assert.equal(orphanEvent?.causationid, r2.id);
  await h.waitForEvents(h.runtime.topics.outputs, orphan);
  await waitFor(
    async () =>
      (await h.runtime.redis.hget(h.runtime.key(`agg`, orphan, `s1`), 'published')) === '1',
  );
  await h.flush(h.runtime.topics.stages, orphan);
  assert.equal((await h.eventsOf(h.runtime.topics.stages, orphan)).length, 1);
});
