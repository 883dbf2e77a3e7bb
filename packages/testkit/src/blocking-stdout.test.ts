/**
 * `npm test` passes `--test-force-exit`, under which Node can drop the last results of a test file
 * (nodejs/node#64833): a run then reports fewer tests than ran and still exits 0. The preload that
 * `npm test` adds must keep every result: a file of 401 tests run the way `npm test` runs files
 * reports 401, every time.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const preload = new URL('./blocking-stdout.mjs', import.meta.url).href;
const { NODE_TEST_CONTEXT: _context, ...childEnv } = process.env;

function runTests(file: string): Promise<{ code: number | null; out: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(
      process.execPath,
      [
        '--import',
        preload,
        '--test',
        '--test-force-exit',
        '--test-concurrency=1',
        '--test-reporter=spec',
        file,
      ],
      // Without NODE_TEST_CONTEXT: this process's own test runner set it, and a child that sees it
      // takes itself for one of its test files and runs nothing.
      { stdio: ['ignore', 'pipe', 'inherit'], env: childEnv },
    );
    let out = '';
    child.stdout.setEncoding('utf8');
    child.stdout.on('data', (chunk: string) => (out += chunk));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, out }));
  });
}

test('with the preload, --test-force-exit reports every test of a long file', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'force-exit-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const file = join(dir, 'many.test.cjs');
  const lines = ["const { test } = require('node:test');"];
  for (let i = 1; i <= 400; i += 1) lines.push(`test('t${i}', () => {});`);
  lines.push("test('last', () => {});");
  writeFileSync(file, `${lines.join('\n')}\n`);

  // Without the preload this loses a varying tail (294 to 401 of 401 in five runs here).
  for (let run = 1; run <= 3; run += 1) {
    const { code, out } = await runTests(file);
    assert.equal(code, 0, out.slice(-2000));
    assert.match(out, /ℹ tests 401\n/, `run ${run} lost results:\n${out.slice(-600)}`);
    assert.match(out, /ℹ pass 401\n/);
    assert.match(out, /✔ last/);
  }
});
