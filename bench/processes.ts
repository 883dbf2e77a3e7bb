/**
 * The processes a benchmark runs besides itself: the mesh's services (each on its own port, ready
 * when `/readyz` answers 200), the raw kafkajs pipeline's roles, the fake LLM. Their CPU time and
 * memory are read from `/proc`, and with a profile directory each runs under `--cpu-prof`.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';
import { readStackEnv, stackStatus } from '@mesh/stack';
import { freePort } from '@mesh/testkit';
import type { KafkajsCopy, RawMode } from './plain-kafkajs.ts';

export const root = fileURLToPath(new URL('../', import.meta.url));

export type ServiceName = 'orchestrator' | 'worker' | 'aggregator' | 'dlq-triage';
export const serviceNames: ServiceName[] = ['orchestrator', 'worker', 'aggregator', 'dlq-triage'];

export interface Proc {
  name: string;
  child: ChildProcess;
  pid: number;
  /** `http://127.0.0.1:<port>` for the services and the fake LLM. */
  url: string;
  /** The last lines of its output, for failure messages. */
  output: string[];
}

/**
 * The environment of a child: this process's, without any `MESH_` variable (the services refuse
 * unknown ones, and the stack's port settings are not theirs), plus `vars`.
 */
export function childEnv(vars: Record<string, string>): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [name, value] of Object.entries(process.env))
    if (!name.startsWith('MESH_')) env[name] = value;
  return { ...env, ...vars };
}

export interface SpawnOptions {
  env: NodeJS.ProcessEnv;
  args?: string[];
  url?: string;
  /** Ready when `GET <url><readyPath>` answers 200 … */
  readyPath?: string;
  /** … or when a line of its standard output matches. */
  readyLine?: RegExp;
  /** Write a CPU profile into this directory when it exits. */
  profileDir?: string;
  timeoutMs?: number;
}

/**
 * Starts `node <script>` in the repository root and waits until it is ready.
 * @throws Error when it exits or is not ready within the timeout (60 s), with its last output lines.
 */
export async function spawnNode(
  name: string,
  script: string,
  options: SpawnOptions,
): Promise<Proc> {
  const nodeArgs =
    options.profileDir === undefined
      ? []
      : [
          '--cpu-prof',
          `--cpu-prof-dir=${options.profileDir}`,
          `--cpu-prof-name=${name}-${Date.now()}.cpuprofile`,
        ];
  const child = spawn(process.execPath, [...nodeArgs, script, ...(options.args ?? [])], {
    cwd: root,
    env: options.env,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const proc: Proc = { name, child, pid: child.pid ?? -1, url: options.url ?? '', output: [] };
  let lineSeen = false;
  const keep = (chunk: Buffer): void => {
    for (const line of chunk.toString().split('\n')) {
      if (line.length === 0) continue;
      proc.output.push(line);
      if (options.readyLine?.test(line) === true) lineSeen = true;
    }
    if (proc.output.length > 200) proc.output.splice(0, proc.output.length - 200);
  };
  child.stdout?.on('data', keep);
  child.stderr?.on('data', keep);
  const deadline = Date.now() + (options.timeoutMs ?? 60_000);
  for (;;) {
    if (child.exitCode !== null || child.signalCode !== null)
      throw new Error(`${name} exited (${describeExit(child)}): ${tail(proc)}`);
    if (options.readyLine !== undefined && lineSeen) return proc;
    if (options.readyPath !== undefined) {
      const ok = await fetch(`${proc.url}${options.readyPath}`).then(
        (r) => r.status === 200,
        () => false,
      );
      if (ok) return proc;
    }
    if (Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new Error(
        `${name} was not ready within ${options.timeoutMs ?? 60_000} ms: ${tail(proc)}`,
      );
    }
    await sleep(100);
  }
}

function describeExit(child: ChildProcess): string {
  return child.exitCode !== null ? `status ${child.exitCode}` : `signal ${child.signalCode}`;
}

export function tail(proc: Proc, lines = 8): string {
  return proc.output.slice(-lines).join(' | ');
}

/** SIGTERM, then SIGKILL after `timeoutMs`; resolves once the process is gone. */
export async function stopProc(proc: Proc, timeoutMs = 20_000): Promise<void> {
  const { child } = proc;
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((resolve) => child.once('exit', resolve));
  child.kill('SIGTERM');
  await Promise.race([exited, sleep(timeoutMs)]);
  if (child.exitCode === null && child.signalCode === null) {
    child.kill('SIGKILL');
    await exited;
  }
}

/** Starts one mesh service; `vars` are its whole MESH_* environment but the HTTP port. */
export async function spawnService(
  name: ServiceName,
  vars: Record<string, string>,
  options: { label?: string; profileDir?: string } = {},
): Promise<Proc> {
  const port = await freePort();
  return spawnNode(options.label ?? name, `services/${name}/src/main.ts`, {
    env: childEnv({ ...vars, MESH_HTTP_HOST: '127.0.0.1', MESH_HTTP_PORT: String(port) }),
    url: `http://127.0.0.1:${port}`,
    readyPath: '/readyz',
    ...(options.profileDir === undefined ? {} : { profileDir: options.profileDir }),
  });
}

/** The fake LLM as a process (`services/worker/src/fake-llm-main.ts`). */
export async function spawnFakeLlm(latencyMs: number): Promise<Proc> {
  const port = await freePort();
  return spawnNode('fake-llm', 'services/worker/src/fake-llm-main.ts', {
    env: childEnv({
      FAKE_LLM_PORT: String(port),
      FAKE_LLM_HOST: '127.0.0.1',
      FAKE_LLM_LATENCY_MS: String(latencyMs),
    }),
    url: `http://127.0.0.1:${port}`,
    readyLine: /listening/,
  });
}

/** Starts one role of the raw kafkajs pipeline (`bench/raw-pipeline.ts`). */
export async function spawnRaw(
  role: string,
  args: string[],
  options: { label?: string; profileDir?: string } = {},
): Promise<Proc> {
  return spawnNode(options.label ?? `raw-${role}`, 'bench/raw-pipeline.ts', {
    env: childEnv({}),
    args: [role, ...args],
    readyLine: /^ready$/,
    ...(options.profileDir === undefined ? {} : { profileDir: options.profileDir }),
  });
}

const clockTicks = 100;

/** CPU seconds (user + system) a process used so far, from `/proc/<pid>/stat`; 0 when gone. */
export async function cpuSeconds(pid: number): Promise<number> {
  try {
    const stat = await readFile(`/proc/${pid}/stat`, 'utf8');
    // Fields after the command name (which may hold spaces) start at its closing parenthesis.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(fields[11]) + Number(fields[12])) / clockTicks;
  } catch {
    return 0;
  }
}

/** Resident memory now and at its peak, in MB, from `/proc/<pid>/status`. */
export async function memoryOf(pid: number): Promise<{ rssMb: number; peakMb: number }> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8');
  const kb = (field: string): number =>
    Number(new RegExp(`^${field}:\\s+(\\d+)`, 'm').exec(status)?.[1] ?? 0);
  return { rssMb: kb('VmRSS') / 1024, peakMb: kb('VmHWM') / 1024 };
}

/** Busy and total jiffies of all cores together, from the first line of `/proc/stat`. */
async function hostJiffies(): Promise<{ busy: number; total: number }> {
  const line = (await readFile('/proc/stat', 'utf8')).split('\n', 1)[0] ?? '';
  const fields = line.trim().split(/\s+/).slice(1, 9).map(Number);
  const total = fields.reduce((sum, v) => sum + v, 0);
  // user nice system idle iowait irq softirq steal: all but idle and iowait. Steal (the time the
  // hypervisor ran another guest) counts: a core this machine could not use is not free either.
  return { busy: total - (fields[3] ?? 0) - (fields[4] ?? 0), total };
}

/** The name `cpuDuring` gives the CPU time of the process it runs in. */
export const thisProcess = 'bench (this process)';

/**
 * CPU seconds of each process over `work`, keyed by process name (summed over equal names), and
 * how busy the whole machine was meanwhile (percent of all its cores, every process counted).
 */
export async function cpuDuring<T>(
  procs: { name: string; pid: number }[],
  work: () => Promise<T>,
): Promise<{ result: T; cpu: Record<string, number>; seconds: number; hostBusyPct: number }> {
  const before = await Promise.all(procs.map((p) => cpuSeconds(p.pid)));
  const host0 = await hostJiffies();
  const self0 = process.cpuUsage();
  const started = performance.now();
  const result = await work();
  const seconds = (performance.now() - started) / 1_000;
  const host1 = await hostJiffies();
  const after = await Promise.all(procs.map((p) => cpuSeconds(p.pid)));
  const self = process.cpuUsage(self0);
  const cpu: Record<string, number> = {};
  procs.forEach((p, i) => {
    cpu[p.name] = (cpu[p.name] ?? 0) + ((after[i] ?? 0) - (before[i] ?? 0));
  });
  cpu[thisProcess] = (self.user + self.system) / 1e6;
  const hostBusyPct = (100 * (host1.busy - host0.busy)) / Math.max(1, host1.total - host0.total);
  return { result, cpu, seconds, hostBusyPct };
}

/**
 * Kafka, the registry and Redis as processes, when the brokers are the local stack's (their CPU time
 * is part of what a pipeline costs); none otherwise.
 */
export async function stackProcs(brokers: string): Promise<{ name: string; pid: number }[]> {
  const local = await readStackEnv().catch(() => undefined);
  if (local?.MESH_KAFKA_BROKERS !== brokers) return [];
  const status = await stackStatus().catch(() => []);
  return status
    .filter((c) => c.pid !== undefined)
    .map((c) => ({ name: `stack ${c.name}`, pid: c.pid as number }));
}

/** The raw pipeline's planner, agents and joiner, each a process, on the topics under `prefix`. */
export async function spawnRawPipeline(options: {
  brokers: string;
  prefix: string;
  mode: RawMode;
  /** Which kafkajs (default `patched`, the mesh's own; see `plain-kafkajs.ts`). */
  kafkajs?: KafkajsCopy;
  llmUrl?: string;
  profileDir?: string;
  /** Process names get this suffix (two raw pipelines in one run). */
  label?: string;
}): Promise<Proc[]> {
  const args = ['--brokers', options.brokers, '--prefix', options.prefix, '--mode', options.mode];
  if (options.kafkajs !== undefined) args.push('--kafkajs', options.kafkajs);
  if (options.llmUrl !== undefined) args.push('--llm-url', options.llmUrl);
  const profile = options.profileDir === undefined ? {} : { profileDir: options.profileDir };
  return Promise.all(
    ['planner', 'agents', 'joiner'].map((role) =>
      spawnRaw(role, args, { ...profile, label: `raw-${role}${options.label ?? ''}` }),
    ),
  );
}
