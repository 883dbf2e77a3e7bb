/**
 * Stage deadlines against the real stack: the aggregator's timer decides a stage whose deadline
 * passed with results missing, by its `onTimeout`.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { MeshEvent } from '@mesh/envelope';
import { waitFor } from '@mesh/testkit';
import {
  deadlinesKey,
  outcomeEventId,
  stageEventId,
  type JoinSpec,
  type StageCompletedData,
} from '../src/index.ts';
import { completed, startHarness, taskId } from './helpers.ts';

const dataOf = (event: MeshEvent | undefined): StageCompletedData =>
  event?.data as StageCompletedData;

test('deadline with onTimeout partial: partial after the deadline, with the one result', async (t) => {
  const h = await startHarness(t);
  const agg = await h.startAggregator();
  const task = taskId();
  const deadline = new Date(Date.now() + 2_000);
  const stage: JoinSpec = {
    nodes: ['n1', 'n2'],
    join: 'all',
    deadline: deadline.toISOString(),
    onTimeout: 'partial',
    final: true,
  };
  const r1 = completed({ taskId: task, nodeId: 'n1', stage, usage: { steps: 1 } });
  await h.send(r1);
  await h.handled(r1);
  const member = `${task}\u0000s1`;
  const score = await agg.runtime.redis.zscore(deadlinesKey(agg.config), member);
  assert.equal(Number(score), deadline.getTime(), 'the stage is scheduled at its deadline');

  const [event] = await h.waitForEvents(h.runtime.topics.stages, task);
  assert.ok(Date.now() >= deadline.getTime());
  assert.ok(Date.parse(event?.time ?? '') >= deadline.getTime(), 'decided after the deadline');
  assert.equal(event?.id, stageEventId({ taskId: task, stageId: 's1' }));
  assert.equal(event?.causationid, r1.id, 'a timer decision is caused by the first result');
  assert.deepEqual(dataOf(event), {
    taskId: task,
    stageId: 's1',
    status: 'partial',
    results: { n1: { text: 'output of n1' } },
    failures: {
      n2: { failure: 'timeout', detail: `no result before the stage deadline ${stage.deadline}` },
    },
    usage: { steps: 1 },
    final: true,
  });
  const [outcome] = await h.waitForEvents(h.runtime.topics.outputs, task);
  assert.equal(outcome?.type, 'io.mesh.task.completed');
  assert.equal(outcome?.id, outcomeEventId(task));
  assert.deepEqual(outcome?.data, {
    taskId: task,
    output: { n1: { text: 'output of n1' } },
    status: 'partial',
    usage: { steps: 1 },
  });
  await waitFor(
    async () => (await agg.runtime.redis.zscore(deadlinesKey(agg.config), member)) === null,
    { message: 'the published stage stays scheduled' },
  );

  // The late result is ignored.
  const late = completed({ taskId: task, nodeId: 'n2', stage });
  await h.send(late);
  await h.handled(late);
  await h.flush(h.runtime.topics.stages, task);
  assert.equal((await h.eventsOf(h.runtime.topics.stages, task)).length, 1);
});

test('deadline with onTimeout fail: failed, and the final stage fails the task', async (t) => {
  const h = await startHarness(t);
  await h.startAggregator();
  const task = taskId();
  const stage: JoinSpec = {
    nodes: ['n1', 'n2', 'n3'],
    join: 'quorum',
    quorum: 2,
    deadline: new Date(Date.now() + 1_500).toISOString(),
    onTimeout: 'fail',
    final: true,
  };
  await h.send(completed({ taskId: task, nodeId: 'n2', stage }));
  const [event] = await h.waitForEvents(h.runtime.topics.stages, task);
  assert.equal(dataOf(event).status, 'failed');
  assert.deepEqual(dataOf(event).results, { n2: { text: 'output of n2' } });
  assert.deepEqual(Object.keys(dataOf(event).failures), ['n1', 'n3']);
  const [outcome] = await h.waitForEvents(h.runtime.topics.outputs, task);
  assert.equal(outcome?.type, 'io.mesh.task.failed');
  const data = outcome?.data as { reason: string; detail: string; stageId: string };
  assert.equal(data.reason, 'stage_failed');
  assert.equal(data.stageId, 's1');
  assert.match(data.detail, /n1 \(timeout\), n3 \(timeout\)/);
  assert.equal(await h.runtime.redis.get(h.runtime.key('final', task)), 'io.mesh.task.failed');
});

test('two replicas: every due stage is decided and published once', async (t) => {
  // Quick ticks make the two timers race for the same due stages.
  const h = await startHarness(t, {}, { MESH_AGGREGATOR_TICK: '10ms' });
  await h.startAggregator();
  await h.startAggregator();
  const deadline = new Date(Date.now() + 2_500).toISOString();
  const tasks = Array.from({ length: 30 }, () => taskId());
  const stage: JoinSpec = { nodes: ['n1', 'n2'], join: 'all', deadline, onTimeout: 'partial' };
  await h.send(...tasks.map((task) => completed({ taskId: task, nodeId: 'n1', stage })));
  for (const task of tasks) {
    const [event] = await h.waitForEvents(h.runtime.topics.stages, task);
    assert.equal(dataOf(event).status, 'partial');
  }
  for (const task of tasks) {
    await h.flush(h.runtime.topics.stages, task);
    assert.equal((await h.eventsOf(h.runtime.topics.stages, task)).length, 1, task);
  }
});
