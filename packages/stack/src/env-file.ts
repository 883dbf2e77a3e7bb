import type { StackSettings } from './settings.ts';

/** The three variables every service and test reads to find the stack. */
export interface StackEnv {
  MESH_KAFKA_BROKERS: string;
  MESH_SCHEMA_REGISTRY_URL: string;
  MESH_REDIS_URL: string;
}

export const stackEnvKeys = [
  'MESH_KAFKA_BROKERS',
  'MESH_SCHEMA_REGISTRY_URL',
  'MESH_REDIS_URL',
] as const;

/** The Confluent-compatible API of Apicurio Registry 3. */
export const ccompatPath = '/apis/ccompat/v7';

export function buildStackEnv(
  settings: Pick<StackSettings, 'host' | 'ports'>,
  redisPassword: string,
): StackEnv {
  const { host, ports } = settings;
  return {
    MESH_KAFKA_BROKERS: `${host}:${ports.kafka}`,
    MESH_SCHEMA_REGISTRY_URL: `http://${host}:${ports.registry}${ccompatPath}`,
    MESH_REDIS_URL: `redis://:${encodeURIComponent(redisPassword)}@${host}:${ports.redis}`,
  };
}

export function formatEnvFile(env: StackEnv): string {
  const lines = ['# Written by `npm run stack -- up`; removed by `npm run stack -- down`.'];
  for (const key of stackEnvKeys) lines.push(`${key}=${env[key]}`);
  return `${lines.join('\n')}\n`;
}

/** Parses `KEY=VALUE` lines (blank lines and `#` comments skipped). Returns undefined unless all three keys are present. */
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
  return { MESH_KAFKA_BROKERS: brokers, MESH_SCHEMA_REGISTRY_URL: registry, MESH_REDIS_URL: redis };
}
