/**
 * Where the real Kafka, schema registry and Redis of a test run come from, in this order (the model
 * is Temporal's `helpers-integration.ts`):
 *   1. MESH_KAFKA_BROKERS, MESH_SCHEMA_REGISTRY_URL and MESH_REDIS_URL set: use them;
 *   2. a Docker engine answers: testcontainers (Kafka KRaft, cp-schema-registry, Redis);
 *   3. else the local stack of `npm run stack` (Kafka and Apicurio from Maven Central, Redis from
 *      Debian), started if it is not up;
 *   4. else fail with one message naming the three ways.
 * Whatever is chosen is checked for real before a test runs: a missing component fails loudly.
 */
import { existsSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { createKafka, MeshAdmin } from '@mesh/kafka';
import { createRedis, pingRedis, waitForRedis } from '@mesh/redis';
import { readStackEnv, secureStackEnvKeys, stackUp, type StackEnv } from '@mesh/stack';

export type { SecureStackEnv, StackEnv } from '@mesh/stack';

export type EnvironmentSource = 'env' | 'testcontainers' | 'local-stack';

export interface TestEnvironment {
  env: StackEnv;
  source: EnvironmentSource;
  /** Stops what this call started (nothing for `env`, or a local stack that was already up). */
  stop: () => Promise<void>;
}

export const threeWays = [
  'The integration tests need a real Kafka, schema registry and Redis. Provide them one of three ways:',
  '  1. set MESH_KAFKA_BROKERS, MESH_SCHEMA_REGISTRY_URL and MESH_REDIS_URL to running services;',
  '  2. run a Docker engine (testcontainers starts Kafka, cp-schema-registry and Redis);',
  '  3. install a JDK, Maven and redis-server (the local stack: `npm run stack -- up`).',
].join('\n');

function fromProcessEnv(): StackEnv | undefined {
  const { MESH_KAFKA_BROKERS, MESH_SCHEMA_REGISTRY_URL, MESH_REDIS_URL } = process.env;
  if (MESH_KAFKA_BROKERS && MESH_SCHEMA_REGISTRY_URL && MESH_REDIS_URL) {
    const env: StackEnv = { MESH_KAFKA_BROKERS, MESH_SCHEMA_REGISTRY_URL, MESH_REDIS_URL };
    // The TLS endpoints, when the stack that set the three has them (the local stack does).
    if (secureStackEnvKeys.every((key) => process.env[key]))
      for (const key of secureStackEnvKeys) env[key] = process.env[key];
    return env;
  }
  return undefined;
}

async function dockerAnswers(): Promise<boolean> {
  if (process.env.MESH_TEST_NO_DOCKER === '1') return false;
  const socket =
    process.env.DOCKER_HOST ??
    (existsSync('/var/run/docker.sock') ? 'unix:///var/run/docker.sock' : undefined);
  if (socket === undefined) return false;
  try {
    const { getContainerRuntimeClient } = await import('testcontainers');
    await Promise.race([
      getContainerRuntimeClient(),
      new Promise((_, reject) => setTimeout(() => reject(new Error('timeout')), 5_000).unref()),
    ]);
    return true;
  } catch {
    return false;
  }
}

async function startContainers(): Promise<TestEnvironment> {
  const { GenericContainer, Network, Wait } = await import('testcontainers');
  const { KafkaContainer } = await import('@testcontainers/kafka');
  const { RedisContainer } = await import('@testcontainers/redis');
  const network = await new Network().start();
  const kafka = await new KafkaContainer('confluentinc/cp-kafka:7.9.0')
    .withKraft()
    .withNetwork(network)
    .withNetworkAliases('kafka')
    .withHostname('kafka')
    .start();
  const registry = await new GenericContainer('confluentinc/cp-schema-registry:7.9.0')
    .withNetwork(network)
    .withEnvironment({
      SCHEMA_REGISTRY_HOST_NAME: 'schema-registry',
      SCHEMA_REGISTRY_LISTENERS: 'http://0.0.0.0:8081',
      SCHEMA_REGISTRY_KAFKASTORE_BOOTSTRAP_SERVERS: 'PLAINTEXT://kafka:9092',
    })
    .withExposedPorts(8081)
    .withWaitStrategy(Wait.forHttp('/subjects', 8081).forStatusCode(200))
    .start();
  const password = randomBytes(12).toString('hex');
  const redis = await new RedisContainer('redis:7.4').withPassword(password).start();
  return {
    source: 'testcontainers',
    env: {
      MESH_KAFKA_BROKERS: `${kafka.getHost()}:${kafka.getMappedPort(9093)}`,
      MESH_SCHEMA_REGISTRY_URL: `http://${registry.getHost()}:${registry.getMappedPort(8081)}`,
      MESH_REDIS_URL: `redis://:${password}@${redis.getHost()}:${redis.getPort()}`,
    },
    stop: async () => {
      await Promise.allSettled([kafka.stop(), registry.stop(), redis.stop()]);
      await network.stop();
    },
  };
}

/** Finds or starts the real stack; see the module comment. @throws Error with `threeWays` when none works. */
export async function resolveEnvironment(): Promise<TestEnvironment> {
  const given = fromProcessEnv();
  if (given !== undefined) return { env: given, source: 'env', stop: async () => undefined };
  if (await dockerAnswers()) return startContainers();
  const already = await readStackEnv();
  try {
    const env = already ?? (await stackUp());
    return {
      env,
      source: 'local-stack',
      // A stack that was up before the run is left up; one this run started is its own to stop.
      stop: async () => {
        if (already === undefined) {
          const { stackDown } = await import('@mesh/stack');
          await stackDown();
        }
      },
    };
  } catch (error) {
    throw new Error(`${threeWays}\nThe local stack could not start: ${(error as Error).message}`, {
      cause: error,
    });
  }
}

/**
 * Checks that each component answers, naming the first that does not.
 * @throws Error `<component> is not reachable at <address>: …` followed by the three ways.
 */
export async function verifyEnvironment(env: StackEnv, timeoutMs = 20_000): Promise<void> {
  const admin = new MeshAdmin(
    createKafka({
      brokers: env.MESH_KAFKA_BROKERS.split(','),
      clientId: 'mesh-testkit-check',
      connectionTimeoutMs: 3_000,
    }),
  );
  try {
    await withTimeout(admin.listTopics(), timeoutMs);
  } catch (error) {
    throw new Error(
      `Kafka is not reachable at ${env.MESH_KAFKA_BROKERS}: ${(error as Error).message}\n${threeWays}`,
    );
  } finally {
    await admin.disconnect().catch(() => undefined);
  }
  try {
    const response = await fetch(`${env.MESH_SCHEMA_REGISTRY_URL}/subjects`, {
      signal: AbortSignal.timeout(timeoutMs),
    });
    if (response.status !== 200) throw new Error(`GET /subjects answered ${response.status}`);
  } catch (error) {
    throw new Error(
      `The schema registry is not reachable at ${env.MESH_SCHEMA_REGISTRY_URL}: ${(error as Error).message}\n${threeWays}`,
    );
  }
  const redis = createRedis({ url: env.MESH_REDIS_URL }, { connectionName: 'mesh-testkit-check' });
  try {
    await waitForRedis(redis, timeoutMs);
    if (!(await pingRedis(redis))) throw new Error('PING did not answer PONG');
  } catch (error) {
    throw new Error(
      `Redis is not reachable at ${redactUrl(env.MESH_REDIS_URL)}: ${(error as Error).message}\n${threeWays}`,
    );
  } finally {
    redis.disconnect();
  }
}

function redactUrl(url: string): string {
  return url.replace(/\/\/[^@/]*@/, '//***@');
}

async function withTimeout<T>(promise: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      promise,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`no answer within ${ms} ms`)), ms);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}
