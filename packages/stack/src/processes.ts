import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { closeSync, openSync, writeSync } from 'node:fs';
import { mkdir, open, readFile, readdir, readlink, rm, writeFile } from 'node:fs/promises';
import { dirname } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

/** What `up` records about a process it started, in `.mesh/stack/run/<name>.json`. */
export interface PidRecord {
  pid: number;
  /** Field 22 of /proc/<pid>/stat: tells a recycled pid from ours. */
  startTime: number | undefined;
  startedAt: string;
  command: string[];
}

export interface ProcessExit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

export interface SpawnedProcess {
  pid: number;
  /** Settles when the process exits while this Node process is still running; stays pending otherwise. */
  exited: Promise<ProcessExit>;
}

export interface DetachedCommand {
  file: string;
  args: string[];
  cwd: string;
  logFile: string;
  env?: NodeJS.ProcessEnv;
}

/**
 * Starts `command` in its own process group with stdout and stderr appended to its log file, and lets it
 * outlive this process. Rejects if the executable cannot be started (ENOENT, EACCES).
 */
export async function spawnDetached(command: DetachedCommand): Promise<SpawnedProcess> {
  await mkdir(dirname(command.logFile), { recursive: true });
  const fd = openSync(command.logFile, 'a');
  try {
    writeSync(fd, `\n=== ${new Date().toISOString()} ${command.file} ${command.args.join(' ')}\n`);
    const child = spawn(command.file, command.args, {
      cwd: command.cwd,
      detached: true,
      stdio: ['ignore', fd, fd],
      env: command.env ?? process.env,
    });
    const exited = new Promise<ProcessExit>((resolve) => {
      child.once('exit', (code, signal) => resolve({ code, signal }));
    });
    await once(child, 'spawn');
    child.unref();
    const pid = child.pid;
    if (pid === undefined) throw new Error(`${command.file} started without a pid`);
    return { pid, exited };
  } finally {
    closeSync(fd);
  }
}

/** Parses /proc/<pid>/stat: the state letter and the start time in clock ticks after boot. */
export function parseProcStat(stat: string): { state: string; startTime: number } | undefined {
  // The command name (field 2) is in parentheses and may itself contain spaces or parentheses.
  const close = stat.lastIndexOf(')');
  if (close === -1) return undefined;
  const fields = stat.slice(close + 2).split(' ');
  const state = fields[0];
  const startTime = Number(fields[19]);
  if (state === undefined || !Number.isInteger(startTime)) return undefined;
  return { state, startTime };
}

async function readProcStat(pid: number) {
  try {
    return parseProcStat(await readFile(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    return undefined;
  }
}

export async function processStartTime(pid: number): Promise<number | undefined> {
  return (await readProcStat(pid))?.startTime;
}

/**
 * True while `pid` exists and is not a zombie, or is a zombie whose other threads still run: a
 * multi-threaded process (the JVM of Kafka or the registry) shows its leader as a zombie at once on
 * SIGKILL while its other threads are still exiting and its sockets still listen.
 */
export async function isAlive(pid: number): Promise<boolean> {
  const stat = await readProcStat(pid);
  if (stat === undefined) return false;
  if (stat.state !== 'Z' && stat.state !== 'X') return true;
  try {
    return (await readdir(`/proc/${pid}/task`)).length > 1;
  } catch {
    return false;
  }
}

/**
 * True when `record` still describes a live process this stack started: same start time, working directory
 * inside `stateDir`. Redis rewrites its own command line, so the working directory is the reliable mark.
 */
export async function isOurProcess(record: PidRecord, stateDir: string): Promise<boolean> {
  const stat = await readProcStat(record.pid);
  if (stat === undefined || stat.state === 'Z' || stat.state === 'X') return false;
  if (record.startTime !== undefined && stat.startTime !== record.startTime) return false;
  try {
    const cwd = await readlink(`/proc/${record.pid}/cwd`);
    return cwd === stateDir || cwd.startsWith(`${stateDir}/`);
  } catch {
    return false;
  }
}

export async function readPidRecord(file: string): Promise<PidRecord | undefined> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch {
    return undefined;
  }
  try {
    const parsed = JSON.parse(text) as Partial<PidRecord>;
    if (typeof parsed.pid !== 'number' || !Number.isInteger(parsed.pid) || parsed.pid <= 1)
      return undefined;
    return {
      pid: parsed.pid,
      startTime: typeof parsed.startTime === 'number' ? parsed.startTime : undefined,
      startedAt: typeof parsed.startedAt === 'string' ? parsed.startedAt : '',
      command: Array.isArray(parsed.command) ? parsed.command.map(String) : [],
    };
  } catch {
    return undefined;
  }
}

export async function writePidRecord(file: string, record: PidRecord): Promise<void> {
  await mkdir(dirname(file), { recursive: true });
  await writeFile(file, `${JSON.stringify(record, null, 2)}\n`);
}

export async function removeFile(file: string): Promise<void> {
  await rm(file, { force: true });
}

/**
 * Sends `signal` (SIGTERM by default) to `pid`, waits up to `timeoutMs` for it to go, then SIGKILLs it.
 * Resolves with how it ended; never throws for a process that is already gone.
 */
export async function terminate(
  pid: number,
  options: { signal?: 'SIGTERM' | 'SIGKILL'; timeoutMs: number },
): Promise<'exited' | 'killed' | 'gone'> {
  if (!(await isAlive(pid))) return 'gone';
  if (!sendSignal(pid, options.signal ?? 'SIGTERM')) return 'gone';
  if (await waitForExit(pid, options.timeoutMs)) return 'exited';
  sendSignal(pid, 'SIGKILL');
  await waitForExit(pid, 10_000);
  return 'killed';
}

function sendSignal(pid: number, signal: NodeJS.Signals): boolean {
  try {
    process.kill(pid, signal);
    return true;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ESRCH') return false;
    throw error;
  }
}

async function waitForExit(pid: number, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (!(await isAlive(pid))) return true;
    await sleep(100);
  }
  return !(await isAlive(pid));
}

/** The last `lines` lines of a log file (read from its last 256 KiB only), or a note that there is none. */
export async function tailFile(file: string, lines: number): Promise<string> {
  let handle;
  try {
    handle = await open(file, 'r');
  } catch {
    return `(no log at ${file})`;
  }
  try {
    const { size } = await handle.stat();
    const length = Math.min(size, 256 * 1024);
    const buffer = Buffer.alloc(length);
    await handle.read(buffer, 0, length, size - length);
    return lastLines(buffer.toString('utf8'), lines);
  } finally {
    await handle.close();
  }
}

export function lastLines(text: string, lines: number): string {
  const all = text.replace(/\n+$/, '').split('\n');
  return all.slice(Math.max(0, all.length - lines)).join('\n');
}
