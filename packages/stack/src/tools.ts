import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { constants } from 'node:fs';
import { access, mkdir, readFile, writeFile } from 'node:fs/promises';
import { connect } from 'node:net';
import { delimiter, dirname, join } from 'node:path';
import { lastLines } from './processes.ts';

/** A sink for one-line progress messages. */
export type Reporter = (line: string) => void;

export function formatSeconds(ms: number): string {
  return `${(ms / 1000).toFixed(1)}s`;
}

/** The absolute path of `command` on PATH, or undefined. */
export async function findOnPath(
  command: string,
  path: string = process.env['PATH'] ?? '',
): Promise<string | undefined> {
  for (const dir of path.split(delimiter)) {
    if (dir === '') continue;
    const candidate = join(dir, command);
    try {
      await access(candidate, constants.X_OK);
      return candidate;
    } catch {
      // not in this directory
    }
  }
  return undefined;
}

/** The java executable; rejects with what to install when there is none. */
export async function requireJava(): Promise<string> {
  const java = await findOnPath('java');
  if (java === undefined) {
    throw new Error(
      'java is not on PATH: Kafka and Apicurio need Java 17+ (e.g. `apt-get install -y openjdk-17-jre-headless`)',
    );
  }
  return java;
}

/**
 * Runs a short-lived command to completion and resolves with its combined output.
 * Rejects when it cannot start or exits non-zero; the error message ends with the last lines of its output.
 */
export function runCommand(
  file: string,
  args: readonly string[],
  options: { cwd: string; env?: NodeJS.ProcessEnv },
): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn(file, args, {
      cwd: options.cwd,
      env: options.env ?? process.env,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const chunks: Buffer[] = [];
    child.stdout.on('data', (chunk: Buffer) => chunks.push(chunk));
    child.stderr.on('data', (chunk: Buffer) => chunks.push(chunk));
    child.once('error', reject);
    child.once('close', (code, signal) => {
      const output = Buffer.concat(chunks).toString('utf8');
      if (code === 0) resolve(output);
      else {
        const how = signal === null ? `exit code ${code}` : `signal ${signal}`;
        reject(
          new Error(
            `\`${file} ${args.join(' ')}\` failed (${how}) in ${options.cwd}:\n${lastLines(output, 40)}`,
          ),
        );
      }
    });
  });
}

/** True when something accepts TCP connections on host:port within `timeoutMs`. Never throws. */
export function isPortOpen(host: string, port: number, timeoutMs = 1_000): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect({ host, port });
    const done = (open: boolean) => {
      socket.destroy();
      resolve(open);
    };
    socket.setTimeout(timeoutMs, () => done(false));
    socket.once('connect', () => done(true));
    socket.once('error', () => done(false));
  });
}

/**
 * Settles like `promise` unless `ms` pass first, in which case it rejects with a timeout error naming `what`.
 * The timer never keeps the process alive on its own.
 */
export async function withTimeout<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () => reject(new Error(`${what} did not finish within ${formatSeconds(ms)}`)),
      ms,
    );
    timer.unref();
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** An error's message, followed by its cause's when that says more (fetch's "fetch failed" hides ECONNREFUSED there). */
export function errorMessage(error: unknown): string {
  if (!(error instanceof Error)) return String(error);
  const cause: unknown = error.cause;
  if (cause instanceof Error && cause.message !== '' && !error.message.includes(cause.message)) {
    return `${error.message} (${cause.message})`;
  }
  return error.message;
}

/**
 * A random password kept in `file` (mode 0600): generated on first use and read back afterwards, so
 * the addresses and credentials written to `.env.mesh` stay valid across restarts.
 */
export async function persistedSecret(file: string): Promise<string> {
  try {
    const stored = (await readFile(file, 'utf8')).trim();
    if (/^[0-9a-f]{32,}$/.test(stored)) return stored;
  } catch {
    // first start
  }
  const secret = randomBytes(24).toString('hex');
  await mkdir(dirname(file), { recursive: true });
  await writeFile(file, `${secret}\n`, { mode: 0o600 });
  return secret;
}
