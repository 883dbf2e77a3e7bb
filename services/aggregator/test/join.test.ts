/**
 * The join policies end to end against the real stack: results on `mesh.results` in, one
 * `io.mesh.stage.completed` on `mesh.stages` out, decided by the join spec the results carry.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { MeshEvent } from '@mesh/envelope';
import { stageEventId, type JoinSpec, type StageCompletedData } from '../src/index.ts';
import { completed, failed, startHarness, taskId } from './helpers.ts';

const dataOf = (event: MeshEvent | undefined): StageCompletedData =>
  event?.data as StageCompletedData;

test('all: the stage completes only after every node, caused by the last result', async (t) => {
  const h = await startHarness(t);
  const agg = await h.startAggregator();
  const task = taskId();
  const stage: JoinSpec = { nodes: ['n1', 'n2', 'n3'], join: 'all', final: false };
  const r1 = completed({ taskId: task, nodeId: 'n1', stage, usage: { promptTokens: 1 } });
  const r2 = completed({ taskId: task, nodeId: 'n2', stage, usage: { promptTokens: 2 } });
  const stray = completed({ taskId: task, nodeId: 'n9', stage });
  await h.send(r1, r2, stray);
  await h.handled(r1, r2, stray);
  const key = agg.runtime.redis;
  const state = await key.hgetall(h.runtime.key(`agg`, task, `s1`));
  assert.deepEqual(
    Object.keys(state)
      .filter((f) => f.startsWith('node:'))
      .sort(),
    ['node:n1', 'node:n2'],
  );
  assert.equal(state.closed, undefined, 'two of three nodes do not close an all-join');
  await h.flush(h.runtime.topics.stages, task);
  assert.equal((await h.eventsOf(h.runtime.topics.stages, task)).length, 0);

  const r3 = completed({ taskId: task, nodeId: 'n3', stage, usage: { promptTokens: 4 } });
  await h.send(r3);
  const [event] = await h.waitForEvents(h.runtime.topics.stages, task);
  assert.ok(event);
  assert.equal(event.id, stageEventId({ taskId: task, stageId: 's1' }));
  assert.equal(event.causationid, r3.id, 'derived from the result that decided the stage');
  assert.equal(event.correlationid, task);
  assert.equal(event.hopcount, 1);
  assert.deepEqual(dataOf(event), {
    taskId: task,
    stageId: 's1',
    status: 'completed',
    results: {
      n1: { text: 'output of n1' },
      n2: { text: 'output of n2' },
      n3: { text: 'output of n3' },
    },
    failures: {},
    usage: { promptTokens: 7 },
    final: false,
  });
  await h.flush(h.runtime.topics.outputs, task);
  assert.equal((await h.eventsOf(h.runtime.topics.outputs, task)).length, 0, 'not a final stage');
});

test('all: one failure fails the stage at once; later results are ignored', async (t) => {
  const h = await startHarness(t);
  await h.startAggregator();
  const task = taskId();
  const stage: JoinSpec = { nodes: ['n1', 'n2', 'n3'], join: 'all' };
  const r1 = completed({ taskId: task, nodeId: 'n1', stage });
  const f2 = failed({ taskId: task, nodeId: 'n2', stage, failure: 'timeout', detail: 'slow' });
  await h.send(r1, f2);
  const [event] = await h.waitForEvents(h.runtime.topics.stages, task);
  assert.equal(event?.causationid, f2.id);
  assert.deepEqual(dataOf(event), {
    taskId: task,
    stageId: 's1',
    status: 'failed',
    results: { n1: { text: 'output of n1' } },
    failures: { n2: { failure: 'timeout', detail: 'slow' } },
    usage: {},
    final: false,
  });
  const late = completed({ taskId: task, nodeId: 'n3', stage });
  await h.send(late);
  await h.handled(late);
  await h.flush(h.runtime.topics.stages, task);
  assert.equal((await h.eventsOf(h.runtime.topics.stages, task)).length, 1);
});

test('quorum: 2 of 3 completes at the second success; fails once unreachable', async (t) => {
  const h = await startHarness(t);
  await h.startAggregator();
  const task = taskId();
  const stage: JoinSpec = { nodes: ['a', 'b', 'c'], join: 'quorum', quorum: 2 };
  const fa = failed({ taskId: task, nodeId: 'a', stage });
  const rb = completed({ taskId: task, nodeId: 'b', stage });
  await h.send(fa, rb);
  await h.handled(fa, rb);
  await h.flush(h.runtime.topics.stages, task);
  assert.equal((await h.eventsOf(h.runtime.topics.stages, task)).length, 0, 'one success of two');
  const rc = completed({ taskId: task, nodeId: 'c', stage });
  await h.send(rc);
  const [done] = await h.waitForEvents(h.runtime.topics.stages, task);
  assert.equal(dataOf(done).status, 'completed');
  assert.deepEqual(Object.keys(dataOf(done).results), ['b', 'c']);
  assert.deepEqual(Object.keys(dataOf(done).failures), ['a']);

  // A second stage of the same task: two failures make a quorum of 2 of 3 unreachable.
  const q2: JoinSpec = { nodes: ['a', 'b', 'c'], join: 'quorum', quorum: 2 };
  await h.send(
    failed({ taskId: task, stageId: 's2', nodeId: 'a', stage: q2 }),
    failed({ taskId: task, stageId: 's2', nodeId: 'c', stage: q2 }),
  );
  const events = await h.waitForEvents(h.runtime.topics.stages, task, 2);
  const s2 = events.map(dataOf).find((d) => d.stageId === 's2');
  assert.equal(s2?.status, 'failed');
  assert.deepEqual(Object.keys(s2?.failures ?? {}), ['a', 'c']);
});

test('first: the first success wins, later results are ignored, one stage event', async (t) => {
  const h = await startHarness(t);
  await h.startAggregator();
  const task = taskId();
  const stage: JoinSpec = { nodes: ['n1', 'n2', 'n3'], join: 'first' };
  const f1 = failed({ taskId: task, nodeId: 'n1', stage });
  const r2 = completed({ taskId: task, nodeId: 'n2', stage, output: { answer: 42 } });
  const r3 = completed({ taskId: task, nodeId: 'n3', stage, output: { answer: 43 } });
  await h.send(f1, r2, r3);
  await h.handled(f1, r2, r3);
  await h.flush(h.runtime.topics.stages, task);
  const events = await h.eventsOf(h.runtime.topics.stages, task);
  assert.equal(events.length, 1);
  assert.equal(events[0]?.causationid, r2.id);
  assert.equal(dataOf(events[0]).status, 'completed');
  assert.deepEqual(dataOf(events[0]).results, { n2: { answer: 42 } });
  assert.deepEqual(Object.keys(dataOf(events[0]).failures), ['n1']);
});

test('duplicates: a redelivered result and a second outcome of a node count once', async (t) => {
  const h = await startHarness(t);
  await h.startAggregator();
  const task = taskId();
  const stage: JoinSpec = { nodes: ['n1', 'n2'], join: 'all' };
  const usage = { promptTokens: 10, completionTokens: 5, costUsd: 0.25, steps: 1 };
  const r1 = completed({ taskId: task, nodeId: 'n1', stage, usage, output: { v: 'first' } });
  // The same node again under a new id (e.g. a retried subtask that also finished).
  const again = completed({ taskId: task, nodeId: 'n1', stage, usage, output: { v: 'second' } });
  await h.send(r1, r1, again);
  await h.handled(r1, again);
  const r2 = completed({ taskId: task, nodeId: 'n2', stage, usage });
  await h.send(r2, r2);
  const [event] = await h.waitForEvents(h.runtime.topics.stages, task);
  assert.deepEqual(dataOf(event).results, { n1: { v: 'first' }, n2: { text: 'output of n2' } });
  assert.deepEqual(dataOf(event).usage, {
    promptTokens: 20,
    completionTokens: 10,
    costUsd: 0.5,
    steps: 2,
  });
  await h.handled(r2);
  await h.flush(h.runtime.topics.stages, task);
  assert.equal((await h.eventsOf(h.runtime.topics.stages, task)).length, 1);
});

test('a result without a stage spec is a single-node stage', async (t) => {
  const h = await startHarness(t);
  await h.startAggregator();
  const task = taskId();
  await h.send(completed({ taskId: task, stageId: 'plan', nodeId: 'planner' }));
  const [event] = await h.waitForEvents(h.runtime.topics.stages, task);
  assert.deepEqual(dataOf(event), {
    taskId: task,
    stageId: 'plan',
    status: 'completed',
    results: { planner: { text: 'output of planner' } },
    failures: {},
    usage: {},
    final: false,
  });
});
