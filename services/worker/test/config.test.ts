/**
 * A bad worker variable stops `node services/worker/src/main.ts` before it connects anywhere: exit
 * status 78 (EX_CONFIG) and one stderr line per bad variable, naming it.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { meshEnv } from '@mesh/testkit';

const mainTs = fileURLToPath(new URL('../src/main.ts', import.meta.url));

async function run(
  vars: Record<string, string>,
): Promise<{ code: number | null; lines: string[] }> {
  const stack = await meshEnv();
  const child = spawn(process.execPath, [mainTs], {
    env: { PATH: process.env.PATH ?? '', ...stack, MESH_HTTP_PORT: '0', ...vars },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let stderr = '';
  child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  const code = await new Promise<number | null>((resolve) => child.once('exit', resolve));
  return { code, lines: stderr.split('\n').filter((line) => line.trim() !== '') };
}

for (const [vars, variables] of [
  [{ MESH_LLM_RPM: 'abc' }, ['MESH_LLM_RPM']],
  [{ MESH_LLM_RPM: '-1' }, ['MESH_LLM_RPM']],
  [{ MESH_LLM_RATE_WINDOW: '10 seconds' }, ['MESH_LLM_RATE_WINDOW']],
  [{ MESH_WORKER_AGENTS: 'echo,nope' }, ['MESH_WORKER_AGENTS']],
  [{ MESH_WORKER_AGENTS: 'echo,llm' }, ['MESH_LLM_BASE_URL', 'MESH_LLM_MODEL']],
] as const) {
  test(`${JSON.stringify(vars)} stops the worker with 78, naming ${variables.join(' and ')}`, async () => {
    const { code, lines } = await run(vars);
    assert.equal(code, 78);
    assert.equal(lines.length, variables.length, lines.join('\n'));
    variables.forEach((name, i) =>
      assert.match(lines[i] ?? '', new RegExp(`^worker: config: ${name} `)),
    );
  });
}
