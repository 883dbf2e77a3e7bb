/**
 * Readiness against a dependency that stops answering without going away: a real Redis of this test's
 * own, paused (SIGSTOP) as a network partition or a stalled host would leave it. Its connection stays
 * open, so nothing fails; only waiting for it can tell.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { test } from 'node:test';
import { createRedis, waitForRedis } from '@mesh/redis';
import { freePort, meshEnv, onCleanup, testConfig } from '@mesh/testkit';
import { testRuntime } from '@mesh/testkit/runtime';
import { readinessWaitMs } from '../src/index.ts';

/** A redis-server of this test's own on a free port, killed after the test. */
async function privateRedis(t: Parameters<typeof onCleanup>[0]) {
  const port = await freePort();
  const server = spawn(
    'redis-server',
    ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'],
    { stdio: 'ignore' },
  );
  await new Promise<void>((resolve, reject) => {
    server.once('spawn', resolve);
    server.once('error', (error) =>
      reject(
        new Error(
          `redis-server did not start (\`npm run stack -- up\` installs it): ${error.message}`,
        ),
      ),
    );
  });
  const exited = new Promise((resolve) => server.once('exit', resolve));
  onCleanup(t, async () => {
    server.kill('SIGCONT');
    server.kill('SIGKILL');
    await exited;
  });
  const url = `redis://127.0.0.1:${port}`;
  const client = createRedis({ url }, { connectionName: 'readiness-test' });
  await waitForRedis(client, 10_000);
  client.disconnect();
  return { url, pause: () => server.kill('SIGSTOP'), resume: () => server.kill('SIGCONT') };
}

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
