/**
 * A bad worker variable stops `node services/worker/src/main.ts` before it connects anywhere: exit
 * status 78 (EX_CONFIG) and one stderr line per bad variable, naming it.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { foreignCaFile, meshEnv, secureKafkaVars } from '@mesh/testkit';

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

// Settings only the broker can judge: found on connecting, and reported the same way.
test('a SASL password the broker refuses stops the worker with 78, naming the SASL variables', async () => {
  const { code, lines } = await run({
    ...(await secureKafkaVars('scram-sha-512')),
    MESH_KAFKA_SASL_PASSWORD: 'wrong',
  });
  assert.equal(code, 78);
  assert.equal(lines.length, 1, lines.join('\n'));
  assert.match(
    lines[0] ?? '',
    /^worker: config: MESH_KAFKA_SASL_USERNAME or MESH_KAFKA_SASL_PASSWORD is wrong: /,
  );
});

test('a CA file that did not sign the broker stops the worker with 78, naming it', async (t) => {
  const { code, lines } = await run({
    ...(await secureKafkaVars('scram-sha-512')),
    MESH_KAFKA_SSL_CA_FILE: await foreignCaFile(t),
  });
  assert.equal(code, 78);
  assert.equal(lines.length, 1, lines.join('\n'));
  assert.match(lines[0] ?? '', /^worker: config: MESH_KAFKA_SSL_CA_FILE must name the CA /);
});

test('a Redis password Redis refuses stops the worker with 78, naming it', async () => {
  const url = new URL((await meshEnv()).MESH_REDIS_URL);
  url.password = 'wrong';
  const { code, lines } = await run({ MESH_REDIS_URL: url.toString() });
  assert.equal(code, 78);
  assert.equal(lines.length, 1, lines.join('\n'));
  assert.match(
    lines[0] ?? '',
    /^worker: config: MESH_REDIS_PASSWORD \(or the password in MESH_REDIS_URL\) is wrong: /,
  );
});
