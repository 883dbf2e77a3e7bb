import { test } from 'node:test';
import assert from 'node:assert/strict';
import { decide, type JoinSpec, type Outcomes } from './join.ts';
import { stageCompletedData, stageEvents, synthesise, taskOutcome } from './outcome.ts';

const ref = { taskId: 'task-1', stageId: 'write' };

function decided(spec: JoinSpec, outcomes: Outcomes, expired = false) {
  const decision = decide(spec, outcomes, expired);
  if (decision.status === 'undecided') throw new Error('undecided');
  return decision;
}

test('stage data: results, failures and summed usage in node order', () => {
  const spec: JoinSpec = { nodes: ['b', 'a', 'c'], join: 'quorum', quorum: 2 };
  const outcomes: Outcomes = {
    a: { ok: true, output: { text: 'A' }, usage: { promptTokens: 1, costUsd: 0.5 } },
    c: { ok: false, failure: 'timeout', detail: 'slow', usage: { promptTokens: 2 } },
    b: { ok: true, output: { text: 'B' }, usage: { promptTokens: 3, completionTokens: 4 } },
  };
  const stage = stageCompletedData(ref, spec, outcomes, decided(spec, outcomes));
  assert.deepEqual(stage, {
    taskId: 'task-1',
    stageId: 'write',
    status: 'completed',
    results: { b: { text: 'B' }, a: { text: 'A' } },
    failures: { c: { failure: 'timeout', detail: 'slow' } },
    usage: { promptTokens: 6, completionTokens: 4, costUsd: 0.5 },
    final: false,
  });
  assert.deepEqual(Object.keys(stage.results), ['b', 'a']);
});

test('stage data: a deadline marks the nodes without a result as timed out', () => {
  const spec: JoinSpec = {
    nodes: ['a', 'b'],
    join: 'all',
    onTimeout: 'partial',
    deadline: '2030-01-01T00:00:00.000Z',
    final: true,
  };
  const outcomes: Outcomes = { a: { ok: true, output: { v: 1 } } };
  const stage = stageCompletedData(ref, spec, outcomes, decided(spec, outcomes, true));
  assert.equal(stage.status, 'partial');
  assert.equal(stage.final, true);
  assert.deepEqual(stage.results, { a: { v: 1 } });
  assert.deepEqual(stage.failures, {
    b: {
      failure: 'timeout',
      detail: 'no result before the stage deadline 2030-01-01T00:00:00.000Z',
    },
  });
});

test('synthesis: a structured merge by default, text joined by concat', () => {
  const results = { b: { text: 'second', n: 2 }, a: { text: 'first', title: 'T' } };
  assert.deepEqual(synthesise({ nodes: ['a', 'b'], join: 'all' }, results), {
    a: { text: 'first', title: 'T' },
    b: { text: 'second', n: 2 },
  });
  assert.deepEqual(synthesise({ nodes: ['a', 'b'], join: 'all', synthesis: 'concat' }, results), {
    text: 'first\n\nT\n\nsecond',
    nodes: { a: { text: 'first', title: 'T' }, b: { text: 'second', n: 2 } },
  });
});

test('task outcome: completed or partial with the synthesised output and template', () => {
  const spec: JoinSpec = { nodes: ['a'], join: 'all', final: true, template: 'research' };
  const outcomes: Outcomes = { a: { ok: true, output: { x: 1 }, usage: { steps: 1 } } };
  const decision = decided(spec, outcomes);
  const stage = stageCompletedData(ref, spec, outcomes, decision);
  assert.deepEqual(taskOutcome(spec, stage, decision), {
    type: 'io.mesh.task.completed',
    data: {
      taskId: 'task-1',
      output: { a: { x: 1 } },
      status: 'completed',
      usage: { steps: 1 },
      template: 'research',
    },
  });
  const odd = { ...spec, template: 'Not A Template Name' };
  const outcome = taskOutcome(odd, stage, decision);
  assert.ok(outcome.type === 'io.mesh.task.completed' && !('template' in outcome.data));
});

test('task outcome: stage_failed naming the failed nodes and why each failed', () => {
  const spec: JoinSpec = { nodes: ['a', 'b', 'c'], join: 'all', final: true };
  const outcomes: Outcomes = {
    a: { ok: true, output: {} },
    b: { ok: false, failure: 'invalid_output', detail: 'bad json' },
  };
  const decision = decided(spec, outcomes);
  const stage = stageCompletedData(ref, spec, outcomes, decision);
  const outcome = taskOutcome(spec, stage, decision);
  assert.equal(outcome.type, 'io.mesh.task.failed');
  assert.ok(outcome.type === 'io.mesh.task.failed');
  assert.equal(outcome.data.reason, 'stage_failed');
  assert.equal(outcome.data.stageId, 'write');
  assert.equal(outcome.data.detail, 'stage write failed: b (invalid_output: bad json)');
});

test('task outcome: the detail of a missed deadline names the missing nodes, within 2000 chars', () => {
  const nodes = Array.from({ length: 100 }, (_, i) => `node-with-a-long-name-${i}`);
  const spec: JoinSpec = { nodes, join: 'all', final: true, deadline: '2030-01-01T00:00:00Z' };
  const decision = decided(spec, {}, true);
  const stage = stageCompletedData(ref, spec, {}, decision);
  const outcome = taskOutcome(spec, stage, decision);
  assert.ok(outcome.type === 'io.mesh.task.failed');
  assert.match(outcome.data.detail, /^stage write failed: deadline 2030-01-01T00:00:00Z passed/);
  assert.match(outcome.data.detail, /node-with-a-long-name-0 \(timeout\)/);
  assert.ok(outcome.data.detail.length <= 2000);
});

const jsonBytes = (data: unknown): number => Buffer.byteLength(JSON.stringify(data));

test('stage events within the limit are the decided stage and its outcome, unchanged', () => {
  const spec: JoinSpec = { nodes: ['a', 'b'], join: 'all', final: true };
  const outcomes: Outcomes = { a: { ok: true, output: { t: 'x' } }, b: { ok: true, output: {} } };
  const decision = decided(spec, outcomes);
  const stage = stageCompletedData(ref, spec, outcomes, decision);
  const limit = jsonBytes(stage);
  assert.deepEqual(stageEvents(ref, spec, outcomes, decision, limit, jsonBytes), {
    decision,
    stage,
    outcome: taskOutcome(spec, stage, decision),
  });
});

test('stage events too large for one event fail the stage, naming each output and its size', () => {
  const spec: JoinSpec = { nodes: ['c', 'a', 'b'], join: 'quorum', quorum: 2, final: true };
  const outcomes: Outcomes = {
    a: { ok: true, output: { text: 'é'.repeat(300) }, usage: { steps: 1 } },
    b: { ok: false, failure: 'timeout', detail: 'slow', usage: { steps: 1 } },
    c: { ok: true, output: { text: 'c'.repeat(100) }, usage: { steps: 1 } },
  };
  const decision = decided(spec, outcomes);
  assert.equal(decision.status, 'completed');
  const events = stageEvents(ref, spec, outcomes, decision, 500, jsonBytes);
  assert.deepEqual(events.decision, {
    status: 'failed',
    reason: 'results_too_large',
    timedOut: [],
  });
  const joined = stageCompletedData(ref, spec, outcomes, decision);
  const largest = Math.max(jsonBytes(joined), jsonBytes(taskOutcome(spec, joined, decision).data));
  const why = `the stage's results come to ${largest} bytes, more than the 500 bytes one event can carry`;
  assert.deepEqual(events.stage, {
    taskId: 'task-1',
    stageId: 'write',
    status: 'failed',
    results: {},
    // In the spec's node order; the real failure is kept; sizes in UTF-8 bytes of JSON.
    failures: {
      c: { failure: 'invalid_output', detail: `output of 111 bytes; ${why}` },
      a: { failure: 'invalid_output', detail: `output of 611 bytes; ${why}` },
      b: { failure: 'timeout', detail: 'slow' },
    },
    usage: { steps: 3 },
    final: true,
  });
  assert.ok(events.outcome?.type === 'io.mesh.task.failed');
  assert.equal(events.outcome.data.reason, 'stage_failed');
  assert.match(
    events.outcome.data.detail,
    /^stage write failed: c \(invalid_output: output of 111/,
  );
  assert.ok(jsonBytes(events.stage) <= 1_000 && jsonBytes(events.outcome.data) <= 1_000);
});

test('stage events: a task output larger than its stage (concat) is checked too', () => {
  const spec: JoinSpec = { nodes: ['a'], join: 'all', final: true, synthesis: 'concat' };
  const outcomes: Outcomes = { a: { ok: true, output: { text: 'y'.repeat(400) } } };
  const decision = decided(spec, outcomes);
  const stage = stageCompletedData(ref, spec, outcomes, decision);
  const limit = jsonBytes(stage) + 10;
  // `concat` carries the text twice (joined, and per node): the stage fits, the output does not.
  const events = stageEvents(ref, spec, outcomes, decision, limit, jsonBytes);
  assert.equal(events.stage.status, 'failed');
  assert.equal(events.decision.reason, 'results_too_large');
  assert.equal(events.outcome?.type, 'io.mesh.task.failed');
  const notFinal = { ...spec, final: false };
  const alone = stageEvents(ref, notFinal, outcomes, decision, limit, jsonBytes);
  assert.equal(alone.stage.status, 'completed', 'without a task outcome the stage fits');
  assert.equal(alone.outcome, undefined);
});
