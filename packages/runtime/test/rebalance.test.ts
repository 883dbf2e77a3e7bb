/**
 * Rebalances under load against the real stack: members of one group join and leave while events
 * are running (a deployment scaled out, then in). Revoked partitions move with work in flight on
 * the member that gave them up; the new owner must neither run that work again nor commit past it.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { waitFor } from '@mesh/testkit';
import { assigned, committedToEnd, startRuntime, startWorker } from './helpers.ts';

/** SIGTERM, then the exit code: the fixture drains, commits and leaves its group first. */
async function stopWorker(child: ChildProcess): Promise<number | null> {
  const exited = new Promise<number | null>((resolve) => child.once('exit', resolve));
  child.kill('SIGTERM');
  return exited;
}

test('members join and leave mid-load: every event runs once and has one result, offsets reach the end', async (t) => {
  const { runtime, probe } = await startRuntime(t);
  const group = `churn-${randomUUID().slice(0, 8)}`;
  const env = {
    ...process.env,
    MESH_TOPIC_PREFIX: runtime.config.topicPrefix,
    MESH_PARTITIONS: '6',
    MESH_LOG_LEVEL: 'warn',
    // Few at once per partition, so the run spans the rebalances (handlers take 100–300 ms).
    MESH_PARTITION_CONCURRENCY: '2',
    TEST_GROUP: group,
  };
  const total = 600;
  // Every twentieth event outlasts a rebalance, so some are still running when their partition moves.
  const events = Array.from({ length: total }, (_, i) =>
    assigned('echo', i % 20 === 0 ? { i, sleepMs: 3_000 } : { i }, `churn-task-${i % 97}`),
  );
  const topic = runtime.topics.work('echo');
  const results = (): number => probe.on(runtime.topics.results).length;
  const reach = async (count: number, what: string): Promise<void> => {
    await waitFor(() => results() >= count, {
      timeout: 120_000,
      message: () => `${what}: results for ${results()} of ${total}`,
    });
  };

  const first = await startWorker(t, env);
  await runtime.publish(events.map((event) => ({ topic, event })));
  await reach(60, 'the first member made no progress');
  // Scaled out to three: the first member's partitions are revoked with events running.
  const [second, third] = await Promise.all([startWorker(t, env), startWorker(t, env)]);
  await reach(250, 'no progress after two members joined');
  // Scaled in: two members leave, each mid-load, handing their partitions to the one left.
  assert.equal(await stopWorker(first), 0, 'the first member stopped cleanly');
  await reach(400, 'no progress after the first member left');
  assert.equal(await stopWorker(second), 0, 'the second member stopped cleanly');
  const causes = (): Set<string> =>
    new Set(probe.on(runtime.topics.results).map((r) => probe.header(r, 'ce_causationid') ?? ''));
  await waitFor(() => causes().size === total, {
    timeout: 120_000,
    message: () => `results for ${causes().size} of ${total} events`,
  });
  await committedToEnd(runtime, runtime.groupId(group), topic);

  const runs = await Promise.all(
    events.map(async (e) => Number(await runtime.redis.get(`runs:${group}:${e.id}`))),
  );
  const byMember = await Promise.all(
    [first, second, third].map(async (c) =>
      Number(await runtime.redis.get(`runs-by:${group}:${c.pid}`)),
    ),
  );
  t.diagnostic(`events ${total}, runs by member ${byMember.join(' / ')}`);
  assert.deepEqual(
    events.flatMap((e, i) => (runs[i] === 1 ? [] : [`${e.id} ran ${runs[i]} times`])),
    [],
    'an event ran more than once, or never',
  );
  assert.equal(results(), total, 'one result per event, none twice');
  assert.ok(
    byMember.every((n) => n > 0),
    `every member took partitions over and ran events (${byMember.join(' / ')})`,
  );
  assert.equal(
    byMember.reduce((a, n) => a + n, 0),
    total,
    'the members ran every event between them, once',
  );
});
