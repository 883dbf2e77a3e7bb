/**
 * The task store against the real Redis: the final-state claim that lets a retried path publish
 * and refuses every other path.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createRedis, waitForRedis } from '@mesh/redis';
import { meshEnv, onCleanup, uniqueName } from '@mesh/testkit';
import { TaskStore } from '../src/index.ts';

test('the final claim: the claimant may claim again (a retry publishes), another path may not', async (t) => {
  const env = await meshEnv();
  const redis = createRedis({ url: env.MESH_REDIS_URL }, { connectionName: 'orchestrator-test' });
  onCleanup(t, () => redis.disconnect());
  await waitForRedis(redis);
  const prefix = `${uniqueName('tasks')}:`;
  const store = new TaskStore(redis, { prefix, ttlMs: 60_000 });
  onCleanup(t, async () => {
    const keys = await redis.keys(`${prefix}*`);
    if (keys.length > 0) await redis.del(...keys);
  });

  assert.equal(await store.claimFinal('t1', 'io.mesh.task.failed', 'final-1 cause-1'), true);
  assert.equal(
    await store.claimFinal('t1', 'io.mesh.task.failed', 'final-1 cause-1'),
    true,
    'the same path, retried after a lost reply or a crash, still owns the claim',
  );
  assert.equal(
    await store.claimFinal('t1', 'io.mesh.task.cancelled', 'final-2 cause-2'),
    false,
    'another path is refused',
  );
  assert.equal(
    await store.claimFinal('t1', 'io.mesh.task.failed', 'final-1 cause-3'),
    false,
    'the same final type from another cause is refused',
  );
  assert.equal(await store.finalOf('t1'), 'io.mesh.task.failed');
  assert.ok((await redis.pttl(`${prefix}final:t1`)) > 0, 'the marker expires');

  // A marker the aggregator set (no claimant recorded) is never the orchestrator's.
  await redis.set(`${prefix}final:t2`, 'io.mesh.task.completed', 'PX', 60_000);
  assert.equal(await store.claimFinal('t2', 'io.mesh.task.failed', 'final-1 cause-1'), false);
  assert.equal(await store.finalOf('t2'), 'io.mesh.task.completed');
});
