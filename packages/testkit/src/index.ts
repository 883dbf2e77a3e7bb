/**
 * The test harness: the real stack (see `environment.ts`), per-test isolation and polling.
 *
 * Each test gets its own topic prefix and group ids (`randomUUID()`), registers cleanup as soon as it
 * creates a client, and polls with `waitFor` instead of sleeping.
 */
import { spawn } from 'node:child_process';
import { randomBytes, randomUUID } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { rootCertificates } from 'node:tls';
import { connect, createServer, type AddressInfo, type Socket } from 'node:net';
import { loadConfig, type MeshConfig } from '@mesh/config';
import { createRedis, waitForRedis, type Redis } from '@mesh/redis';
import { secureStackEnvKeys, startAuthRegistry, type SecureStackEnv } from '@mesh/stack';
import { resolveEnvironment, verifyEnvironment, type StackEnv } from './environment.ts';

export * from './environment.ts';
export * from './probe.ts';
export * from './python.ts';

let cached: Promise<StackEnv> | undefined;

/**
 * The stack's three addresses, verified reachable. Under `npm test` they come from the runner's
 * environment; a test file run on its own resolves them the same way the runner does.
 * @throws Error naming the unreachable component and the three ways to provide it.
 */
export function meshEnv(): Promise<StackEnv> {
  cached ??= (async () => {
    const { env } = await resolveEnvironment();
    await verifyEnvironment(env);
    return env;
  })();
  return cached;
}

/**
 * The stack's TLS endpoints (Kafka's SASL_SSL listener, Redis's TLS port, the registry's HTTPS
 * port) and their CA. The local stack has them; elsewhere set the `MESH_TEST_*` variables of
 * `secureStackEnvKeys`.
 * @throws Error naming what is unset: a test of TLS and SASL never passes without them.
 */
async function secureStack(): Promise<SecureStackEnv> {
  const env = await meshEnv();
  const missing = secureStackEnvKeys.filter((key) => env[key] === undefined);
  if (missing.length > 0)
    throw new Error(
      `no TLS endpoints to test against: ${missing.join(', ')} unset. The local stack ` +
        '(`npm run stack -- up`) has them; with a stack of your own, set these to its TLS endpoints.',
    );
  return env as SecureStackEnv;
}

/**
 * The `MESH_KAFKA_*` variables that point a service at the stack's SASL_SSL listener with
 * `mechanism`: TLS verified against the stack's CA, and a SASL login. @throws as `secureStack`.
 */
export async function secureKafkaVars(
  mechanism: 'plain' | 'scram-sha-256' | 'scram-sha-512',
): Promise<Record<string, string>> {
  const env = await secureStack();
  return {
    MESH_KAFKA_BROKERS: env.MESH_TEST_KAFKA_SASL_SSL_BROKERS,
    MESH_KAFKA_SSL: 'true',
    MESH_KAFKA_SSL_CA_FILE: env.MESH_TEST_TLS_CA_FILE,
    MESH_KAFKA_SASL_MECHANISM: mechanism,
    MESH_KAFKA_SASL_USERNAME: env.MESH_TEST_KAFKA_SASL_USERNAME,
    MESH_KAFKA_SASL_PASSWORD: env.MESH_TEST_KAFKA_SASL_PASSWORD,
  };
}

/** The `MESH_SCHEMA_REGISTRY_*` variables of the stack's registry over HTTPS (and its CA). @throws as `secureStack`. */
export async function secureRegistryVars(): Promise<Record<string, string>> {
  const env = await secureStack();
  return {
    MESH_SCHEMA_REGISTRY_URL: env.MESH_TEST_REGISTRY_TLS_URL,
    MESH_SCHEMA_REGISTRY_CA_FILE: env.MESH_TEST_TLS_CA_FILE,
  };
}

/** The `MESH_REDIS_*` variables of the stack's Redis over TLS (`rediss://`, its CA). @throws as `secureStack`. */
export async function secureRedisVars(): Promise<Record<string, string>> {
  const env = await secureStack();
  return {
    MESH_REDIS_URL: env.MESH_TEST_REDIS_TLS_URL,
    MESH_REDIS_TLS_CA_FILE: env.MESH_TEST_TLS_CA_FILE,
  };
}

/**
 * A schema registry of the test's own that asks for basic auth (`startAuthRegistry`: the stack's
 * Apicurio, on a free port), with the one user it accepts. Stopped, and its data removed, after the
 * test. @throws Error when Java or the stack's Apicurio is missing.
 */
export async function authRegistry(
  t: CleanupContext,
): Promise<{ url: string; username: string; password: string }> {
  const dataDir = await mkdtemp(join(tmpdir(), 'mesh-auth-registry-'));
  onCleanup(t, () => rm(dataDir, { recursive: true, force: true }));
  const username = 'mesh-test';
  const password = randomBytes(12).toString('hex');
  const registry = await startAuthRegistry({ port: await freePort(), dataDir, username, password });
  onCleanup(t, () => registry.stop());
  return { url: registry.url, username, password };
}

/**
 * A PEM file holding a real CA certificate (one of Node's bundled roots) that signed nothing the
 * stack presents: for tests of a client that must not trust the broker. Removed after the test.
 */
export async function foreignCaFile(t: CleanupContext): Promise<string> {
  const file = join(tmpdir(), `${uniqueName('foreign-ca')}.pem`);
  await writeFile(file, rootCertificates[0] ?? '');
  onCleanup(t, () => rm(file, { force: true }));
  return file;
}

/** A TCP port free on 127.0.0.1 right now, for a process the test or benchmark starts. */
export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.unref();
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      const port = typeof address === 'object' && address !== null ? address.port : 0;
      server.close(() => resolve(port));
    });
  });
}

/** A short unique name for topics, groups and ids of one test. */
export function uniqueName(prefix = 't'): string {
  return `${prefix}-${randomUUID().slice(0, 8)}`;
}

/**
 * A validated MeshConfig for a test: the stack's addresses, a fresh topic prefix, quick timeouts,
 * and any `vars` on top.
 */
export function testConfig(
  env: StackEnv,
  service: string,
  vars: Record<string, string> = {},
): MeshConfig {
  return loadConfig(
    {
      ...env,
      MESH_TOPIC_PREFIX: `${uniqueName('t')}.`,
      MESH_PARTITIONS: '3',
      MESH_RETRY_TIERS: '1s,2s',
      MESH_SHUTDOWN_TIMEOUT: '5s',
      MESH_LOG_LEVEL: 'warn',
      ...vars,
    },
    { service, defaultHttpPort: 0 },
  );
}

export interface WaitOptions {
  timeout?: number;
  interval?: number;
  /** Said when the wait times out; a function is called then, so it can tell the state at that moment. */
  message?: string | (() => string);
}

/**
 * Polls `fn` until it returns a truthy value (which is returned) or stops throwing.
 * @throws Error with `message` and the last failure when `timeout` (default 20 s) passes.
 */
export async function waitFor<T>(
  fn: () => T | Promise<T>,
  options: WaitOptions = {},
): Promise<NonNullable<T>> {
  const deadline = Date.now() + (options.timeout ?? 20_000);
  let last: unknown;
  for (;;) {
    try {
      const value = await fn();
      if (value !== undefined && value !== null && value !== false) return value;
      last = new Error(`condition returned ${String(value)}`);
    } catch (error) {
      last = error;
    }
    if (Date.now() > deadline) {
      throw new Error(
        `${(typeof options.message === 'function' ? options.message() : options.message) ?? 'waitFor timed out'} after ${options.timeout ?? 20_000} ms: ${(last as Error).message}`,
        { cause: last },
      );
    }
    await new Promise((resolve) => setTimeout(resolve, options.interval ?? 50));
  }
}

/** The minimal part of node:test's TestContext the harness needs. */
export interface CleanupContext {
  after(fn: () => unknown): void;
}

const stacks = new WeakMap<CleanupContext, (() => unknown)[]>();

/**
 * Registers `dispose` on the test's cleanup and returns the resource, so creation and cleanup sit
 * together. Cleanups of one test run last-registered first (node:test runs `after` hooks in the
 * order they were added, which would close a client before the cleanup that still uses it).
 */
export function disposable<T>(
  t: CleanupContext,
  resource: T,
  dispose: (resource: T) => unknown,
): T {
  onCleanup(t, () => dispose(resource));
  return resource;
}

/** Adds a cleanup step to the test's LIFO cleanup stack. */
export function onCleanup(t: CleanupContext, fn: () => unknown): void {
  let stack = stacks.get(t);
  if (stack === undefined) {
    const fresh: (() => unknown)[] = [];
    stacks.set(t, fresh);
    stack = fresh;
    t.after(async () => {
      for (const step of fresh.reverse()) await step();
    });
  }
  stack.push(fn);
}

/**
 * A connection to the stack's Redis and a key prefix of the test's own (`<name>-…:`): the keys under
 * it are deleted, then the connection closed, when the test ends.
 */
export async function testRedis(
  t: CleanupContext,
  name: string,
): Promise<{ redis: Redis; prefix: string }> {
  const env = await meshEnv();
  const redis = createRedis({ url: env.MESH_REDIS_URL }, { connectionName: `${name}-test` });
  onCleanup(t, () => redis.disconnect());
  await waitForRedis(redis);
  const prefix = `${uniqueName(name)}:`;
  onCleanup(t, async () => {
    const keys = await redis.keys(`${prefix}*`);
    if (keys.length > 0) await redis.del(...keys);
  });
  return { redis, prefix };
}

/**
 * A redis-server of the test's own on a free port (the stack's `redis-server`, no persistence),
 * killed when the test ends: for tests that pause Redis (`pause`: SIGSTOP, as a stalled host or a
 * partition leaves it, its connections open) without stalling the other tests' stack.
 */
export async function privateRedis(
  t: CleanupContext,
): Promise<{ url: string; pause: () => void; resume: () => void }> {
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
  const client = createRedis({ url }, { connectionName: 'private-redis-check' });
  try {
    await waitForRedis(client, 10_000);
  } finally {
    client.disconnect();
  }
  return { url, pause: () => server.kill('SIGSTOP'), resume: () => server.kill('SIGCONT') };
}

/**
 * A TCP relay to the host and port of `targetUrl` (`url`: the same URL on the relay's port) whose
 * `blackhole` keeps its connections open but passes nothing more on them (`replies`: only what
 * comes back is dropped), as a NAT that forgot them or a proxy whose host failed over would: no
 * close, no reset. Connections made after it relay again. `sever` instead closes every connection
 * and refuses new ones until the function it returns is called, as a restart or a failover of the
 * target would. Closed when the test ends.
 */
export async function blackholingRelay(
  t: CleanupContext,
  targetUrl: string,
): Promise<{
  url: string;
  blackhole: (direction: 'both' | 'replies') => void;
  sever: () => () => void;
}> {
  const target = new URL(targetUrl);
  // Every open pair (closed at the end), and those still relaying (the next `blackhole`'s).
  const open = new Set<[Socket, Socket]>();
  const relaying = new Set<[Socket, Socket]>();
  let severed = false;
  const server = createServer((client) => {
    if (severed) {
      client.destroy();
      return;
    }
    const upstream = connect({ host: target.hostname, port: Number(target.port) });
    const pair: [Socket, Socket] = [client, upstream];
    open.add(pair);
    relaying.add(pair);
    client.pipe(upstream);
    upstream.pipe(client);
    const drop = (): void => {
      client.destroy();
      upstream.destroy();
      open.delete(pair);
      relaying.delete(pair);
    };
    for (const socket of pair) socket.on('error', drop).on('close', drop);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  onCleanup(t, async () => {
    for (const [client, upstream] of open) {
      client.destroy();
      upstream.destroy();
    }
    await new Promise((resolve) => server.close(resolve));
  });
  const url = new URL(target);
  url.port = String((server.address() as AddressInfo).port);
  return {
    url: url.toString(),
    blackhole(direction: 'both' | 'replies'): void {
      for (const [client, upstream] of relaying) {
        // Read and dropped (an unpiped socket is paused: it would not even see its peer close).
        upstream.unpipe(client);
        upstream.resume();
        if (direction === 'both') {
          client.unpipe(upstream);
          client.resume();
        }
      }
      relaying.clear();
    },
    sever(): () => void {
      severed = true;
      for (const [client, upstream] of open) {
        client.destroy();
        upstream.destroy();
      }
      return () => {
        severed = false;
      };
    },
  };
}

/**
 * A client of a private redis-server (`privateRedis`) reached through a `blackholingRelay`, which
 * takes a connection for dead after `socketTimeoutMs` without an answer: for tests of what the mesh
 * does when a connection stops passing anything without closing. Disconnected when the test ends.
 */
export async function redisBehindRelay(
  t: CleanupContext,
  connectionName: string,
  socketTimeoutMs: number,
): Promise<{
  redis: Redis;
  blackhole: (direction: 'both' | 'replies') => void;
  failAfterApplied: (call: () => Promise<unknown>) => Promise<unknown>;
}> {
  const server = await privateRedis(t);
  const relay = await blackholingRelay(t, server.url);
  const redis = createRedis({ url: relay.url }, { connectionName, socketTimeoutMs });
  onCleanup(t, () => redis.disconnect());
  await waitForRedis(redis);
  return {
    redis,
    blackhole: relay.blackhole,
    /**
     * Runs `call` so that Redis carries it out but its caller sees it fail: its answer is dropped,
     * then the connection closed under it. Resolves with what `call` was rejected with, once the
     * client is connected again.
     */
    async failAfterApplied(call) {
      relay.blackhole('replies');
      const calling = call().then(
        () => {
          throw new Error('the call succeeded; it was to fail after Redis had carried it out');
        },
        (error: unknown) => error,
      );
      await new Promise((resolve) => setTimeout(resolve, 300));
      redis.disconnect();
      const failure = await calling;
      await redis.connect();
      return failure;
    },
  };
}
