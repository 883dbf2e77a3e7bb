import { mkdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Component } from './component.ts';
import { buildStackEnv, formatEnvFile, parseEnvFile, type StackEnv } from './env-file.ts';
import { createKafkaComponent, kafkaSaslCredentials } from './kafka.ts';
import { withLock } from './lock.ts';
import {
  isAlive,
  isOurProcess,
  processStartTime,
  readPidRecord,
  removeFile,
  spawnDetached,
  tailFile,
  terminate,
  writePidRecord,
  type ProcessExit,
} from './processes.ts';
import { createRedisComponent, redisPassword } from './redis.ts';
import { createRegistryComponent } from './registry.ts';
import { stackTlsFiles } from './tls.ts';
import {
  componentNames,
  componentPaths,
  resolveStackSettings,
  type ComponentName,
  type StackSettings,
} from './settings.ts';
import { errorMessage, formatSeconds, isPortOpen, type Reporter } from './tools.ts';

export interface StackUpOptions {
  /** Which components to bring up; all three by default. */
  components?: readonly ComponentName[];
  /** How long each component may take to become ready; MESH_STACK_READY_TIMEOUT_MS or 90 s by default. */
  readyTimeoutMs?: number;
  /** Aborting stops whatever this call has started, then rejects. */
  signal?: AbortSignal;
  /** Progress lines; written to stderr by default. */
  report?: Reporter;
}

export interface StackDownOptions {
  /** Which components to stop; all three by default. */
  components?: readonly ComponentName[];
  /** Delete the stopped components' data; by default only when every component is stopped. */
  wipeData?: boolean;
  report?: Reporter;
}

export interface StopComponentOptions {
  /** SIGTERM (default) shuts down cleanly; SIGKILL simulates a crash. Either way SIGKILL follows a stuck SIGTERM. */
  signal?: 'SIGTERM' | 'SIGKILL';
  report?: Reporter;
}

export type ComponentState = 'up' | 'down' | 'unhealthy';

export interface ComponentStatus {
  name: ComponentName;
  /** `unhealthy`: our process is alive but does not answer its probe. */
  state: ComponentState;
  pid: number | undefined;
  address: string;
  detail: string | undefined;
}

/** A component that could not be started or stopped; `logTail` holds the end of its log when there is one. */
export class StackError extends Error {
  readonly component: ComponentName | undefined;
  readonly logTail: string | undefined;

  constructor(
    message: string,
    options: { component?: ComponentName; logTail?: string; cause?: unknown } = {},
  ) {
    super(message, { cause: options.cause });
    this.name = 'StackError';
    this.component = options.component;
    this.logTail = options.logTail;
  }
}

const lockTimeoutMs = 10 * 60_000;
const logTailLines = 40;

const defaultReporter: Reporter = (line) => {
  process.stderr.write(`${line}\n`);
};

function createComponent(settings: StackSettings, name: ComponentName): Component {
  switch (name) {
    case 'kafka':
      return createKafkaComponent(settings);
    case 'registry':
      return createRegistryComponent(settings);
    case 'redis':
      return createRedisComponent(settings);
  }
}

function lockFile(settings: StackSettings): string {
  return join(settings.stateDir, 'lock');
}

function unique(names: readonly ComponentName[]): ComponentName[] {
  return componentNames.filter((name) => names.includes(name));
}

/**
 * Brings the requested components up (all three by default), in parallel, and leaves running ones alone.
 * Resolves with the stack's variables, also written to `<repo root>/.env.mesh` when all three components run.
 * Serialised with other stack commands through a lock file, so concurrent callers start the stack once.
 * Rejects with a StackError (message includes the end of the failing component's log) when a component does not
 * become ready in time or its process exits; whatever this call started is stopped again first. Not retried.
 */
export async function stackUp(options: StackUpOptions = {}): Promise<StackEnv> {
  const settings = resolveStackSettings();
  const report = options.report ?? defaultReporter;
  const names = unique(options.components ?? componentNames);
  const readyTimeoutMs = options.readyTimeoutMs ?? settings.readyTimeoutMs;
  return withLock(
    lockFile(settings),
    async () => {
      const began = Date.now();
      // One failure stops the other starts at once rather than after their own readiness timeouts.
      const failFast = new AbortController();
      const onAbort = () => failFast.abort(abortError('the start was aborted'));
      options.signal?.addEventListener('abort', onAbort, { once: true });
      if (options.signal?.aborted === true) onAbort();
      const startedHere: ComponentName[] = [];
      try {
        const results = await Promise.allSettled(
          names.map(async (name) => {
            try {
              const component = createComponent(settings, name);
              const upOptions = { readyTimeoutMs, signal: failFast.signal, report };
              if (await ensureUp(settings, component, upOptions)) startedHere.push(name);
            } catch (error) {
              failFast.abort(abortError(`${name} failed`));
              throw error;
            }
          }),
        );
        const errors = results.flatMap((result) =>
          result.status === 'rejected' ? [result.reason as unknown] : [],
        );
        if (errors.length > 0) {
          await Promise.all(startedHere.map((name) => stopRecorded(settings, name, { report })));
          const causes = errors.filter((error) => !isAbortError(error));
          if (causes.length === 0)
            throw new StackError('stack up was aborted; stopped what it had started', {
              cause: errors[0],
            });
          if (causes.length === 1) throw causes[0];
          throw new StackError(causes.map(errorMessage).join('\n\n'), {
            cause: new AggregateError(causes),
          });
        }
      } finally {
        options.signal?.removeEventListener('abort', onAbort);
      }
      const env = buildStackEnv(
        settings,
        await redisPassword(settings),
        await secureStackCredentials(settings),
      );
      if ((await runningComponents(settings)).length === componentNames.length) {
        await writeFile(settings.envFile, formatEnvFile(env));
      }
      report(`stack up in ${formatSeconds(Date.now() - began)}`);
      return env;
    },
    {
      timeoutMs: lockTimeoutMs,
      signal: options.signal,
      onWait: (pid) => report(`waiting for another stack command (pid ${pid}) to finish`),
    },
  );
}

async function secureStackCredentials(settings: StackSettings) {
  const kafka = await kafkaSaslCredentials(settings);
  return {
    caFile: stackTlsFiles(settings).caFile,
    kafkaUsername: kafka.username,
    kafkaPassword: kafka.password,
  };
}

/**
 * Stops the requested components (all three by default) by their recorded pids: SIGTERM, then SIGKILL after a
 * timeout. A pid that no longer belongs to a process of this stack is forgotten, never signalled.
 * With every component stopped (or `wipeData`), their data is deleted so the next `up` starts clean, and the
 * env file is removed. Rejects only on file-system errors.
 */
export async function stackDown(options: StackDownOptions = {}): Promise<void> {
  const settings = resolveStackSettings();
  const report = options.report ?? defaultReporter;
  const names = unique(options.components ?? componentNames);
  const full = names.length === componentNames.length;
  const wipe = options.wipeData ?? full;
  await withLock(
    lockFile(settings),
    async () => {
      await Promise.all(names.map((name) => stopRecorded(settings, name, { report })));
      if (wipe) {
        for (const name of names)
          await rm(componentPaths(settings, name).dataDir, { recursive: true, force: true });
      }
      if (full) {
        await rm(settings.envFile, { force: true });
        await rotateLogs(settings);
      }
      if (wipe) report(`data of ${names.join(', ')} deleted`);
    },
    {
      timeoutMs: lockTimeoutMs,
      onWait: (pid) => report(`waiting for another stack command (pid ${pid}) to finish`),
    },
  );
}

/** Starts one component (keeping its data) and waits until it is ready; see stackUp for what it throws. */
export async function startComponent(
  name: ComponentName,
  options: Omit<StackUpOptions, 'components'> = {},
): Promise<void> {
  await stackUp({ ...options, components: [name] });
}

/**
 * Stops one component and keeps its data, so startComponent brings it back with its topics and offsets
 * (Kafka) — for chaos tests. Resolves once the process is gone; a component that is not running is a no-op.
 */
export async function stopComponent(
  name: ComponentName,
  options: StopComponentOptions = {},
): Promise<void> {
  const settings = resolveStackSettings();
  const report = options.report ?? defaultReporter;
  await withLock(
    lockFile(settings),
    () => stopRecorded(settings, name, { report, signal: options.signal }),
    {
      timeoutMs: lockTimeoutMs,
    },
  );
}

/** Each component's state, probing the live ones (a cheap probe: Kafka metadata, registry GET, Redis PING). Never throws. */
export async function stackStatus(): Promise<ComponentStatus[]> {
  const settings = resolveStackSettings();
  return Promise.all(
    componentNames.map(async (name): Promise<ComponentStatus> => {
      const component = createComponent(settings, name);
      const record = await readPidRecord(componentPaths(settings, name).pidFile);
      const base = { name, address: component.address };
      if (record === undefined)
        return { ...base, state: 'down', pid: undefined, detail: undefined };
      if (!(await isOurProcess(record, settings.stateDir))) {
        return { ...base, state: 'down', pid: undefined, detail: `stale pid record ${record.pid}` };
      }
      try {
        await component.probe({ thorough: false, timeoutMs: 5_000 });
        return { ...base, state: 'up', pid: record.pid, detail: undefined };
      } catch (error) {
        return { ...base, state: 'unhealthy', pid: record.pid, detail: errorMessage(error) };
      }
    }),
  );
}

/**
 * The variables in `<repo root>/.env.mesh`, or undefined unless that file exists and all three recorded processes
 * are alive. Checks processes only (no network probe), so it is cheap enough to call before every test file.
 */
export async function readStackEnv(): Promise<StackEnv | undefined> {
  const settings = resolveStackSettings();
  let text: string;
  try {
    text = await readFile(settings.envFile, 'utf8');
  } catch {
    return undefined;
  }
  const env = parseEnvFile(text);
  if (env === undefined) return undefined;
  return (await runningComponents(settings)).length === componentNames.length ? env : undefined;
}

async function runningComponents(settings: StackSettings): Promise<ComponentName[]> {
  const running = await Promise.all(
    componentNames.map(async (name) => {
      const record = await readPidRecord(componentPaths(settings, name).pidFile);
      return record !== undefined && (await isOurProcess(record, settings.stateDir))
        ? name
        : undefined;
    }),
  );
  return running.filter((name) => name !== undefined);
}

/**
 * Makes one component run and answer its probe. Resolves true when this call started it, false when it was up.
 * On failure stops what it started and rejects with a StackError carrying the log's tail.
 */
async function ensureUp(
  settings: StackSettings,
  component: Component,
  options: { readyTimeoutMs: number; signal: AbortSignal; report: Reporter },
): Promise<boolean> {
  const { name } = component;
  const { report, signal } = options;
  const paths = componentPaths(settings, name);
  const record = await readPidRecord(paths.pidFile);
  if (record !== undefined) {
    if (await isOurProcess(record, settings.stateDir)) {
      try {
        await component.probe({ thorough: true, timeoutMs: 15_000 });
        report(`${name} already up (pid ${record.pid}) at ${component.address}`);
        return false;
      } catch (error) {
        report(
          `${name}: pid ${record.pid} runs but is not ready (${errorMessage(error)}); waiting`,
        );
      }
      try {
        await waitReady(component, record.pid, undefined, options);
        report(`${name} ready (pid ${record.pid}) at ${component.address}`);
        return false;
      } catch (error) {
        if (isAbortError(error)) throw error;
        const logTail = await tailFile(paths.logFile, logTailLines);
        // It had its full readiness timeout: a process that still does not answer is broken; clear it for the next `up`.
        await stopRecorded(settings, name, { report });
        throw failure(
          name,
          `was running (pid ${record.pid}) but ${errorMessage(error)}`,
          logTail,
          error,
        );
      }
    }
    await removeFile(paths.pidFile);
    report(`${name}: removed stale pid record (pid ${record.pid} is not ours any more)`);
  }

  for (const port of component.ports) {
    if (await isPortOpen(settings.host, port)) {
      throw new StackError(
        `${name}: port ${settings.host}:${port} is already in use by a process this stack did not start ` +
          '(stop it, or move the stack with MESH_STACK_*_PORT)',
        { component: name },
      );
    }
  }
  try {
    await component.prepare(report);
  } catch (error) {
    throw new StackError(`${name}: ${errorMessage(error)}`, { component: name, cause: error });
  }
  signal.throwIfAborted();

  const command = await component.command();
  const began = Date.now();
  let spawned;
  try {
    spawned = await spawnDetached({ ...command, logFile: paths.logFile });
  } catch (error) {
    throw new StackError(`${name}: cannot start ${command.file}: ${errorMessage(error)}`, {
      component: name,
      cause: error,
    });
  }
  await writePidRecord(paths.pidFile, {
    pid: spawned.pid,
    startTime: await processStartTime(spawned.pid),
    startedAt: new Date().toISOString(),
    command: [command.file, ...command.args],
  });
  report(`${name} starting (pid ${spawned.pid}), log: ${paths.logFile}`);
  try {
    await waitReady(component, spawned.pid, spawned.exited, options);
  } catch (error) {
    const logTail = await tailFile(paths.logFile, logTailLines);
    await stopRecorded(settings, name, { report, signal: 'SIGKILL' });
    if (isAbortError(error)) throw error;
    throw failure(name, errorMessage(error), logTail, error);
  }
  report(
    `${name} ready in ${formatSeconds(Date.now() - began)} (pid ${spawned.pid}) at ${component.address}`,
  );
  return true;
}

function failure(name: ComponentName, what: string, logTail: string, cause: unknown): StackError {
  return new StackError(
    `${name} failed: ${what}\n--- last ${logTailLines} lines of its log ---\n${logTail}`,
    {
      component: name,
      logTail,
      cause,
    },
  );
}

function abortError(message: string): Error {
  const error = new Error(message);
  error.name = 'AbortError';
  return error;
}

function isAbortError(error: unknown): boolean {
  return error instanceof Error && error.name === 'AbortError';
}

/** Polls `component.probe` until it passes; rejects if the process exits, the timeout passes or `signal` aborts. */
async function waitReady(
  component: Component,
  pid: number,
  exited: Promise<ProcessExit> | undefined,
  options: { readyTimeoutMs: number; signal: AbortSignal },
): Promise<void> {
  const { readyTimeoutMs, signal } = options;
  const deadline = Date.now() + readyTimeoutMs;
  let exit: ProcessExit | undefined;
  const exitedEarly = new Promise<never>((_, reject) => {
    exited?.then(
      (result) => {
        exit = result;
        reject(new Error(`process exited (${describeExit(result)}) before it was ready`));
      },
      () => undefined,
    );
  });
  // Only raced below; a rejection nobody awaits any more must not crash the process.
  exitedEarly.catch(() => undefined);
  let lastError = 'no probe has run';
  for (;;) {
    signal.throwIfAborted();
    if (exit !== undefined)
      throw new Error(`process exited (${describeExit(exit)}) before it was ready`);
    if (!(await isAlive(pid))) throw new Error(`process ${pid} is gone`);
    const remaining = deadline - Date.now();
    if (remaining <= 0)
      throw new Error(`not ready within ${formatSeconds(readyTimeoutMs)}: ${lastError}`);
    try {
      await Promise.race([
        component.probe({ thorough: true, timeoutMs: Math.min(remaining, 20_000) }),
        exitedEarly,
      ]);
      return;
    } catch (error) {
      if (exit !== undefined) throw error;
      lastError = errorMessage(error);
    }
    await sleep(Math.min(300, Math.max(0, deadline - Date.now())), undefined, { signal });
  }
}

function describeExit(exit: ProcessExit): string {
  return exit.signal === null ? `exit code ${exit.code}` : `signal ${exit.signal}`;
}

/** Stops the recorded process of `name` if it is still ours, and forgets the record. Never signals a stranger. */
async function stopRecorded(
  settings: StackSettings,
  name: ComponentName,
  options: { report: Reporter; signal?: 'SIGTERM' | 'SIGKILL' },
): Promise<void> {
  const { report } = options;
  const pidFile = componentPaths(settings, name).pidFile;
  const record = await readPidRecord(pidFile);
  if (record === undefined) {
    report(`${name} is not running`);
    return;
  }
  if (!(await isOurProcess(record, settings.stateDir))) {
    await removeFile(pidFile);
    const why = (await isAlive(record.pid))
      ? `pid ${record.pid} now belongs to another process; not signalled`
      : `pid ${record.pid} had exited`;
    report(`${name}: ${why}`);
    return;
  }
  const began = Date.now();
  const component = createComponent(settings, name);
  const how = await terminate(record.pid, {
    signal: options.signal ?? 'SIGTERM',
    timeoutMs: component.stopTimeoutMs,
  });
  await removeFile(pidFile);
  const note =
    how === 'killed'
      ? ', SIGKILLed after the SIGTERM timeout'
      : options.signal === 'SIGKILL'
        ? ', SIGKILL'
        : '';
  report(`${name} stopped (pid ${record.pid}${note}) in ${formatSeconds(Date.now() - began)}`);
}

/** Keeps the logs of the run that was just torn down as `<name>.log.1`, so the next `up` starts with empty logs. */
async function rotateLogs(settings: StackSettings): Promise<void> {
  await mkdir(join(settings.stateDir, 'logs'), { recursive: true });
  for (const name of componentNames) {
    const logFile = componentPaths(settings, name).logFile;
    try {
      await rename(logFile, `${logFile}.1`);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
    }
  }
}
