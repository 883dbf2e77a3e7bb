import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  admit,
  deadlinePassed,
  decide,
  quorumOf,
  singleNodeSpec,
  sumUsage,
  type JoinSpec,
  type NodeOutcome,
  type Outcomes,
} from './join.ts';

const ok: NodeOutcome = { ok: true, output: { text: 'x' } };
const ko: NodeOutcome = { ok: false, failure: 'timeout', detail: 'slow' };
const spec = (join: JoinSpec['join'], more: Partial<JoinSpec> = {}): JoinSpec => ({
  nodes: ['a', 'b', 'c'],
  join,
  ...more,
});
const status = (s: JoinSpec, outcomes: Outcomes, expired = false): string =>
  decide(s, outcomes, expired).status;

test('all: completed only when every node succeeded', () => {
  const all = spec('all');
  assert.equal(status(all, {}), 'undecided');
  assert.equal(status(all, { a: ok }), 'undecided');
  assert.equal(status(all, { a: ok, b: ok }), 'undecided');
  assert.deepEqual(decide(all, { a: ok, b: ok, c: ok }, false), {
    status: 'completed',
    reason: 'all_succeeded',
    timedOut: [],
  });
});

test('all: failed as soon as one node failed', () => {
  assert.deepEqual(decide(spec('all'), { b: ko }, false), {
    status: 'failed',
    reason: 'node_failed',
    timedOut: [],
  });
  assert.equal(status(spec('all'), { a: ok, b: ok, c: ko }), 'failed');
});

test('quorum: completed at n successes, failed once n is out of reach', () => {
  const q = spec('quorum', { quorum: 2 });
  assert.equal(status(q, { a: ok }), 'undecided');
  assert.equal(status(q, { a: ko }), 'undecided');
  assert.equal(status(q, { a: ko, b: ok }), 'undecided');
  assert.deepEqual(decide(q, { a: ok, c: ok }, false), {
    status: 'completed',
    reason: 'quorum_reached',
    timedOut: [],
  });
  assert.deepEqual(decide(q, { a: ko, b: ko }, false), {
    status: 'failed',
    reason: 'quorum_unreachable',
    timedOut: [],
  });
});

test('quorum: a majority by default, never more than the nodes', () => {
  assert.equal(quorumOf(spec('quorum')), 2);
  assert.equal(quorumOf({ nodes: ['a', 'b', 'c', 'd'], join: 'quorum' }), 3);
  assert.equal(quorumOf(spec('quorum', { quorum: 7 })), 3);
  assert.equal(status(spec('quorum', { quorum: 7 }), { a: ok, b: ok, c: ok }), 'completed');
});

test('first: completed at the first success, failed when all failed', () => {
  const first = spec('first');
  assert.equal(status(first, { a: ko }), 'undecided');
  assert.deepEqual(decide(first, { a: ko, c: ok }, false), {
    status: 'completed',
    reason: 'first_succeeded',
    timedOut: [],
  });
  assert.deepEqual(decide(first, { a: ko, b: ko, c: ko }, false), {
    status: 'failed',
    reason: 'all_failed',
    timedOut: [],
  });
});

test('deadline: partial with at least one success when onTimeout is partial', () => {
  const s = spec('all', { onTimeout: 'partial' });
  assert.equal(status(s, { a: ok }), 'undecided');
  assert.deepEqual(decide(s, { a: ok }, true), {
    status: 'partial',
    reason: 'deadline',
    timedOut: ['b', 'c'],
  });
  assert.deepEqual(decide(s, {}, true), {
    status: 'failed',
    reason: 'deadline',
    timedOut: ['a', 'b', 'c'],
  });
  assert.equal(
    status(spec('quorum', { quorum: 3, onTimeout: 'partial' }), { a: ok }, true),
    'partial',
  );
});

test('deadline: failed when onTimeout is fail or unset', () => {
  assert.equal(status(spec('all', { onTimeout: 'fail' }), { a: ok, b: ok }, true), 'failed');
  assert.equal(status(spec('all'), { a: ok }, true), 'failed');
  assert.equal(status(spec('first', { onTimeout: 'partial' }), { a: ko }, true), 'failed');
});

test('deadline: a rule that is met wins over the deadline', () => {
  assert.equal(
    status(spec('all', { onTimeout: 'partial' }), { a: ok, b: ok, c: ok }, true),
    'completed',
  );
  assert.equal(status(spec('all', { onTimeout: 'partial' }), { a: ok, b: ko }, true), 'failed');
});

test('outcomes of nodes outside the spec do not count', () => {
  assert.equal(status(spec('all'), { a: ok, b: ok, z: ok }), 'undecided');
  assert.equal(status(spec('first'), { z: ok }), 'undecided');
  assert.equal(status(spec('all'), { z: ko }), 'undecided');
});

test('admit: the first outcome of a node wins; unknown nodes are refused', () => {
  assert.equal(admit(spec('all'), {}, 'a'), 'new');
  assert.equal(admit(spec('all'), { a: ok }, 'a'), 'duplicate');
  assert.equal(admit(spec('all'), { a: ok }, 'zz'), 'unknown_node');
  // Object prototype keys are not outcomes.
  assert.equal(admit({ nodes: ['constructor'], join: 'all' }, {}, 'constructor'), 'new');
});

test('a result without a stage is a single-node stage', () => {
  const single = singleNodeSpec('n1');
  assert.deepEqual(single, { nodes: ['n1'], join: 'all', final: false });
  assert.equal(status(single, { n1: ok }), 'completed');
  assert.equal(status(single, { n1: ko }), 'failed');
});

test('deadlinePassed reads RFC 3339 and ignores a missing or unreadable deadline', () => {
  const at = Date.parse('2030-01-01T00:00:00Z');
  const s = spec('all', { deadline: '2030-01-01T00:00:00Z' });
  assert.equal(deadlinePassed(s, at - 1), false);
  assert.equal(deadlinePassed(s, at), true);
  assert.equal(deadlinePassed(spec('all'), at), false);
  assert.equal(deadlinePassed(spec('all', { deadline: 'soon' }), at), false);
});

test('sumUsage adds the keys present and keeps costs exact enough', () => {
  assert.deepEqual(sumUsage([]), {});
  assert.deepEqual(
    sumUsage([
      { promptTokens: 1, completionTokens: 2, costUsd: 0.1 },
      undefined,
      { promptTokens: 3, costUsd: 0.2, steps: 1 },
    ]),
    { promptTokens: 4, completionTokens: 2, costUsd: 0.3, steps: 1 },
  );
});
