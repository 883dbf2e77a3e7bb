import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { withLock } from './lock.ts';

test('withLock serialises holders and takes over a lock left by a dead process', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'mesh-stack-lock-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const file = join(dir, 'lock');
  const events: string[] = [];
  const holder = (name: string) =>
    withLock(
      file,
      async () => {
        events.push(`${name} in`);
        await sleep(50);
        events.push(`${name} out`);
      },
      { timeoutMs: 5_000 },
    );
  await Promise.all([holder('a'), holder('b')]);
  assert.deepEqual(
    events.slice(0, 2).map((e) => e.split(' ')[1]),
    ['in', 'out'],
  );
  assert.equal(events.length, 4);

  // pid 2^22 + 1 is above Linux's pid_max, so it is never alive.
  await writeFile(file, `${2 ** 22 + 1}\n`);
  assert.equal(await withLock(file, async () => 'took over', { timeoutMs: 1_000 }), 'took over');
});

test('withLock gives up while a live process holds the lock', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'mesh-stack-lock-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const file = join(dir, 'lock');
  await writeFile(file, `${process.pid}\n`);
  const waited: number[] = [];
  await assert.rejects(
    withLock(file, async () => undefined, { timeoutMs: 300, onWait: (pid) => waited.push(pid) }),
    /still held by pid/,
  );
  assert.deepEqual(waited, [process.pid]);
});
