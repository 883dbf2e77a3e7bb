/**
 * The LLM API key never leaves the Authorization header: not in `meshfailuredetail`, not in
 * `io.mesh.subtask.failed`, not in any event, not in the worker's logs — even when the provider
 * quotes it back in its error bodies. The worker runs as a real process (`src/main.ts`) at debug
 * level so that everything it logs is captured.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { onCleanup, waitFor } from '@mesh/testkit';
import type { SubtaskFailed } from '../src/index.ts';
import {
  assignment,
  llmVars,
  publish,
  recordsOf,
  resultOf,
  retriedOf,
  startClient,
  startFakeLlm,
} from './helpers.ts';

const mainTs = fileURLToPath(new URL('../src/main.ts', import.meta.url));
// Matches none of the generic secret patterns of safeDetail (no sk- prefix, no "api_key=" form).
const sentinel = 'SENTINEL0c7d1e9aMustNeverLeak';

test('the API key is in no failure detail, event or log line, even when the provider echoes it', async (t) => {
  const fake = await startFakeLlm(t, { apiKey: 'the-right-key', echoAuthorization: true });
  const h = await startClient(
    t,
    llmVars(fake.baseUrl, { MESH_LLM_API_KEY: sentinel, MESH_LOG_LEVEL: 'debug' }),
  );
  let output = '';
  const child = spawn(process.execPath, [mainTs], {
    env: { PATH: process.env.PATH ?? '', ...h.env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const exited = new Promise((resolve) => child.once('exit', resolve));
  onCleanup(t, async () => {
    child.kill('SIGTERM');
    const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
    await exited;
    clearTimeout(timer);
  });
  child.stdout.on('data', (chunk: Buffer) => (output += chunk.toString()));
  child.stderr.on('data', (chunk: Buffer) => (output += chunk.toString()));
  await waitFor(() => output.includes('worker started'), {
    timeout: 30_000,
    message: 'the worker process did not start',
  });

  // A refused key (401): terminal, so it is dead-lettered and the stage learns of it.
  const refused = assignment('llm', { task: { topic: 'tides' } });
  await publish(h, refused);
  const dead = await waitFor(() => recordsOf(h, h.client.topics.dlq, refused)[0]);
  const deadDetail = h.probe.header(dead, 'ce_meshfailuredetail') ?? '';
  assert.equal(h.probe.header(dead, 'ce_meshfailure'), 'handler_error');
  assert.match(deadDetail, /refused the request \(401 invalid_api_key/);
  assert.match(deadDetail, /key: \*\*\*/, 'the quoted key was there and was masked');
  const failed = await resultOf<SubtaskFailed>(h, refused);
  assert.equal(failed.data.failure, 'handler_error');
  assert.match(failed.data.detail, /key: \*\*\*/);

  // A provider error (502) that quotes the key: retryable, on a retry tier.
  await fake.configure({ apiKey: '', failNext: 1, failStatus: 502 });
  const flaky = assignment('llm', { task: { topic: 'tides' } });
  await publish(h, flaky);
  const retried = await retriedOf(h, flaky, '1s');
  assert.match(h.probe.header(retried, 'ce_meshfailuredetail') ?? '', /failed \(502 injected/);
  assert.match(h.probe.header(retried, 'ce_meshfailuredetail') ?? '', /key: \*\*\*/);

  await waitFor(() => output.includes('event dead-lettered'), { message: 'logs not captured' });
  for (const record of h.probe.records) {
    const text = `${JSON.stringify(record.headers, (_k, v: unknown) => (Buffer.isBuffer(v) ? v.toString() : v))} ${record.value?.toString() ?? ''}`;
    assert.ok(!text.includes(sentinel), `the key leaked into an event on ${record.topic}`);
  }
  assert.ok(output.length > 0);
  assert.ok(!output.includes(sentinel), 'the key leaked into the logs');
});
