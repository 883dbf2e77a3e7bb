// node:test's test() returns a promise the runner itself awaits.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';

const run = promisify(execFile);

/** What a process that logs one line through `createLogger(…, fd)` prints on stdout and stderr. */
async function outputsOf(fd: 1 | 2): Promise<{ stdout: string; stderr: string }> {
  const logger = new URL('./logger.ts', import.meta.url).href;
  const script = `const { createLogger } = await import(${JSON.stringify(logger)});
createLogger('probe', 'info', ${fd}).info({ password: 'hunter2' }, 'hello');`;
  return run(process.execPath, ['--input-type=module', '-e', script]);
}

test('a logger on fd 2 leaves stdout to the tool, and still redacts', async () => {
  const { stdout, stderr } = await outputsOf(2);
  assert.equal(stdout, '');
  const line = JSON.parse(stderr.trim()) as Record<string, unknown>;
  assert.equal(line.msg, 'hello');
  assert.equal(line.service, 'probe');
  assert.equal(line.password, '***');
});

test('a service logger writes to stdout', async () => {
  const { stdout, stderr } = await outputsOf(1);
  assert.equal(stderr, '');
  assert.equal((JSON.parse(stdout.trim()) as Record<string, unknown>).msg, 'hello');
});
