/**
 * The mesh on managed-style infrastructure: a Kafka that requires TLS and SASL (as MSK, Confluent
 * Cloud and Aiven do), Redis over TLS and the registry over HTTPS. The four services, the CLI and an
 * outside client (kcat) all go through the broker's SASL_SSL listener with SCRAM-SHA-512, the
 * services keep their state in Redis through its TLS port and read their contracts over HTTPS,
 * and a task completes end to end.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import {
  secureKafkaVars,
  secureRedisVars,
  secureRegistryVars,
  testRedis,
  waitFor,
} from '@mesh/testkit';
import { kcat, outcomesOf, root, startMesh } from '../support/mesh.ts';

test('over SASL_SSL (SCRAM-SHA-512), rediss:// and https: kcat publishes a task, the services run it, kcat and the CLI read the outcome', async (t) => {
  const secure = await secureKafkaVars('scram-sha-512');
  const redisTls = await secureRedisVars();
  const mesh = await startMesh(t, {
    vars: { ...secure, ...redisTls, ...(await secureRegistryVars()) },
  });
  // librdkafka's names for the same settings: what any other client of the cluster would use.
  const kcatSecurity = [
    ['security.protocol', 'SASL_SSL'],
    ['sasl.mechanisms', 'SCRAM-SHA-512'],
    ['sasl.username', secure.MESH_KAFKA_SASL_USERNAME],
    ['sasl.password', secure.MESH_KAFKA_SASL_PASSWORD],
    ['ssl.ca.location', secure.MESH_KAFKA_SSL_CA_FILE],
  ].flatMap(([key, value]) => ['-X', `${key}=${value}`]);
  const client = kcat(mesh, secure.MESH_KAFKA_BROKERS as string, kcatSecurity);
  const taskId = client.publishTask({ text: 'over TLS' });
  const outcome = await waitFor(() => outcomesOf(mesh, taskId)[0], {
    timeout: 60_000,
    message: () => `no outcome\n${mesh.tails()}`,
  });
  assert.equal(outcome.type, 'io.mesh.task.completed', JSON.stringify(outcome.data));
  assert.deepEqual((outcome.data.output as { echo: unknown }).echo, {
    task: { text: 'over TLS' },
    previous: {},
  });

  assert.match(
    client.readOutputs(),
    new RegExp(`${taskId} .*ce_type=io\\.mesh\\.task\\.completed`),
  );

  // The CLI takes the same MESH_KAFKA_* variables: the worker's group has read its topic to the end.
  const lag = await waitFor(
    () => {
      const run = spawnSync(process.execPath, ['packages/cli/src/main.ts', 'lag', '--json'], {
        cwd: root,
        env: mesh.env,
        encoding: 'utf8',
        timeout: 30_000,
      });
      assert.equal(run.status, 0, `mesh lag failed: ${run.stderr}`);
      const report = JSON.parse(run.stdout) as {
        partitions: { group: string; topic: string; lag: number }[];
      };
      const work = report.partitions.filter((p) => p.topic === mesh.client.topics.work('echo'));
      return work.length > 0 && work.every((p) => p.lag === 0) ? work : undefined;
    },
    { timeout: 30_000, message: 'the worker group never showed up with no lag in mesh lag' },
  );
  assert.ok(
    lag.every((p) => p.group.endsWith('worker.echo')),
    JSON.stringify(lag),
  );

  // Every service keeps its state through Redis's TLS port, none through the plaintext one.
  const { redis } = await testRedis(t, 'secure-e2e');
  const tlsPort = new URL(redisTls.MESH_REDIS_URL as string).port;
  const clients = String(await redis.client('LIST'))
    .split('\n')
    .filter((line) => /\bname=mesh-(orchestrator|worker|aggregator|dlq-triage)\b/.test(line));
  for (const service of ['orchestrator', 'worker', 'aggregator', 'dlq-triage'])
    assert.ok(
      clients.some((line) => line.includes(`name=mesh-${service}`)),
      `no Redis connection of ${service}`,
    );
  assert.ok(
    clients.every((line) => line.includes(`laddr=127.0.0.1:${tlsPort}`)),
    clients.join('\n'),
  );
});
