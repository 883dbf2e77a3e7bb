/**
 * Runs the `mesh` CLI as a child process (`node packages/cli/src/main.ts …`) against the real stack,
 * each test on a topic prefix of its own whose topics are deleted afterwards.
 */
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { TestContext } from 'node:test';
import { loadConfig, type MeshConfig } from '@mesh/config';
import { MeshAdmin, createKafka, type Kafka } from '@mesh/kafka';
import { disposable, meshEnv, onCleanup, uniqueName } from '@mesh/testkit';

export const root = fileURLToPath(new URL('../../../', import.meta.url));
export const mainPath = join(root, 'packages', 'cli', 'src', 'main.ts');

export interface CliResult {
  code: number | null;
  stdout: string;
  stderr: string;
  /** Wall-clock time of the run. */
  ms: number;
}

export interface RunOptions {
  env: NodeJS.ProcessEnv;
  /** Written to the CLI's stdin (stdin is closed either way). */
  input?: string;
  timeoutMs?: number;
}

/** Runs the CLI to its end. The environment is exactly `options.env` plus PATH and HOME. */
export function runCli(args: string[], options: RunOptions): Promise<CliResult> {
  const began = Date.now();
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [mainPath, ...args], {
      cwd: root,
      env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '', ...options.env },
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk));
    child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
    const timer = setTimeout(() => child.kill('SIGKILL'), options.timeoutMs ?? 60_000);
    child.once('error', reject);
    child.once('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr, ms: Date.now() - began });
    });
    child.stdin.end(options.input ?? '');
  });
}

/** Every line of `stdout` parsed as JSON (NDJSON); fails on any line that is not. */
export function jsonLines(stdout: string): unknown[] {
  return stdout
    .split('\n')
    .filter((line) => line !== '')
    .map((line) => JSON.parse(line) as unknown);
}

/** The non-empty lines of a stream. */
export function lines(text: string): string[] {
  return text.split('\n').filter((line) => line !== '');
}

export interface CliHarness {
  /** The CLI's environment: the stack's addresses and this test's prefix. */
  env: NodeJS.ProcessEnv;
  prefix: string;
  config: MeshConfig;
  kafka: Kafka;
  admin: MeshAdmin;
  run(
    args: string[],
    options?: Omit<RunOptions, 'env'> & { env?: NodeJS.ProcessEnv },
  ): Promise<CliResult>;
}

/** A fresh prefix on the real stack; its topics are deleted when the test ends. */
export async function cliHarness(t: TestContext): Promise<CliHarness> {
  const stack = await meshEnv();
  const prefix = `${uniqueName('cli')}.`;
  const env: NodeJS.ProcessEnv = { ...stack, MESH_TOPIC_PREFIX: prefix, MESH_PARTITIONS: '3' };
  const config = loadConfig(env, { service: 'cli-test', defaultHttpPort: 0 });
  const kafka = createKafka({ brokers: config.kafka.brokers, clientId: 'cli-test' });
  const admin = disposable(t, new MeshAdmin(kafka), (a) => a.disconnect());
  onCleanup(t, async () => {
    const topics = (await admin.listTopics()).filter((topic) => topic.startsWith(prefix));
    await admin.deleteTopics(topics).catch(() => undefined);
  });
  return {
    env,
    prefix,
    config,
    kafka,
    admin,
    run: (args, options = {}) => runCli(args, { ...options, env: { ...env, ...options.env } }),
  };
}

/** Asserts-friendly description of a run, for failure messages. */
export function show(result: CliResult): string {
  return `exit ${result.code} after ${result.ms} ms\n--- stdout\n${result.stdout}\n--- stderr\n${result.stderr}`;
}
