/**
 * The join store against the real Redis: the compare-and-set that makes record + decide + close
 * atomic, the final-marker claim inside the close, and the claim of due stages that keeps two
 * replicas' timers off the same stage.
 */
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { newEvent } from '@mesh/envelope';
import type { Redis } from '@mesh/redis';
import { testRedis, uniqueName } from '@mesh/testkit';
import {
  causeOf,
  JoinStore,
  type Change,
  type ClosedStage,
  type JoinSpec,
  type StageRef,
} from '../src/index.ts';

async function store(t: TestContext): Promise<JoinStore & { redis: Redis }> {
  const { redis, prefix } = await testRedis(t, 'store');
  const joins = new JoinStore(redis, { prefix, ttlMs: 60_000 });
  return Object.assign(joins, { redis });
}

const spec: JoinSpec = { nodes: ['a', 'b'], join: 'all', final: true };
const cause = causeOf(newEvent({ type: 'io.mesh.subtask.completed', source: '/test', data: {} }));
const closed = (ref: StageRef): ClosedStage => ({
  cause,
  reason: 'all_succeeded',
  stage: {
    ...ref,
    status: 'completed',
    results: { a: { node: 'a' }, b: { node: 'b' } },
    failures: {},
    usage: {},
    final: true,
  },
  outcome: {
    type: 'io.mesh.task.completed',
    data: {
      taskId: ref.taskId,
      output: { a: { node: 'a' }, b: { node: 'b' } },
      status: 'completed',
      usage: {},
    },
  },
});
const record = (node: string): Change => ({
  node: { id: node, outcome: { ok: true, output: { node } } },
  spec,
  first: cause,
});

test('commit is a compare-and-set: a stale writer gets conflict, a closed stage takes nothing, a published one keeps no data', async (t) => {
  const s = await store(t);
  const ref = { taskId: uniqueName('task'), stageId: 's1' };
  assert.deepEqual(await s.commit(ref, '0', record('a')), { state: 'recorded' });
  // A writer that read the stage before `a` was recorded must not overwrite it.
  assert.deepEqual(await s.commit(ref, '0', record('b')), { state: 'conflict' });
  const state = await s.load(ref);
  assert.equal(state.version, '1');
  assert.deepEqual(Object.keys(state.outcomes), ['a']);
  assert.deepEqual(state.spec, spec);
  assert.deepEqual(state.first, cause);

  const close = {
    ...record('b'),
    close: { closed: closed(ref), finalType: 'io.mesh.task.completed', republishAt: 1 },
  };
  assert.deepEqual(await s.commit(ref, '1', close), { state: 'closed', final: 'claimed' });
  assert.deepEqual(await s.commit(ref, '2', record('b')), { state: 'conflict' }, 'closed');
  const after = await s.load(ref);
  assert.deepEqual(after.closed, closed(ref));
  assert.equal(after.final, 'claimed');
  assert.equal(after.published, false);
  assert.deepEqual(await s.claimDue(Date.now(), 60_000, 10), [s.member(ref)]);

  await s.markPublished(ref);
  const published = await s.load(ref);
  assert.equal(published.published, true);
  assert.deepEqual(await s.claimDue(Date.now() + 120_000, 60_000, 10), []);
  // What only deciding and publishing needed is gone; that it was decided and published stays,
  // with its final claim, for the TTL.
  assert.deepEqual(published.outcomes, {});
  assert.equal(published.spec, undefined);
  assert.equal(published.first, undefined);
  assert.equal(published.closed, undefined);
  assert.equal(published.final, 'claimed');
  assert.deepEqual((await s.redis.hkeys(s.stateKey(ref))).sort(), [
    'final',
    'published',
    'version',
  ]);
  const bytes = Number(await s.redis.memory('USAGE', s.stateKey(ref)));
  assert.ok(bytes > 0 && bytes < 400, `a published stage takes ${bytes} bytes`);
  assert.deepEqual(await s.commit(ref, '2', record('c')), { state: 'conflict' }, 'still closed');
  assert.ok((await s.redis.pttl(s.stateKey(ref))) > 0, 'kept for the TTL, not forever');
});

test('closing the final stage claims mesh:final:<taskId> with SET NX, atomically', async (t) => {
  const s = await store(t);
  const close = (ref: StageRef): Change => ({
    ...record('a'),
    close: { closed: closed(ref), finalType: 'io.mesh.task.completed', republishAt: 1 },
  });
  const won = { taskId: uniqueName('task'), stageId: 's1' };
  assert.deepEqual(await s.commit(won, '0', close(won)), { state: 'closed', final: 'claimed' });
  assert.equal(await s.redis.get(s.finalKey(won.taskId)), 'io.mesh.task.completed');
  assert.ok((await s.redis.pttl(s.finalKey(won.taskId))) > 0, 'kept for the TTL, not forever');

  // Another path (the orchestrator's cancel) ended the task first.
  const lost = { taskId: uniqueName('task'), stageId: 's1' };
  await s.redis.set(s.finalKey(lost.taskId), 'io.mesh.task.cancelled', 'PX', 60_000);
  assert.deepEqual(await s.commit(lost, '0', close(lost)), { state: 'closed', final: 'taken' });
  assert.equal(await s.redis.get(s.finalKey(lost.taskId)), 'io.mesh.task.cancelled');
  assert.equal((await s.load(lost)).final, 'taken');
  await s.redis.del(s.finalKey(won.taskId), s.finalKey(lost.taskId));
});

test('claimDue hands each due stage to one caller until its lease passes', async (t) => {
  const s = await store(t);
  const now = Date.now();
  const members = Array.from({ length: 40 }, (_, i) => `task-${i}\u0000s1`);
  for (const member of members) await s.schedule(member, now - 1);
  await s.schedule('later\u0000s1', now + 60_000);
  const [one, two] = await Promise.all([s.claimDue(now, 5_000, 25), s.claimDue(now, 5_000, 25)]);
  const taken = [...(one ?? []), ...(two ?? [])];
  assert.equal(taken.length, 40, 'every due stage is taken');
  assert.equal(new Set(taken).size, 40, 'by one caller only');
  assert.ok(!taken.includes('later\u0000s1'));
  assert.deepEqual(await s.claimDue(now + 1_000, 5_000, 100), [], 'held while leased');
  assert.equal((await s.claimDue(now + 5_000, 5_000, 100)).length, 40, 'due again afterwards');
  assert.deepEqual(s.refOf('task-1\u0000s1'), { taskId: 'task-1', stageId: 's1' });
});
