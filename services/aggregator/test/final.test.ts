/**
 * The final stage against the real stack: its join also ends the task, exactly once, and only when
 * the aggregator wins the task's final marker.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { outcomeEventId, stageEventId, type JoinSpec } from '../src/index.ts';
import { completed, failed, startHarness, taskId } from './helpers.ts';

test('final stage: task.completed with the merged output, exactly once', async (t) => {
  const h = await startHarness(t);
  await h.startAggregator();
  const task = taskId();
  const stage: JoinSpec = {
    nodes: ['draft', 'review'],
    join: 'all',
    final: true,
    template: 'research',
  };
  const r1 = completed({
    taskId: task,
    stageId: 'write',
    nodeId: 'draft',
    stage,
    output: { text: 'a draft' },
    usage: { promptTokens: 3, completionTokens: 4 },
  });
  const r2 = completed({
    taskId: task,
    stageId: 'write',
    nodeId: 'review',
    stage,
    output: { verdict: 'fine', score: 9 },
    usage: { promptTokens: 5 },
  });
  await h.send(r1, r2, r2);
  const [stageEvent] = await h.waitForEvents(h.runtime.topics.stages, task);
  const [outcome] = await h.waitForEvents(h.runtime.topics.outputs, task);
  assert.equal(outcome?.type, 'io.mesh.task.completed');
  assert.equal(outcome?.id, outcomeEventId(task));
  assert.equal(outcome?.causationid, stageEventId({ taskId: task, stageId: 'write' }));
  assert.equal(outcome?.causationid, stageEvent?.id, 'the task ends because its last stage did');
  assert.equal(outcome?.correlationid, task);
  assert.deepEqual(outcome?.data, {
    taskId: task,
    output: { draft: { text: 'a draft' }, review: { verdict: 'fine', score: 9 } },
    status: 'completed',
    usage: { promptTokens: 8, completionTokens: 4 },
    template: 'research',
  });
  assert.equal((stageEvent?.data as { final: boolean }).final, true);
  assert.equal(await h.runtime.redis.get(h.runtime.key('final', task)), 'io.mesh.task.completed');

  // A late duplicate of a result neither re-joins the stage nor ends the task again.
  const again = completed({ taskId: task, stageId: 'write', nodeId: 'draft', stage });
  await h.send(again);
  await h.handled(r1, r2, again);
  await h.flush(h.runtime.topics.outputs, task);
  await h.flush(h.runtime.topics.stages, task);
  assert.equal((await h.eventsOf(h.runtime.topics.outputs, task)).length, 1);
  assert.equal((await h.eventsOf(h.runtime.topics.stages, task)).length, 1);
});

test('final stage failed: task.failed with stage_failed naming the failed node', async (t) => {
  const h = await startHarness(t);
  await h.startAggregator();
  const task = taskId();
  const stage: JoinSpec = { nodes: ['a', 'b'], join: 'all', final: true };
  await h.send(
    failed({ taskId: task, nodeId: 'b', stage, failure: 'invalid_output', detail: 'not json' }),
  );
  const [outcome] = await h.waitForEvents(h.runtime.topics.outputs, task);
  assert.equal(outcome?.type, 'io.mesh.task.failed');
  assert.deepEqual(outcome?.data, {
    taskId: task,
    reason: 'stage_failed',
    detail: 'stage s1 failed: b (invalid_output: not json)',
    stageId: 's1',
    usage: {},
  });
});

test('final stage of a task that already ended: stage.completed but no task outcome', async (t) => {
  const h = await startHarness(t);
  await h.startAggregator();
  const task = taskId();
  // The orchestrator cancelled the task first and holds its final marker.
  await h.runtime.redis.set(h.runtime.key('final', task), 'io.mesh.task.cancelled', 'PX', 600_000);
  const stage: JoinSpec = { nodes: ['n1'], join: 'all', final: true };
  const r1 = completed({ taskId: task, nodeId: 'n1', stage });
  await h.send(r1);
  const [event] = await h.waitForEvents(h.runtime.topics.stages, task);
  assert.equal((event?.data as { status: string; final: boolean }).status, 'completed');
  assert.equal((event?.data as { final: boolean }).final, true);
  await h.handled(r1);
  await h.flush(h.runtime.topics.outputs, task);
  assert.equal((await h.eventsOf(h.runtime.topics.outputs, task)).length, 0);
  assert.equal(await h.runtime.redis.get(h.runtime.key('final', task)), 'io.mesh.task.cancelled');
  assert.equal(await h.runtime.redis.hget(h.runtime.key(`agg`, task, `s1`), 'final'), 'taken');
});
