/**
 * The four services as separate processes against the real stack, for end-to-end and chaos tests:
 * a fresh topic prefix per mesh, each service on its own port, readiness awaited, output kept for
 * failure reports, and a client runtime to publish and a probe to read what the mesh produced.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';
import type { TestContext } from 'node:test';
import type { MeshRuntime } from '@mesh/runtime';
import {
  freePort,
  meshEnv,
  onCleanup,
  probeTopics,
  testConfig,
  waitFor,
  type TopicProbe,
} from '@mesh/testkit';
import { testRuntime } from '@mesh/testkit/runtime';

export const root = fileURLToPath(new URL('../../', import.meta.url));

export type ServiceName = 'orchestrator' | 'worker' | 'aggregator' | 'dlq-triage';
export const serviceNames: ServiceName[] = ['orchestrator', 'worker', 'aggregator', 'dlq-triage'];

export interface RunningProcess {
  /** A service's name, or the name a process of your own was started under. */
  name: string;
  child: ChildProcess;
  port: number;
  url: string;
  output: string[];
}

export interface Mesh {
  env: NodeJS.ProcessEnv;
  client: MeshRuntime;
  probe: TopicProbe;
  services: Map<string, RunningProcess>;
  url(name: string): string;
  /** Sends a signal and waits for the process to exit. */
  kill(name: string, signal?: NodeJS.Signals): Promise<void>;
  /**
   * Starts a service (again), or with `script` (a path from the repository root) a process of your
   * own under `name`, with the mesh's variables; resolves once its `/readyz` answers 200. A script of
   * a service (`services/<service>/src/main.ts`) under another name is a replica of that service,
   * with its variables.
   */
  start(name: string, extraEnv?: Record<string, string>, script?: string): Promise<RunningProcess>;
  /**
   * For failure messages: every service's warnings and errors over its whole run, counted by message
   * with the first and last of each, then its last lines. A tail alone loses what went wrong early
   * (a consumer that crashed during an outage and never came back).
   */
  tails(lines?: number): string;
}

export interface MeshOptions {
  /** MESH_* variables for every service (on top of the stack's and the prefix). */
  vars?: Record<string, string>;
  /** Per-service variables. */
  serviceVars?: Partial<Record<ServiceName, Record<string, string>>>;
  agents?: string[];
  services?: ServiceName[];
}

export async function startMesh(t: TestContext, options: MeshOptions = {}): Promise<Mesh> {
  const stack = await meshEnv();
  const agents = options.agents ?? ['echo', 'research', 'summarize', 'fact-check', 'draft'];
  const config = testConfig(stack, 'e2e-client', { MESH_RETRY_TIERS: '1s,2s', ...options.vars });
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    ...stack,
    MESH_TOPIC_PREFIX: config.topicPrefix,
    MESH_PARTITIONS: String(config.partitions),
    MESH_RETRY_TIERS: '1s,2s',
    MESH_LOG_LEVEL: 'warn',
    MESH_SHUTDOWN_TIMEOUT: '5s',
    MESH_HTTP_HOST: '127.0.0.1',
    MESH_WORKER_AGENTS: agents.join(','),
    ...options.vars,
  };
  const client = testRuntime(t, config, { agents });
  await client.start();
  const probe = await probeTopics(client.kafka, [
    client.topics.outputs,
    client.topics.dlq,
    client.topics.escalations,
    client.topics.results,
    client.topics.stages,
  ]);
  onCleanup(t, () => probe.stop());

  const services = new Map<string, RunningProcess>();
  const start = async (
    name: string,
    extraEnv: Record<string, string> = {},
    script = `services/${name}/src/main.ts`,
  ): Promise<RunningProcess> => {
    const port = services.get(name)?.port ?? (await freePort());
    // By the service the script runs, so that a second replica gets the variables of the first.
    const service = /^services\/([^/]+)\//.exec(script)?.[1] as ServiceName | undefined;
    const serviceVars = service === undefined ? undefined : options.serviceVars?.[service];
    const child = spawn(process.execPath, [script], {
      cwd: root,
      env: { ...env, ...serviceVars, ...extraEnv, MESH_HTTP_PORT: String(port) },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const running: RunningProcess = {
      name,
      child,
      port,
      url: `http://127.0.0.1:${port}`,
      output: [],
    };
    const keep = (chunk: Buffer): void => {
      for (const line of chunk.toString().split('\n'))
        if (line.length > 0) running.output.push(line);
      if (running.output.length > maxKeptLines)
        running.output.splice(0, running.output.length - maxKeptLines);
    };
    child.stdout?.on('data', keep);
    child.stderr?.on('data', keep);
    services.set(name, running);
    await waitFor(
      async () => {
        if (child.exitCode !== null)
          throw new Error(
            `${name} exited with ${child.exitCode}: ${running.output.slice(-5).join(' | ')}`,
          );
        const response = await fetch(`${running.url}/readyz`);
        return response.status === 200;
      },
      { timeout: 60_000, interval: 200, message: `${name} did not become ready` },
    );
    return running;
  };
  const kill = async (name: string, signal: NodeJS.Signals = 'SIGTERM'): Promise<void> => {
    const running = services.get(name);
    if (
      running === undefined ||
      running.child.exitCode !== null ||
      running.child.signalCode !== null
    )
      return;
    const exited = new Promise((resolve) => running.child.once('exit', resolve));
    running.child.kill(signal);
    await Promise.race([exited, sleep(15_000)]);
    if (running.child.exitCode === null && running.child.signalCode === null) {
      running.child.kill('SIGKILL');
      await exited;
    }
  };
  onCleanup(t, async () => {
    await Promise.all([...services.keys()].map((name) => kill(name, 'SIGTERM')));
  });
  // Start in parallel; each waits for its own readiness.
  await Promise.all((options.services ?? serviceNames).map((name) => start(name)));
  return {
    env,
    client,
    probe,
    services,
    url: (name) => services.get(name)?.url ?? '',
    kill,
    start,
    tails: (lines = 15) =>
      [...services.values()]
        .map(
          (s) =>
            `--- ${s.name} (exit ${String(s.child.exitCode ?? s.child.signalCode)})\n` +
            `${digestProblems(s.output)}\n  last lines:\n${s.output.slice(-lines).join('\n')}`,
        )
        .join('\n'),
  };
}

/** Lines of a service's output kept for failure reports (a chaos run writes a few thousand). */
const maxKeptLines = 50_000;

/**
 * The warnings and errors (pino level 40 and up) of one service's output, one line per distinct
 * message: how many, when first and last, and the first one's error.
 */
function digestProblems(output: string[]): string {
  const byMessage = new Map<
    string,
    { count: number; level: number; first: string; last: string; err: string }
  >();
  for (const line of output) {
    let entry: {
      level?: unknown;
      msg?: unknown;
      time?: unknown;
      err?: unknown;
      kafka?: { error?: unknown };
    };
    try {
      entry = JSON.parse(line) as typeof entry;
    } catch {
      continue;
    }
    if (typeof entry.level !== 'number' || entry.level < 40) continue;
    const msg = typeof entry.msg === 'string' ? entry.msg : JSON.stringify(entry.msg ?? '');
    // The services log ISO times (pino isoTime); the clock time is enough to line events up.
    const time = typeof entry.time === 'string' ? entry.time.slice(11, 23) : '?';
    const seen = byMessage.get(msg);
    if (seen === undefined) {
      // kafkajs's own messages carry their error under `kafka`.
      const detail = entry.err ?? entry.kafka?.error;
      const err = detail === undefined ? '' : JSON.stringify(detail).slice(0, 300);
      byMessage.set(msg, { count: 1, level: entry.level, first: time, last: time, err });
    } else {
      seen.count += 1;
      seen.last = time;
    }
  }
  if (byMessage.size === 0) return '  no warnings or errors';
  return [...byMessage]
    .map(
      ([msg, d]) =>
        `  ${d.level >= 50 ? 'ERROR' : 'WARN'} ${d.count}× ${JSON.stringify(msg)} ${d.first}..${d.last}` +
        (d.err === '' ? '' : ` first err: ${d.err}`),
    )
    .join('\n');
}

/** The sum of a metric over all its label sets, read from a process's `/metrics` (0 when absent). */
export async function metricTotal(url: string, name: string): Promise<number> {
  const text = await (await fetch(`${url}/metrics`)).text();
  let sum = 0;
  for (const [, value] of text.matchAll(new RegExp(`^${name}(?:\\{[^}]*\\})? (\\S+)$`, 'gm')))
    sum += Number(value);
  return sum;
}

/** The task outcome events on mesh.outputs for a task id. */
export function outcomesOf(
  mesh: Mesh,
  taskId: string,
): { id: string; type: string; data: Record<string, unknown> }[] {
  return mesh.probe
    .on(mesh.client.topics.outputs)
    .filter((r) => mesh.probe.header(r, 'ce_correlationid') === taskId)
    .map((r) => ({
      id: mesh.probe.header(r, 'ce_id') ?? '',
      type: mesh.probe.header(r, 'ce_type') ?? '',
      data: JSON.parse((r.value ?? Buffer.alloc(0)).subarray(5).toString()) as Record<
        string,
        unknown
      >,
    }));
}

export async function postJson(
  url: string,
  body: unknown,
  token?: string,
): Promise<{ status: number; body: Record<string, unknown>; headers: Headers }> {
  const response = await fetch(url, {
    method: 'POST',
    headers: {
      'content-type': 'application/json',
      ...(token === undefined ? {} : { authorization: `Bearer ${token}` }),
    },
    body: JSON.stringify(body),
  });
  return {
    status: response.status,
    body: (await response.json()) as Record<string, unknown>,
    headers: response.headers,
  };
}

export async function getJson(
  url: string,
): Promise<{ status: number; body: Record<string, unknown> }> {
  const response = await fetch(url);
  return { status: response.status, body: (await response.json()) as Record<string, unknown> };
}

/**
 * kcat, a Kafka client no one here wrote, against the mesh's brokers (`brokers`, and `-X` settings
 * such as TLS and SASL in `kcatArgs`). `publishTask` sends a structured-mode
 * `io.mesh.task.requested` to the requests topic (the task id is the event id and the key) and
 * returns the task id; `readOutputs` returns the outputs topic as `<key> <headers>` lines. Either
 * throws with kcat's stderr when kcat fails.
 */
export function kcat(mesh: Mesh, brokers: string, kcatArgs: string[] = []) {
  const run = (args: string[], input?: string): string => {
    const result = spawnSync('kcat', ['-b', brokers, ...kcatArgs, ...args], {
      encoding: 'utf8',
      timeout: 30_000,
      ...(input === undefined ? {} : { input }),
    });
    if (result.status !== 0)
      throw new Error(`kcat ${args.join(' ')} failed (${result.status}): ${result.stderr}`);
    return result.stdout;
  };
  return {
    publishTask(input: Record<string, unknown>): string {
      const taskId = randomUUID();
      const event = {
        specversion: '1.0',
        id: taskId,
        source: 'kcat',
        type: 'io.mesh.task.requested',
        datacontenttype: 'application/json',
        data: { input },
      };
      run(
        ['-P', '-t', mesh.client.topics.requests, '-k', taskId].concat([
          '-H',
          'content-type=application/cloudevents+json',
        ]),
        `${JSON.stringify(event)}\n`,
      );
      return taskId;
    },
    readOutputs(): string {
      return run([
        '-C',
        '-t',
        mesh.client.topics.outputs,
        '-o',
        'beginning',
        '-e',
        '-f',
        '%k %h\n',
      ]);
    },
  };
}
