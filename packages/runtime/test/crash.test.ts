/**
 * Crash safety of the runtime against the real stack: a consumer process killed with SIGKILL in the
 * middle of a batch loses nothing, and no event that was completed runs again.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { waitFor } from '@mesh/testkit';
import { assigned, committedToEnd, completion, startRuntime, startWorker } from './helpers.ts';

test('kill -9 of a consumer mid-batch: nothing lost, nothing completed runs again', async (t) => {
  const { runtime, probe } = await startRuntime(t);
  const group = `crash-${randomUUID().slice(0, 8)}`;
  const env = {
    ...process.env,
    MESH_TOPIC_PREFIX: runtime.config.topicPrefix,
    MESH_PARTITIONS: '3',
    MESH_LOG_LEVEL: 'warn',
    MESH_LEASE_TTL: '3s',
    MESH_PARTITION_CONCURRENCY: '8',
    TEST_GROUP: group,
  };
  const total = 400;
  const events = Array.from({ length: total }, (_, i) =>
    assigned('echo', { i }, `crash-task-${i}`),
  );
  const topic = runtime.topics.work('echo');
  const first = await startWorker(t, env);
  await runtime.publish(events.map((event) => ({ topic, event })));
  await waitFor(() => probe.on(runtime.topics.results).length >= 60, {
    timeout: 60_000,
    message: 'worker made no progress',
  });
  first.kill('SIGKILL');
  await new Promise((resolve) => first.once('exit', resolve));

  // What this group had completed (done marker written) at the moment of the kill.
  const doneBefore = new Set<string>();
  for (const event of events) {
    const marker = await runtime.redis.get(
      runtime.idempotency.key(runtime.groupId(group), event.id),
    );
    if (marker?.startsWith('done:') === true) doneBefore.add(event.id);
  }
  assert.ok(
    doneBefore.size >= 50 && doneBefore.size < total,
    `killed mid-batch (${doneBefore.size} done)`,
  );

  await startWorker(t, env);
  const causes = (): Set<string> =>
    new Set(probe.on(runtime.topics.results).map((r) => probe.header(r, 'ce_causationid') ?? ''));
  await waitFor(() => causes().size === total, {
    timeout: 120_000,
    message: () => `results for ${causes().size} of ${total}`,
  });

  const runs = await Promise.all(
    events.map(async (e) => Number(await runtime.redis.get(`runs:${group}:${e.id}`))),
  );
  const rerunAfterDone = events.filter((e, i) => doneBefore.has(e.id) && (runs[i] ?? 0) !== 1);
  assert.deepEqual(
    rerunAfterDone.map((e) => e.id),
    [],
    'a completed event ran again',
  );
  assert.ok(
    runs.every((n) => n >= 1),
    'every event ran',
  );
  const duplicates = probe.on(runtime.topics.results).length - total;
  t.diagnostic(
    `events ${total}, done at kill ${doneBefore.size}, re-run (in flight at kill) ${runs.filter((n) => n > 1).length}, duplicate results ${duplicates}`,
  );
  // Duplicate results can only come from events that were in flight, never from completed ones.
  assert.ok(duplicates <= runs.filter((n) => n > 1).reduce((a, n) => a + n - 1, 0));
  await waitFor(
    async () =>
      (await runtime.admin.lag(runtime.groupId(group), [topic])).every((l) => l.lag === 0),
    { message: 'offsets not committed' },
  );
});

test('a 60-second handler with a 10-second session timeout causes no rebalance', async (t) => {
  const { runtime, probe } = await startRuntime(t, { MESH_PARTITIONS: '1' });
  const topic = runtime.topics.work('echo');
  let quick = 0;
  let slowRuns = 0;
  const consumer = await runtime.consume({
    groupId: 'long',
    topics: [topic],
    sessionTimeoutMs: 10_000,
    heartbeatIntervalMs: 1_000,
    handlers: {
      'io.mesh.subtask.assigned': async (ctx) => {
        if ((ctx.event.data as { input: { slow?: boolean } }).input.slow === true) {
          slowRuns += 1;
          await new Promise((resolve) => setTimeout(resolve, 60_000));
        } else {
          quick += 1;
        }
        return completion(runtime, ctx, {});
      },
    },
  });
  await waitFor(() => consumer.assignments === 1);
  await runtime.publish([{ topic, event: assigned('echo', { slow: true }, 'slow') }]);
  await waitFor(() => slowRuns === 1);
  // While the slow handler runs, other keys of the same partition keep flowing.
  for (let i = 0; i < 5; i += 1) {
    await runtime.publish([{ topic, event: assigned('echo', { i }, `quick-${i}`) }]);
    await new Promise((resolve) => setTimeout(resolve, 5_000));
  }
  assert.equal(quick, 5);
  await waitFor(() => probe.on(runtime.topics.results).length === 6, { timeout: 60_000 });
  assert.equal(slowRuns, 1, 'the slow handler ran once');
  assert.equal(consumer.assignments, 1, 'the member was never evicted and rejoined');
  await committedToEnd(runtime, consumer.groupId, topic);
});
