/**
 * Readiness against a dependency that stops answering without going away: a real Redis of this test's
 * own, paused (SIGSTOP) as a network partition or a stalled host would leave it. Its connection stays
 * open, so nothing fails; only waiting for it can tell.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { pino } from 'pino';
import { meshEnv, privateRedis, testConfig, waitFor } from '@mesh/testkit';
import { testRuntime } from '@mesh/testkit/runtime';
import { readinessWaitMs, type HandlerContext } from '../src/index.ts';
import { assigned, completion, startRuntime } from './helpers.ts';

test('readiness answers within its wait when Redis stops answering, and is ready again when it answers', async (t) => {
  const redis = await privateRedis(t);
  const config = testConfig(await meshEnv(), 'readiness-test', { MESH_REDIS_URL: redis.url });
  const runtime = testRuntime(t, config, { agents: [] });
  await runtime.start();
  assert.deepEqual(await runtime.readiness(), {
    ready: true,
    kafka: true,
    redis: true,
    registry: true,
    consumers: true,
  });

  redis.pause();
  const asked = performance.now();
  const report = await runtime.readiness();
  const took = performance.now() - asked;
  redis.resume();
  assert.deepEqual(
    report,
    { ready: false, kafka: true, redis: false, registry: true, consumers: true },
    'a Redis that does not answer is reported, the others as they are',
  );
  assert.ok(
    took >= readinessWaitMs - 50 && took < readinessWaitMs + 1_000,
    `the probe took ${Math.round(took)} ms; it waits ${readinessWaitMs} ms for each dependency`,
  );
  assert.equal((await runtime.readiness()).ready, true, 'ready again once Redis answers');
});

test('a watched runtime logs once that it is not ready, naming Redis, and once that it is ready again; mesh_ready follows', async (t) => {
  const redis = await privateRedis(t);
  const config = testConfig(await meshEnv(), 'readiness-test', { MESH_REDIS_URL: redis.url });
  type Line = { level: number; msg: string; readiness?: unknown; notReadyMs?: number };
  const lines: Line[] = [];
  const logger = pino(
    { level: 'info' },
    { write: (line: string) => void lines.push(JSON.parse(line) as Line) },
  );
  const runtime = testRuntime(t, config, { agents: [], logger });
  await runtime.start();
  const watchEveryMs = 300;
  let looks = 0;
  const look = runtime.readiness.bind(runtime);
  runtime.readiness = () => {
    looks += 1;
    return look();
  };
  runtime.watchReadiness(watchEveryMs);
  const readinessLines = () =>
    lines.filter((l) => /ready/.test(l.msg) && l.readiness !== undefined);
  // A first look that finds the service ready says nothing; the next ones come every interval.
  await new Promise((resolve) => setTimeout(resolve, 7 * watchEveryMs));
  assert.deepEqual(readinessLines(), [], 'nothing is logged while the service is ready');
  assert.ok(looks >= 6, `${looks} looks in 7 intervals`);

  redis.pause();
  const paused = performance.now();
  const warned = await waitFor(() => readinessLines().find((l) => l.level === 40), {
    timeout: watchEveryMs + readinessWaitMs + 2_000,
    message: 'no not-ready warning',
  });
  const warnedAfter = performance.now() - paused;
  const readyGauge = async (): Promise<Record<string, number>> =>
    Object.fromEntries(
      (await runtime.metrics.ready.get()).values.map((v) => [String(v.labels.check), v.value]),
    );
  const whilePaused = await readyGauge();
  // Several more looks while Redis stays paused: the line is not repeated.
  await new Promise((resolve) => setTimeout(resolve, 2 * (watchEveryMs + readinessWaitMs)));
  redis.resume();
  const back = await waitFor(() => readinessLines().find((l) => l.level === 30), {
    timeout: watchEveryMs + readinessWaitMs + 2_000,
    message: 'no ready-again line',
  });
  assert.equal(
    warned.msg,
    `not ready: Redis did not answer a PING within ${readinessWaitMs / 1_000} s`,
  );
  assert.deepEqual(warned.readiness, {
    ready: false,
    kafka: true,
    redis: false,
    registry: true,
    consumers: true,
  });
  // A look starts within two intervals (a tick just after a look skips) and waits out the PING.
  assert.ok(
    warnedAfter < 2 * watchEveryMs + readinessWaitMs + 1_500,
    `the warning came ${Math.round(warnedAfter)} ms after Redis stopped answering`,
  );
  assert.match(back.msg, /^ready again after \d+(\.\d)? s$/);
  assert.ok(
    (back.notReadyMs ?? 0) >= 2 * (watchEveryMs + readinessWaitMs) - 500,
    `notReadyMs ${back.notReadyMs} covers the time Redis was paused`,
  );
  assert.deepEqual(
    readinessLines().map((l) => l.level),
    [40, 30],
    'one warning for the outage and one line when it ended',
  );
  assert.deepEqual(
    whilePaused,
    { kafka: 1, redis: 0, registry: 1, consumers: 1 },
    'mesh_ready names the failing check while Redis is paused',
  );
  assert.deepEqual(await readyGauge(), { kafka: 1, redis: 1, registry: 1, consumers: 1 });
});

test('a Redis that answers PING but refuses writes: readiness names the stalled consumer and the refusal', async (t) => {
  const redis = await privateRedis(t);
  const { runtime } = await startRuntime(t, { MESH_REDIS_URL: redis.url });
  let runs = 0;
  const consumer = await runtime.consume({
    groupId: 'refused-writes',
    topics: [runtime.topics.work('echo')],
    handlers: {
      'io.mesh.subtask.assigned': async (ctx: HandlerContext) => {
        runs += 1;
        return completion(runtime, ctx, {});
      },
    },
  });
  await waitFor(async () => (await runtime.readiness()).ready, {
    message: 'the runtime never became ready',
  });
  // Full, as a Redis at its maxmemory with the default policy (noeviction) is: every write refused.
  await runtime.redis.config('SET', 'maxmemory', '1');
  await runtime.publish([
    { topic: runtime.topics.work('echo'), event: assigned('echo', { n: 1 }) },
  ]);
  const stalled = await waitFor(
    async () => {
      const report = await runtime.readiness();
      return report.consumers ? undefined : report;
    },
    { timeout: 30_000, message: 'readiness never reported the stalled consumer' },
  );
  assert.equal(stalled.ready, false);
  assert.equal(stalled.redis, true, 'Redis answers PING');
  assert.match(
    stalled.stalled ?? '',
    new RegExp(`^${consumer.groupId} waits on redis_unavailable: .*OOM command not allowed`),
  );
  assert.equal(runs, 0, 'the handler did not run without its claim');

  await runtime.redis.config('SET', 'maxmemory', '0');
  await waitFor(async () => (await runtime.readiness()).ready, {
    timeout: 30_000,
    message: 'not ready again once Redis took writes',
  });
  const report = await runtime.readiness();
  assert.equal(report.stalled, undefined);
  assert.equal(runs, 1, 'the event ran once Redis took writes');
});
