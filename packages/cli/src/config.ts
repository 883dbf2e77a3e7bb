/**
 * The CLI's configuration: the MESH_* variables validated by `loadConfig` (service name `cli`), with
 * the stack's addresses taken from `<repo>/.env.mesh` (written by `npm run stack -- up`) for each of
 * them that the environment leaves unset.
 *
 * Like the services, the CLI refuses a MESH_* variable nobody declares (a typo such as
 * MESH_TOPIC_PREFX would otherwise silently talk to the wrong topics). The few MESH_* variables that
 * are read outside `@mesh/config` — the stack script's MESH_STACK_*, the test harness's MESH_TEST_*
 * and `@mesh/contracts`' MESH_SCHEMAS_DIR — are let through unvalidated.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadConfig, type MeshConfig } from '@mesh/config';
import { isMeshError } from '@mesh/errors';
import { CliError } from './errors.ts';

/** The stack's three addresses (as `@mesh/stack` writes them to `.env.mesh`). */
export const stackEnvKeys = [
  'MESH_KAFKA_BROKERS',
  'MESH_SCHEMA_REGISTRY_URL',
  'MESH_REDIS_URL',
] as const;

/** The repository root (the CLI runs from its sources). */
export const repoRoot: string = fileURLToPath(new URL('../../../', import.meta.url));

/** MESH_* variables read by other parts of the repository than `@mesh/config`. */
export function isOutsideConfig(name: string): boolean {
  return /^MESH_(STACK|TEST)_/.test(name) || name === 'MESH_SCHEMAS_DIR';
}

/** How long the CLI waits for Kafka, the registry or a service to answer one step. */
export const stepTimeoutMs = 5_000;

export interface CliConfig {
  mesh: MeshConfig;
  orchestratorUrl: string;
  dlqUrl: string;
  timeoutMs: number;
  /** The stack variables that came from `.env.mesh`. */
  fromEnvFile: string[];
}

/** Parses `KEY=VALUE` lines; blank lines and `#` comments are skipped. */
export function parseEnvLines(text: string): Record<string, string> {
  const values: Record<string, string> = {};
  for (const line of text.split(/\r?\n/)) {
    const trimmed = line.trim();
    if (trimmed === '' || trimmed.startsWith('#')) continue;
    const eq = trimmed.indexOf('=');
    if (eq > 0) values[trimmed.slice(0, eq).trim()] = trimmed.slice(eq + 1).trim();
  }
  return values;
}

/** The `.env.mesh` of the repository, or undefined when there is none. */
export function readEnvFile(root: string = repoRoot): Record<string, string> | undefined {
  try {
    return parseEnvLines(readFileSync(join(root, '.env.mesh'), 'utf8'));
  } catch {
    return undefined;
  }
}

/**
 * The environment the CLI validates: the MESH_* variables of `env` (but those read outside
 * `@mesh/config`), and the stack's addresses from `envFile` where `env` leaves them unset.
 */
export function cliEnvironment(
  env: NodeJS.ProcessEnv,
  envFile: Record<string, string> | null | undefined,
): { env: Record<string, string>; fromEnvFile: string[] } {
  const out: Record<string, string> = {};
  for (const [name, value] of Object.entries(env)) {
    if (!name.startsWith('MESH_') || value === undefined || value === '') continue;
    if (!isOutsideConfig(name)) out[name] = value;
  }
  const fromEnvFile: string[] = [];
  for (const key of stackEnvKeys) {
    const value = envFile?.[key];
    if (out[key] === undefined && value !== undefined && value !== '') {
      out[key] = value;
      fromEnvFile.push(key);
    }
  }
  return { env: out, fromEnvFile };
}

/**
 * Loads and validates the CLI's configuration; `envFile` null means no `.env.mesh` is used.
 * @throws CliError with one line naming every bad variable, and how to get a stack when its
 *   addresses are missing.
 */
export function loadCliConfig(
  env: NodeJS.ProcessEnv = process.env,
  envFile: Record<string, string> | null = readEnvFile() ?? null,
): CliConfig {
  const { env: cliEnv, fromEnvFile } = cliEnvironment(env, envFile);
  let mesh: MeshConfig;
  try {
    mesh = loadConfig(cliEnv, { service: 'cli', defaultHttpPort: 0 });
  } catch (error) {
    if (isMeshError(error) && error.code === 'config_invalid') {
      const missing = stackEnvKeys.some((key) => cliEnv[key] === undefined);
      throw new CliError(
        `config: ${error.message.split('\n').join('; ')}${missing ? ' (start the local stack with `npm run stack -- up`, which writes .env.mesh, or set the variables)' : ''}`,
      );
    }
    throw error;
  }
  const url = (name: 'MESH_ORCHESTRATOR_URL' | 'MESH_DLQ_URL', fallback: string): string =>
    (mesh.env[name] ?? fallback).replace(/\/+$/, '');
  return {
    mesh,
    orchestratorUrl: url('MESH_ORCHESTRATOR_URL', 'http://127.0.0.1:8080'),
    dlqUrl: url('MESH_DLQ_URL', 'http://127.0.0.1:8084'),
    timeoutMs: stepTimeoutMs,
    fromEnvFile,
  };
}
