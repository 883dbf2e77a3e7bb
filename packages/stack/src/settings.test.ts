import assert from 'node:assert/strict';
import { join } from 'node:path';
import { test } from 'node:test';
import { componentPaths, findRepoRoot, isComponentName, resolveStackSettings } from './settings.ts';

test('defaults: loopback, the documented ports, state under <repo>/.mesh/stack', () => {
  const settings = resolveStackSettings({ HOME: '/home/u' }, '/repo');
  assert.equal(settings.host, '127.0.0.1');
  assert.deepEqual(settings.ports, {
    kafka: 19092,
    kafkaController: 19093,
    kafkaSecure: 19094,
    registry: 18081,
    registryTls: 18082,
    redis: 16379,
    redisTls: 16380,
  });
  assert.equal(settings.stateDir, '/repo/.mesh/stack');
  assert.equal(settings.envFile, '/repo/.env.mesh');
  assert.equal(settings.readyTimeoutMs, 90_000);
  assert.ok(settings.cacheDir.endsWith(join('.cache', 'mesh-stack')));
});

test('ports, cache dir and timeout are overridable', () => {
  const settings = resolveStackSettings(
    {
      MESH_STACK_KAFKA_PORT: '29092',
      MESH_STACK_KAFKA_CONTROLLER_PORT: '29093',
      MESH_STACK_KAFKA_SECURE_PORT: '29094',
      MESH_STACK_REGISTRY_PORT: '28081',
      MESH_STACK_REGISTRY_TLS_PORT: '28082',
      MESH_STACK_REDIS_PORT: '26379',
      MESH_STACK_REDIS_TLS_PORT: '26380',
      MESH_STACK_CACHE: '/tmp/cache',
      MESH_STACK_READY_TIMEOUT_MS: '5000',
    },
    '/repo',
  );
  assert.deepEqual(settings.ports, {
    kafka: 29092,
    kafkaController: 29093,
    kafkaSecure: 29094,
    registry: 28081,
    registryTls: 28082,
    redis: 26379,
    redisTls: 26380,
  });
  assert.equal(settings.cacheDir, '/tmp/cache');
  assert.equal(settings.readyTimeoutMs, 5000);
});

test('every bad variable is named in one error', () => {
  assert.throws(
    () =>
      resolveStackSettings({ MESH_STACK_KAFKA_PORT: 'x', MESH_STACK_REDIS_PORT: '70000' }, '/repo'),
    (error: unknown) =>
      error instanceof Error &&
      /MESH_STACK_KAFKA_PORT="x"/.test(error.message) &&
      /MESH_STACK_REDIS_PORT="70000"/.test(error.message),
  );
});

test('two components on one port are refused', () => {
  assert.throws(
    () => resolveStackSettings({ MESH_STACK_REDIS_PORT: '19092' }, '/repo'),
    /kafka and redis are both 19092/,
  );
});

test('findRepoRoot finds the workspace root above this package', () => {
  const root = findRepoRoot();
  assert.ok(import.meta.dirname.startsWith(root));
  assert.notEqual(root, join(import.meta.dirname, '..'));
});

test('component paths', () => {
  const paths = componentPaths(resolveStackSettings({}, '/repo'), 'kafka');
  assert.deepEqual(paths, {
    configDir: '/repo/.mesh/stack/config/kafka',
    dataDir: '/repo/.mesh/stack/data/kafka',
    logFile: '/repo/.mesh/stack/logs/kafka.log',
    pidFile: '/repo/.mesh/stack/run/kafka.json',
  });
  assert.equal(isComponentName('registry'), true);
  assert.equal(isComponentName('zookeeper'), false);
});
