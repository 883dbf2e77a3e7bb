/**
 * The child processes of `mesh start`: one service each, its output read line by line (pino JSON
 * shortened to `time level msg …`), the last lines kept for error reports, a graceful stop (SIGTERM,
 * then SIGKILL after a grace period), and the restart budget for a service that keeps crashing.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import { clock, truncate } from './format.ts';

/** At most `max` restarts within `windowMs`; older restarts are forgotten. */
export class RestartPolicy {
  readonly max: number;
  readonly windowMs: number;
  readonly #times: number[] = [];

  constructor(max = 5, windowMs = 60_000) {
    this.max = max;
    this.windowMs = windowMs;
  }

  /** Records a restart at `now` and returns true when it is within the budget. */
  allow(now: number): boolean {
    while (this.#times.length > 0 && now - (this.#times[0] ?? 0) >= this.windowMs)
      this.#times.shift();
    if (this.#times.length >= this.max) return false;
    this.#times.push(now);
    return true;
  }
}

const levelNames: Record<number, string> = {
  10: 'TRACE',
  20: 'DEBUG',
  30: 'INFO',
  40: 'WARN',
  50: 'ERROR',
  60: 'FATAL',
};
const dropped = new Set(['time', 'level', 'msg', 'pid', 'hostname', 'service', 'name', 'v']);

/** A pino JSON line as `12:00:00.123 INFO  msg key=value …`; any other line as it is. */
export function shortenLogLine(line: string): string {
  if (!line.startsWith('{')) return line;
  let record: Record<string, unknown>;
  try {
    const parsed: unknown = JSON.parse(line);
    if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) return line;
    record = parsed as Record<string, unknown>;
  } catch {
    return line;
  }
  if (typeof record.level !== 'number' && typeof record.msg !== 'string') return line;
  const time =
    typeof record.time === 'string' || typeof record.time === 'number' ? clock(record.time) : '';
  const level =
    typeof record.level === 'number' ? (levelNames[record.level] ?? String(record.level)) : '';
  const extra = Object.entries(record)
    .filter(([key]) => !dropped.has(key))
    .map(([key, value]) => `${key}=${typeof value === 'string' ? value : JSON.stringify(value)}`)
    .join(' ');
  const msg = typeof record.msg === 'string' ? record.msg : '';
  return [time, level.padEnd(5), msg, extra === '' ? '' : truncate(extra, 400)]
    .filter((part) => part !== '')
    .join(' ');
}

export interface ServiceProcessOptions {
  name: string;
  entry: string;
  cwd: string;
  env: NodeJS.ProcessEnv;
  /** Each line of output, already shortened. */
  onLine(line: string, stream: 'stdout' | 'stderr'): void;
  /** The process ended without being asked to. */
  onUnexpectedExit(code: number | null, signal: NodeJS.Signals | null): void;
  /** How many lines of output to keep for error reports. */
  keepLines?: number;
}

export class ServiceProcess {
  readonly name: string;
  readonly #options: ServiceProcessOptions;
  readonly #tail: string[] = [];
  #child: ChildProcess | undefined;
  #exited: Promise<void> = Promise.resolve();
  #stopping = false;

  constructor(options: ServiceProcessOptions) {
    this.name = options.name;
    this.#options = options;
  }

  get running(): boolean {
    return (
      this.#child !== undefined && this.#child.exitCode === null && this.#child.signalCode === null
    );
  }

  get pid(): number | undefined {
    return this.#child?.pid;
  }

  /** The last lines of its output. */
  tail(lines = 15): string[] {
    return this.#tail.slice(-lines);
  }

  #keep(line: string, stream: 'stdout' | 'stderr'): void {
    this.#tail.push(line);
    if (this.#tail.length > (this.#options.keepLines ?? 40)) this.#tail.shift();
    this.#options.onLine(line, stream);
  }

  /** Starts (or restarts) the process. */
  start(): void {
    if (this.#stopping) return;
    const child = spawn(process.execPath, [this.#options.entry], {
      cwd: this.#options.cwd,
      env: this.#options.env,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    this.#child = child;
    for (const stream of ['stdout', 'stderr'] as const) {
      const source = child[stream];
      if (source === null) continue;
      createInterface({ input: source, crlfDelay: Infinity }).on('line', (line) =>
        this.#keep(shortenLogLine(line), stream),
      );
    }
    this.#exited = new Promise<void>((resolve) => {
      child.once('error', (error) => {
        this.#keep(`cannot start: ${error.message}`, 'stderr');
      });
      child.once('close', (code, signal) => {
        resolve();
        if (!this.#stopping && this.#child === child) this.#options.onUnexpectedExit(code, signal);
      });
    });
  }

  /**
   * Stops it: SIGTERM (the services drain and commit), then SIGKILL after `graceMs`.
   * Resolves with how it ended.
   */
  async stop(graceMs: number): Promise<'stopped' | 'killed' | 'not running'> {
    this.#stopping = true;
    const child = this.#child;
    if (child === undefined || !this.running) return 'not running';
    child.kill('SIGTERM');
    let timer: NodeJS.Timeout | undefined;
    const timedOut = await Promise.race([
      this.#exited.then(() => false),
      new Promise<boolean>((resolve) => {
        timer = setTimeout(() => resolve(true), graceMs);
      }),
    ]);
    clearTimeout(timer);
    if (!timedOut) return 'stopped';
    child.kill('SIGKILL');
    await this.#exited;
    return 'killed';
  }

  /** Ends it at once (a second Ctrl-C). */
  kill(): void {
    this.#stopping = true;
    if (this.running) this.#child?.kill('SIGKILL');
  }
}
