import { existsSync, readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { dirname, join, resolve } from 'node:path';

/** The three processes of the local stack, in the order they are reported. */
export const componentNames = ['kafka', 'registry', 'redis'] as const;
export type ComponentName = (typeof componentNames)[number];

export function isComponentName(value: string): value is ComponentName {
  return (componentNames as readonly string[]).includes(value);
}

export interface StackPorts {
  kafka: number;
  kafkaController: number;
  /** Kafka's SASL_SSL listener: TLS and SASL (PLAIN, SCRAM), as managed clusters require. */
  kafkaSecure: number;
  registry: number;
  /** The registry's HTTPS port, beside the HTTP one. */
  registryTls: number;
  redis: number;
  /** Redis's TLS port (`rediss://`), beside the plaintext one. */
  redisTls: number;
}

/** Everything the stack needs to know about where things live; computed once from the environment. */
export interface StackSettings {
  /** Every process binds this address only. */
  host: string;
  ports: StackPorts;
  repoRoot: string;
  /** `<repo root>/.mesh/stack`: pid records, configs, data and logs. */
  stateDir: string;
  /** Downloaded artefacts shared by every checkout: `~/.cache/mesh-stack` unless MESH_STACK_CACHE is set. */
  cacheDir: string;
  /** `<repo root>/.env.mesh`, written by a successful `up`. */
  envFile: string;
  /** How long one component may take to answer its readiness probe. */
  readyTimeoutMs: number;
}

const portVariables = {
  kafka: ['MESH_STACK_KAFKA_PORT', 19092],
  kafkaController: ['MESH_STACK_KAFKA_CONTROLLER_PORT', 19093],
  kafkaSecure: ['MESH_STACK_KAFKA_SECURE_PORT', 19094],
  registry: ['MESH_STACK_REGISTRY_PORT', 18081],
  registryTls: ['MESH_STACK_REGISTRY_TLS_PORT', 18082],
  redis: ['MESH_STACK_REDIS_PORT', 16379],
  redisTls: ['MESH_STACK_REDIS_TLS_PORT', 16380],
} as const satisfies Record<keyof StackPorts, readonly [string, number]>;

const defaultReadyTimeoutMs = 90_000;

/**
 * Reads the stack's settings from `env`. Throws one Error naming every malformed variable
 * (a port that is not an integer in 1..65535, a timeout that is not a positive integer, two ports that collide).
 */
export function resolveStackSettings(
  env: NodeJS.ProcessEnv = process.env,
  repoRoot: string = findRepoRoot(),
): StackSettings {
  const problems: string[] = [];
  const readInt = (name: string, fallback: number, min: number, max: number): number => {
    const raw = env[name];
    if (raw === undefined || raw.trim() === '') return fallback;
    const value = Number(raw);
    if (!Number.isInteger(value) || value < min || value > max) {
      problems.push(`${name}=${JSON.stringify(raw)} must be an integer in ${min}..${max}`);
      return fallback;
    }
    return value;
  };
  const ports: StackPorts = {
    kafka: readInt(...portVariables.kafka, 1, 65_535),
    kafkaController: readInt(...portVariables.kafkaController, 1, 65_535),
    kafkaSecure: readInt(...portVariables.kafkaSecure, 1, 65_535),
    registry: readInt(...portVariables.registry, 1, 65_535),
    registryTls: readInt(...portVariables.registryTls, 1, 65_535),
    redis: readInt(...portVariables.redis, 1, 65_535),
    redisTls: readInt(...portVariables.redisTls, 1, 65_535),
  };
  const readyTimeoutMs = readInt(
    'MESH_STACK_READY_TIMEOUT_MS',
    defaultReadyTimeoutMs,
    1,
    3_600_000,
  );
  const seen = new Map<number, string>();
  for (const key of Object.keys(portVariables) as (keyof StackPorts)[]) {
    const port = ports[key];
    const other = seen.get(port);
    if (other !== undefined) problems.push(`ports of ${other} and ${key} are both ${port}`);
    seen.set(port, key);
  }
  if (problems.length > 0) throw new Error(`bad stack settings: ${problems.join('; ')}`);
  const cache = env['MESH_STACK_CACHE'];
  return {
    host: '127.0.0.1',
    ports,
    repoRoot,
    stateDir: join(repoRoot, '.mesh', 'stack'),
    cacheDir:
      cache !== undefined && cache !== ''
        ? resolve(cache)
        : join(homedir(), '.cache', 'mesh-stack'),
    envFile: join(repoRoot, '.env.mesh'),
    readyTimeoutMs,
  };
}

/** The nearest ancestor of this file whose package.json declares npm workspaces. Throws if there is none. */
export function findRepoRoot(start: string = import.meta.dirname): string {
  let dir = start;
  for (;;) {
    const manifest = join(dir, 'package.json');
    if (existsSync(manifest)) {
      const parsed: unknown = JSON.parse(readFileSync(manifest, 'utf8'));
      if (typeof parsed === 'object' && parsed !== null && 'workspaces' in parsed) return dir;
    }
    const parent = dirname(dir);
    if (parent === dir) throw new Error(`no package.json with "workspaces" above ${start}`);
    dir = parent;
  }
}

/** Where each component keeps its files under the state dir. */
export function componentPaths(settings: StackSettings, name: ComponentName) {
  return {
    configDir: join(settings.stateDir, 'config', name),
    dataDir: join(settings.stateDir, 'data', name),
    logFile: join(settings.stateDir, 'logs', `${name}.log`),
    pidFile: join(settings.stateDir, 'run', `${name}.json`),
  };
}
