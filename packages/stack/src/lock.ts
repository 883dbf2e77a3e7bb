import { mkdir, open, readFile, rm, stat } from 'node:fs/promises';
import { dirname } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { isAlive } from './processes.ts';

/**
 * Runs `fn` while holding an exclusive lock file, so that test files started in parallel, each calling `stackUp`,
 * start the stack once and the others find it up. A lock left by a dead process is taken over.
 * Throws if the lock is still held by a live process after `timeoutMs`, or if `signal` aborts the wait.
 */
export async function withLock<T>(
  file: string,
  fn: () => Promise<T>,
  options: { timeoutMs: number; signal?: AbortSignal; onWait?: (holder: number) => void },
): Promise<T> {
  await mkdir(dirname(file), { recursive: true });
  const deadline = Date.now() + options.timeoutMs;
  let told = false;
  for (;;) {
    options.signal?.throwIfAborted();
    try {
      const handle = await open(file, 'wx');
      try {
        await handle.writeFile(`${process.pid}\n`);
      } finally {
        await handle.close();
      }
      break;
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
    }
    const holder = await readHolder(file);
    if (holder === undefined) {
      // Just created and not yet written, or left empty by a crash: only the latter is old.
      const age = await ageMs(file);
      if (age !== undefined && age > 5_000) await rm(file, { force: true });
      else await sleep(50);
      continue;
    }
    if (!(await isAlive(holder))) {
      // Re-read so that a lock another waiter has just taken over is not removed as well.
      if ((await readHolder(file)) === holder) await rm(file, { force: true });
      continue;
    }
    if (Date.now() > deadline) throw new Error(`stack lock ${file} is still held by pid ${holder}`);
    if (!told) {
      options.onWait?.(holder);
      told = true;
    }
    await sleep(250);
  }
  try {
    return await fn();
  } finally {
    await rm(file, { force: true });
  }
}

async function readHolder(file: string): Promise<number | undefined> {
  try {
    const pid = Number((await readFile(file, 'utf8')).trim());
    return Number.isInteger(pid) && pid > 0 ? pid : undefined;
  } catch {
    return undefined;
  }
}

async function ageMs(file: string): Promise<number | undefined> {
  try {
    return Date.now() - (await stat(file)).mtimeMs;
  } catch {
    return undefined;
  }
}
