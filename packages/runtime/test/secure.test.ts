/**
 * Managed services' settings against the real broker's SASL_SSL listener (TLS verified against the
 * stack's CA; SASL PLAIN, SCRAM-SHA-256 and SCRAM-SHA-512), Redis's TLS port and the registry's
 * HTTPS port: the whole runtime works through them, and each setting they refuse stops the start with `config_invalid` naming the
 * variable to fix, instead of retrying for ever.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { isMeshError } from '@mesh/errors';
import {
  authRegistry,
  foreignCaFile,
  meshEnv,
  secureKafkaVars,
  secureRedisVars,
  secureRegistryVars,
  testConfig,
  uniqueName,
  waitFor,
} from '@mesh/testkit';
import { MeshRuntime, type HandlerContext } from '../src/index.ts';
import { assigned, committedToEnd, completion, startRuntime } from './helpers.ts';

for (const mechanism of ['plain', 'scram-sha-256', 'scram-sha-512'] as const) {
  test(`SASL ${mechanism} over TLS: topics, contracts, a consumer group and its outputs`, async (t) => {
    const { runtime, probe } = await startRuntime(t, await secureKafkaVars(mechanism));
    const consumer = await runtime.consume({
      groupId: 'secure',
      topics: [runtime.topics.work('echo')],
      handlers: {
        'io.mesh.subtask.assigned': async (ctx: HandlerContext) =>
          completion(runtime, ctx, { mechanism }),
      },
    });
    const event = assigned('echo', { text: 'over TLS' }, uniqueName('task'));
    await runtime.publish([{ topic: runtime.topics.work('echo'), event }]);
    await waitFor(() => probe.on(runtime.topics.results).length === 1);
    const result = probe.on(runtime.topics.results)[0];
    assert.ok(result);
    assert.equal(probe.header(result, 'ce_type'), 'io.mesh.subtask.completed');
    assert.equal(probe.header(result, 'ce_causationid'), event.id);
    // Decoded through the registry like any other event: the output is the handler's.
    const decoded = await runtime.codec.decode(result);
    assert.deepEqual((decoded.data as { output: unknown }).output, { mechanism });
    await committedToEnd(runtime, consumer.groupId, runtime.topics.work('echo'));
  });
}

/** Publishes an assignment and waits for a consumer of `runtime` to receive its data, decoded. */
async function deliversOne(runtime: MeshRuntime, groupId: string, text: string): Promise<void> {
  const received: unknown[] = [];
  await runtime.consume({
    groupId,
    topics: [runtime.topics.work('echo')],
    handlers: {
      'io.mesh.subtask.assigned': async ({ event }: HandlerContext) => {
        received.push(event.data);
      },
    },
  });
  const event = assigned('echo', { text }, uniqueName('task'));
  await runtime.publish([{ topic: runtime.topics.work('echo'), event }]);
  await waitFor(() => received.length === 1);
  assert.deepEqual(received[0], event.data);
}

/** Starts a runtime with `vars` on top of the stack's and returns how its start failed. */
async function startFailure(vars: Record<string, string>): Promise<Error> {
  const runtime = new MeshRuntime(testConfig(await meshEnv(), 'secure-test', vars), {});
  try {
    await runtime.start();
  } catch (error) {
    return error as Error;
  } finally {
    await runtime.close().catch(() => undefined);
  }
  assert.fail('the runtime started');
}

test('a refused login stops the start with config_invalid naming the SASL variables', async () => {
  const error = await startFailure({
    ...(await secureKafkaVars('scram-sha-512')),
    MESH_KAFKA_SASL_PASSWORD: 'not-the-password',
  });
  assert.ok(isMeshError(error) && error.code === 'config_invalid', String(error));
  assert.match(error.message, /^MESH_KAFKA_SASL_USERNAME or MESH_KAFKA_SASL_PASSWORD is wrong: /);
  assert.match(error.message, /SCRAM-SHA-512/);
  assert.doesNotMatch(error.message, /not-the-password/);
});

test('a broker certificate the CA file did not sign stops the start, naming MESH_KAFKA_SSL_CA_FILE', async (t) => {
  const error = await startFailure({
    ...(await secureKafkaVars('plain')),
    MESH_KAFKA_SSL_CA_FILE: await foreignCaFile(t),
  });
  assert.ok(isMeshError(error) && error.code === 'config_invalid', String(error));
  assert.match(
    error.message,
    /^MESH_KAFKA_SSL_CA_FILE must name the CA that signed the certificate of the broker at [^ ]+: /,
  );
});

test('SASL asked of a listener without it stops the start, naming MESH_KAFKA_SASL_MECHANISM', async () => {
  const secure = await secureKafkaVars('plain');
  const error = await startFailure({
    MESH_KAFKA_SASL_MECHANISM: 'plain',
    MESH_KAFKA_SASL_USERNAME: secure.MESH_KAFKA_SASL_USERNAME as string,
    MESH_KAFKA_SASL_PASSWORD: secure.MESH_KAFKA_SASL_PASSWORD as string,
  });
  assert.ok(isMeshError(error) && error.code === 'config_invalid', String(error));
  assert.match(error.message, /^MESH_KAFKA_SASL_MECHANISM does not suit the listener .*unset it/);
});

test('a TLS setting that does not match the listener is retried, with a hint naming the variables', async () => {
  const secure = await secureKafkaVars('plain');
  // The broker just drops the connection, as it would when going away: both stay retryable (the
  // start gives up after the retry budget, 20 s, so the two run side by side).
  const [plainAtSecure, tlsAtPlain] = await Promise.all([
    startFailure({ MESH_KAFKA_BROKERS: secure.MESH_KAFKA_BROKERS as string }),
    startFailure({
      MESH_KAFKA_SSL: 'true',
      MESH_KAFKA_SSL_CA_FILE: secure.MESH_KAFKA_SSL_CA_FILE as string,
    }),
  ]);
  for (const error of [plainAtSecure, tlsAtPlain])
    assert.ok(isMeshError(error) && error.code === 'kafka_unavailable', String(error));
  assert.match(plainAtSecure.message, /see MESH_KAFKA_SSL and MESH_KAFKA_SASL_MECHANISM/);
  assert.match(tlsAtPlain.message, /unset MESH_KAFKA_SSL/);
});

test('Redis over TLS (rediss:// and the stack CA): leases and done markers, a redelivery skipped', async (t) => {
  const { runtime, probe } = await startRuntime(t, await secureRedisVars());
  let runs = 0;
  await runtime.consume({
    groupId: 'secure-redis',
    topics: [runtime.topics.work('echo')],
    handlers: {
      'io.mesh.subtask.assigned': async (ctx: HandlerContext) => {
        runs += 1;
        return completion(runtime, ctx, { ok: true });
      },
    },
  });
  const event = assigned('echo', { text: 'redis over TLS' }, uniqueName('task'));
  await runtime.publish([{ topic: runtime.topics.work('echo'), event }]);
  await waitFor(() => probe.on(runtime.topics.results).length === 1);
  await runtime.publish([{ topic: runtime.topics.work('echo'), event }]);
  await waitFor(async () => (await runtime.metrics.idempotentSkips.get()).values[0]?.value === 1, {
    message: 'no idempotent skip',
  });
  assert.equal(runs, 1);
  assert.equal((await runtime.readiness()).redis, true);
});

test('a Redis certificate the CA file did not sign stops the start, naming MESH_REDIS_TLS_CA_FILE', async (t) => {
  const error = await startFailure({
    ...(await secureRedisVars()),
    MESH_REDIS_TLS_CA_FILE: await foreignCaFile(t),
  });
  assert.ok(isMeshError(error) && error.code === 'config_invalid', String(error));
  assert.match(
    error.message,
    /^MESH_REDIS_TLS_CA_FILE must name the CA that signed the certificate of Redis: /,
  );
});

test('a Redis password Redis refuses stops the start, naming MESH_REDIS_PASSWORD', async () => {
  const url = new URL((await meshEnv()).MESH_REDIS_URL);
  url.password = 'not-the-password';
  const error = await startFailure({ MESH_REDIS_URL: url.toString() });
  assert.ok(isMeshError(error) && error.code === 'config_invalid', String(error));
  assert.match(
    error.message,
    /^MESH_REDIS_PASSWORD \(or the password in MESH_REDIS_URL\) is wrong: WRONGPASS/,
  );
  assert.doesNotMatch(error.message, /not-the-password/);
});

test('the registry over HTTPS with its CA: contracts registered, events encoded and decoded', async (t) => {
  const { runtime } = await startRuntime(t, await secureRegistryVars());
  assert.match(runtime.registry.url, /^https:/);
  await deliversOne(runtime, 'secure-registry', 'registry over TLS');
});

test('a registry certificate the CA file did not sign stops the start, naming MESH_SCHEMA_REGISTRY_CA_FILE', async (t) => {
  const error = await startFailure({
    ...(await secureRegistryVars()),
    MESH_SCHEMA_REGISTRY_CA_FILE: await foreignCaFile(t),
  });
  assert.ok(isMeshError(error) && error.code === 'config_invalid', String(error));
  assert.match(
    error.message,
    /^MESH_SCHEMA_REGISTRY_CA_FILE must name the CA that signed the certificate of the schema registry at https:/,
  );
});

test('a registry that asks for basic auth: the credentials work for every client, refused ones stop the start', async (t) => {
  const registry = await authRegistry(t);
  const vars = {
    MESH_SCHEMA_REGISTRY_URL: registry.url,
    MESH_SCHEMA_REGISTRY_USERNAME: registry.username,
    MESH_SCHEMA_REGISTRY_PASSWORD: registry.password,
  };
  for (const refused of [
    { ...vars, MESH_SCHEMA_REGISTRY_PASSWORD: 'not-the-password' },
    { MESH_SCHEMA_REGISTRY_URL: registry.url },
  ]) {
    const error = await startFailure(refused);
    assert.ok(isMeshError(error) && error.code === 'config_invalid', String(error));
    assert.match(
      error.message,
      /^MESH_SCHEMA_REGISTRY_USERNAME or MESH_SCHEMA_REGISTRY_PASSWORD is refused by the schema registry at \S+ \(401\)$/,
    );
  }
  // The CLI says the same in one line.
  const cli = spawnSync(process.execPath, ['packages/cli/src/main.ts', 'schemas', 'check'], {
    cwd: fileURLToPath(new URL('../../../', import.meta.url)),
    env: { ...process.env, ...vars, MESH_SCHEMA_REGISTRY_PASSWORD: 'wrong' },
    encoding: 'utf8',
    timeout: 60_000,
  });
  assert.equal(cli.status, 1, cli.stderr);
  assert.match(
    cli.stderr,
    /^mesh: config: MESH_SCHEMA_REGISTRY_USERNAME or MESH_SCHEMA_REGISTRY_PASSWORD is refused .*\(401\)\n$/,
  );

  // With them: contracts registered, and an event encoded and decoded (the library's requests too).
  const { runtime } = await startRuntime(t, vars);
  await deliversOne(runtime, 'auth-registry', 'with credentials');
});
