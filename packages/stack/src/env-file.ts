import type { StackSettings } from './settings.ts';

/** The three variables every service and test reads to find the stack, and the tests' secure listener. */
export interface StackEnv extends Partial<SecureKafkaEnv> {
  MESH_KAFKA_BROKERS: string;
  MESH_SCHEMA_REGISTRY_URL: string;
  MESH_REDIS_URL: string;
}

/**
 * The broker's SASL_SSL listener (TLS with the stack's own CA; SASL PLAIN, SCRAM-SHA-256 and
 * SCRAM-SHA-512 for one user), which the tests of managed-cluster settings connect to. `MESH_TEST_`
 * because no service reads them: a service is pointed at it through its `MESH_KAFKA_*` variables.
 */
export interface SecureKafkaEnv {
  MESH_TEST_KAFKA_SASL_SSL_BROKERS: string;
  MESH_TEST_KAFKA_SSL_CA_FILE: string;
  MESH_TEST_KAFKA_SASL_USERNAME: string;
  MESH_TEST_KAFKA_SASL_PASSWORD: string;
}

export const stackEnvKeys = [
  'MESH_KAFKA_BROKERS',
  'MESH_SCHEMA_REGISTRY_URL',
  'MESH_REDIS_URL',
] as const;

export const secureKafkaEnvKeys = [
  'MESH_TEST_KAFKA_SASL_SSL_BROKERS',
  'MESH_TEST_KAFKA_SSL_CA_FILE',
  'MESH_TEST_KAFKA_SASL_USERNAME',
  'MESH_TEST_KAFKA_SASL_PASSWORD',
] as const;

/** The Confluent-compatible API of Apicurio Registry 3. */
export const ccompatPath = '/apis/ccompat/v7';

export function buildStackEnv(
  settings: Pick<StackSettings, 'host' | 'ports'>,
  redisPassword: string,
  secure?: { caFile: string; username: string; password: string },
): StackEnv {
  const { host, ports } = settings;
  return {
    MESH_KAFKA_BROKERS: `${host}:${ports.kafka}`,
    MESH_SCHEMA_REGISTRY_URL: `http://${host}:${ports.registry}${ccompatPath}`,
    MESH_REDIS_URL: `redis://:${encodeURIComponent(redisPassword)}@${host}:${ports.redis}`,
    ...(secure === undefined
      ? {}
      : {
          MESH_TEST_KAFKA_SASL_SSL_BROKERS: `${host}:${ports.kafkaSecure}`,
          MESH_TEST_KAFKA_SSL_CA_FILE: secure.caFile,
          MESH_TEST_KAFKA_SASL_USERNAME: secure.username,
          MESH_TEST_KAFKA_SASL_PASSWORD: secure.password,
        }),
  };
}

export function formatEnvFile(env: StackEnv): string {
  const lines = ['# Written by `npm run stack -- up`; removed by `npm run stack -- down`.'];
  for (const key of stackEnvKeys) lines.push(`${key}=${env[key]}`);
  if (secureKafkaEnvKeys.every((key) => env[key] !== undefined)) {
    lines.push("# Kafka's SASL_SSL listener, for the tests (services read MESH_KAFKA_* only).");
    for (const key of secureKafkaEnvKeys) lines.push(`${key}=${env[key]}`);
  }
  return `${lines.join('\n')}\n`;
}

/**
 * Parses `KEY=VALUE` lines (blank lines and `#` comments skipped). Returns undefined unless the
 * three stack keys are present; the secure listener's keys are kept when all four are.
 */
export function parseEnvFile(text: string): StackEnv | undefined {
  const values = new Map<string, string>();
  for (const line of text.split(/\r?\n/)) {
    const trimmed = line.trim();
    if (trimmed === '' || trimmed.startsWith('#')) continue;
    const eq = trimmed.indexOf('=');
    if (eq <= 0) continue;
    values.set(trimmed.slice(0, eq).trim(), trimmed.slice(eq + 1).trim());
  }
  const brokers = values.get('MESH_KAFKA_BROKERS');
  const registry = values.get('MESH_SCHEMA_REGISTRY_URL');
  const redis = values.get('MESH_REDIS_URL');
  if (brokers === undefined || registry === undefined || redis === undefined) return undefined;
  const env: StackEnv = {
    MESH_KAFKA_BROKERS: brokers,
    MESH_SCHEMA_REGISTRY_URL: registry,
    MESH_REDIS_URL: redis,
  };
  if (secureKafkaEnvKeys.every((key) => values.has(key)))
    for (const key of secureKafkaEnvKeys) env[key] = values.get(key);
  return env;
}
