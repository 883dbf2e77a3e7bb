import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import {
  isAlive,
  isOurProcess,
  lastLines,
  parseProcStat,
  processStartTime,
  spawnDetached,
  tailFile,
  terminate,
} from './processes.ts';

test('parseProcStat reads state and start time past a command name with spaces and parentheses', () => {
  const fields = Array.from({ length: 50 }, (_, i) => String(i + 3));
  fields[0] = 'S';
  fields[19] = '123456';
  assert.deepEqual(parseProcStat(`42 (a (b) c) ${fields.join(' ')}`), {
    state: 'S',
    startTime: 123456,
  });
  assert.equal(parseProcStat('garbage'), undefined);
});

test('lastLines ignores trailing newlines', () => {
  assert.equal(lastLines('a\nb\nc\n\n', 2), 'b\nc');
  assert.equal(lastLines('a', 5), 'a');
});

test('a detached process is ours by its working directory, and terminate stops it', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'mesh-stack-test-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const logFile = join(dir, 'logs', 'sleep.log');
  const spawned = await spawnDetached({
    file: '/bin/sh',
    args: ['-c', 'echo hello; exec sleep 30'],
    cwd: dir,
    logFile,
  });
  t.after(() => terminate(spawned.pid, { signal: 'SIGKILL', timeoutMs: 1_000 }));
  const record = {
    pid: spawned.pid,
    startTime: await processStartTime(spawned.pid),
    startedAt: '',
    command: [],
  };
  assert.equal(await isAlive(spawned.pid), true);
  assert.equal(await isOurProcess(record, dir), true);
  assert.equal(await isOurProcess(record, join(dir, 'elsewhere')), false);
  assert.equal(
    await isOurProcess({ ...record, startTime: (record.startTime ?? 0) + 1 }, dir),
    false,
  );
  const deadline = Date.now() + 5_000;
  while (!(await readFile(logFile, 'utf8')).includes('hello') && Date.now() < deadline)
    await sleep(20);
  assert.equal(await terminate(spawned.pid, { timeoutMs: 5_000 }), 'exited');
  assert.equal((await spawned.exited).signal, 'SIGTERM');
  assert.equal(await isAlive(spawned.pid), false);
  assert.equal(await terminate(spawned.pid, { timeoutMs: 1_000 }), 'gone');
  assert.match(await readFile(logFile, 'utf8'), /^\n=== .*\nhello\n$/);
  assert.equal(await tailFile(logFile, 1), 'hello');
  assert.match(await tailFile(join(dir, 'missing.log'), 1), /no log at/);
});
