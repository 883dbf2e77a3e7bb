import type { StackSettings } from './settings.ts';

/** The three variables every service and test reads to find the stack, and its TLS endpoints. */
export interface StackEnv extends Partial<SecureStackEnv> {
  MESH_KAFKA_BROKERS: string;
  MESH_SCHEMA_REGISTRY_URL: string;
  MESH_REDIS_URL: string;
}

/**
 * What the tests of managed-service settings connect to: Kafka's SASL_SSL listener (SASL PLAIN,
 * SCRAM-SHA-256 and SCRAM-SHA-512 for one user), Redis's TLS port and the registry's HTTPS port, all
 * with certificates of the stack's own CA. `MESH_TEST_` because no service reads them: a service is pointed at them through
 * its `MESH_KAFKA_*` and `MESH_REDIS_*` variables.
 */
export interface SecureStackEnv {
  MESH_TEST_TLS_CA_FILE: string;
  MESH_TEST_KAFKA_SASL_SSL_BROKERS: string;
  MESH_TEST_KAFKA_SASL_USERNAME: string;
  MESH_TEST_KAFKA_SASL_PASSWORD: string;
  MESH_TEST_REDIS_TLS_URL: string;
  MESH_TEST_REGISTRY_TLS_URL: string;
}

export const stackEnvKeys = [
  'MESH_KAFKA_BROKERS',
  'MESH_SCHEMA_REGISTRY_URL',
  'MESH_REDIS_URL',
] as const;

export const secureStackEnvKeys = [
  'MESH_TEST_TLS_CA_FILE',
  'MESH_TEST_KAFKA_SASL_SSL_BROKERS',
  'MESH_TEST_KAFKA_SASL_USERNAME',
  'MESH_TEST_KAFKA_SASL_PASSWORD',
  'MESH_TEST_REDIS_TLS_URL',
  'MESH_TEST_REGISTRY_TLS_URL',
] as const;

/** The Confluent-compatible API of Apicurio Registry 3. */
export const ccompatPath = '/apis/ccompat/v7';

export function buildStackEnv(
  settings: Pick<StackSettings, 'host' | 'ports'>,
  redisPassword: string,
  secure?: { caFile: string; kafkaUsername: string; kafkaPassword: string },
): StackEnv {
  const { host, ports } = settings;
  const password = encodeURIComponent(redisPassword);
  return {
    MESH_KAFKA_BROKERS: `${host}:${ports.kafka}`,
    MESH_SCHEMA_REGISTRY_URL: `http://${host}:${ports.registry}${ccompatPath}`,
    MESH_REDIS_URL: `redis://:${password}@${host}:${ports.redis}`,
    ...(secure === undefined
      ? {}
      : {
          MESH_TEST_TLS_CA_FILE: secure.caFile,
          MESH_TEST_KAFKA_SASL_SSL_BROKERS: `${host}:${ports.kafkaSecure}`,
          MESH_TEST_KAFKA_SASL_USERNAME: secure.kafkaUsername,
          MESH_TEST_KAFKA_SASL_PASSWORD: secure.kafkaPassword,
          MESH_TEST_REDIS_TLS_URL: `rediss://:${password}@${host}:${ports.redisTls}`,
          MESH_TEST_REGISTRY_TLS_URL: `https://${host}:${ports.registryTls}${ccompatPath}`,
        }),
  };
}

export function formatEnvFile(env: StackEnv): string {
  const lines = ['# Written by `npm run stack -- up`; removed by `npm run stack -- down`.'];
  for (const key of stackEnvKeys) lines.push(`${key}=${env[key]}`);
  if (secureStackEnvKeys.every((key) => env[key] !== undefined)) {
    lines.push(
      "# Kafka's SASL_SSL listener and Redis's TLS port, for the tests (no service reads these).",
    );
    for (const key of secureStackEnvKeys) lines.push(`${key}=${env[key]}`);
  }
  return `${lines.join('\n')}\n`;
}

/**
 * Parses `KEY=VALUE` lines (blank lines and `#` comments skipped). Returns undefined unless the
 * three stack keys are present; the TLS endpoints' keys are kept when all of them are.
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
  if (secureStackEnvKeys.every((key) => values.has(key)))
    for (const key of secureStackEnvKeys) env[key] = values.get(key);
  return env;
}
