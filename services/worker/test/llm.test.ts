/**
 * The LLM agent against the in-process fake LLM and the real Kafka, registry and Redis: usage in the
 * result, schema-shaped output, 429 storms absorbed, and each provider failure on the retry tier or
 * `mesh.dlq` with its failure class — context overflow, malformed output, timeout, rate limit beyond
 * the wait budget — plus the fallback model on the last attempt.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { waitFor } from '@mesh/testkit';
import type { SubtaskCompleted } from '../src/index.ts';
import {
  assignment,
  llmVars,
  publish,
  recordsOf,
  resultOf,
  retriedOf,
  startFakeLlm,
  startWorker,
} from './helpers.ts';

test('an LLM subtask completes with the JSON output and the token usage of the response', async (t) => {
  const fake = await startFakeLlm(t);
  const h = await startWorker(t, llmVars(fake.baseUrl, { MESH_LLM_COST_PER_1K_TOKENS: '0.5' }));
  const plain = assignment('llm', { task: { topic: 'tides' }, question: 'why two a day?' });
  const schema = {
    type: 'object',
    required: ['answer', 'confidence', 'sources'],
    properties: {
      answer: { type: 'string', minLength: 5 },
      confidence: { type: 'number', minimum: 0, maximum: 1 },
      sources: { type: 'array', items: { type: 'string', format: 'uri' }, minItems: 1 },
    },
    additionalProperties: false,
  };
  const shaped = assignment('llm', { task: { topic: 'tides' } }, { outputSchema: schema });
  const strict = assignment(
    'llm',
    { task: { topic: 'tides' } },
    {
      outputSchema: schema,
      flags: { strictOutput: true },
    },
  );
  await publish(h, plain, shaped, strict);

  const result = await resultOf<SubtaskCompleted>(h, plain);
  assert.equal(result.type, 'io.mesh.subtask.completed');
  assert.equal(result.agentpath, 'llm');
  const output = result.data.output as { answer: string; digest: string; model: string };
  assert.match(output.answer, /^Deterministic answer [0-9a-f]{12}/);
  assert.equal(output.model, 'fake-model');
  const stats = await fake.stats();
  const call = stats.log.find((r) => r.outcome === 'ok');
  assert.ok(call);
  const { promptTokens, completionTokens, costUsd, steps } = result.data.usage;
  assert.ok(promptTokens > 0 && completionTokens > 0);
  assert.equal(costUsd, Math.round(((promptTokens + completionTokens) / 1000) * 0.5 * 1e8) / 1e8);
  assert.equal(steps, 1);

  for (const event of [shaped, strict]) {
    const shapedResult = await resultOf<SubtaskCompleted>(h, event);
    assert.equal(shapedResult.type, 'io.mesh.subtask.completed');
    const o = shapedResult.data.output as { answer: string; confidence: number; sources: string[] };
    assert.deepEqual(Object.keys(o).sort(), ['answer', 'confidence', 'sources']);
  }
  assert.equal(h.probe.on(h.client.topics.dlq).length, 0);
});

test('a 429 storm is absorbed inside the handler: every task finishes, nothing is retried or dead-lettered', async (t) => {
  const fake = await startFakeLlm(t, { rateLimitStorm: 6, retryAfter: '1' });
  const h = await startWorker(t, llmVars(fake.baseUrl, { MESH_LLM_MAX_RETRY_WAIT: '10s' }));
  const events = Array.from({ length: 4 }, (_, i) => assignment('llm', { task: { n: i } }));
  await publish(h, ...events);
  for (const event of events)
    assert.equal((await resultOf(h, event, 30_000)).type, 'io.mesh.subtask.completed');
  const stats = await fake.stats();
  assert.equal(stats.byOutcome.rate_limited, 6, 'the whole storm hit the fake');
  assert.equal(stats.byOutcome.ok, 4);
  assert.equal(h.probe.on(h.client.topics.dlq).length, 0, 'nothing on mesh.dlq');
  for (const tier of ['1s', '2s'])
    assert.equal(h.probe.on(h.client.topics.retry(tier)).length, 0, `nothing on retry.${tier}`);
});

test('a 429 whose Retry-After exceeds the wait budget goes to the tier that honours it as rate_limited', async (t) => {
  const fake = await startFakeLlm(t, { rateLimitStorm: 1, retryAfter: '5' });
  const h = await startWorker(t, llmVars(fake.baseUrl, { MESH_LLM_MAX_RETRY_WAIT: '1s' }));
  const event = assignment('llm', { task: {} });
  await publish(h, event);
  // Retry-After 5 s is longer than every tier (1s, 2s): the longest one is chosen.
  const retried = await retriedOf(h, event, '2s');
  assert.equal(h.probe.header(retried, 'ce_meshfailure'), 'rate_limited');
  assert.match(h.probe.header(retried, 'ce_meshfailuredetail') ?? '', /Retry-After 5000 ms/);
});

test('a prompt over the context window goes to a retry tier as context_overflow; the retry truncates it', async (t) => {
  const fake = await startFakeLlm(t, { maxPromptChars: 2_500 });
  const h = await startWorker(t, llmVars(fake.baseUrl, { MESH_LLM_MAX_CONTEXT_CHARS: '1200' }));
  const event = assignment('llm', {
    task: { topic: 'tides' },
    previous: { research: { r1: { notes: 'x'.repeat(6_000) } } },
  });
  await publish(h, event);
  const retried = await retriedOf(h, event, '1s');
  assert.equal(h.probe.header(retried, 'ce_meshfailure'), 'context_overflow');
  assert.match(h.probe.header(retried, 'ce_meshfailuredetail') ?? '', /context_length_exceeded/);
  assert.equal(recordsOf(h, h.client.topics.results, event).length, 0);

  // Re-dispatch it as dlq-triage does: the original value with the retry headers, on its origin topic.
  await h.client.producer.send([
    {
      topic: h.probe.header(retried, 'ce_meshorigintopic') ?? '',
      key: retried.key?.toString() ?? null,
      value: retried.value ?? Buffer.alloc(0),
      headers: Object.fromEntries(Object.entries(retried.headers).map(([k, v]) => [k, String(v)])),
    },
  ]);
  const result = await resultOf<SubtaskCompleted>(h, event);
  assert.equal(result.type, 'io.mesh.subtask.completed');
  const stats = await fake.stats();
  assert.deepEqual(
    stats.log.map((r) => r.outcome),
    ['context_overflow', 'ok'],
  );
  assert.ok((stats.log[1]?.promptChars ?? Infinity) < 2_500, 'the second prompt was truncated');
});

test('output that is not JSON goes to a retry tier as invalid_output', async (t) => {
  const fake = await startFakeLlm(t, { malformedRate: 1 });
  const h = await startWorker(t, llmVars(fake.baseUrl));
  const event = assignment('llm', { task: { topic: 'tides' } });
  await publish(h, event);
  const retried = await retriedOf(h, event, '1s');
  assert.equal(h.probe.header(retried, 'ce_meshfailure'), 'invalid_output');
  assert.match(h.probe.header(retried, 'ce_meshfailuredetail') ?? '', /not JSON/);
  assert.equal((await fake.stats()).byOutcome.malformed, 1);
});

test('a model slower than MESH_LLM_TIMEOUT goes to a retry tier as timeout', async (t) => {
  const fake = await startFakeLlm(t, { latencyMs: 3_000 });
  const h = await startWorker(t, llmVars(fake.baseUrl, { MESH_LLM_TIMEOUT: '300ms' }));
  const event = assignment('llm', { task: { topic: 'tides' } });
  await publish(h, event);
  const retried = await retriedOf(h, event, '1s');
  assert.equal(h.probe.header(retried, 'ce_meshfailure'), 'timeout');
  assert.match(h.probe.header(retried, 'ce_meshfailuredetail') ?? '', /within 300 ms/);
  await waitFor(async () => (await fake.stats()).clientAborted === 1, {
    message: 'the worker did not abandon the request',
  });
});

test('on the last attempt a failing primary model falls back to MESH_LLM_FALLBACK_MODEL', async (t) => {
  const fake = await startFakeLlm(t, { failModels: ['primary'] });
  const h = await startWorker(
    t,
    llmVars(fake.baseUrl, {
      MESH_LLM_MODEL: 'primary',
      MESH_LLM_FALLBACK_MODEL: 'secondary',
      MESH_MAX_ATTEMPTS: '2',
    }),
  );
  const first = assignment('llm', { task: { n: 1 } });
  const last = assignment('llm', { task: { n: 2 } });
  await h.client.publish([
    { topic: h.client.topics.work('llm'), event: first },
    { topic: h.client.topics.work('llm'), event: { ...last, meshattempt: 2 } },
  ]);
  const retried = await retriedOf(h, first, '1s');
  assert.equal(h.probe.header(retried, 'ce_meshfailure'), 'handler_error');
  assert.match(h.probe.header(retried, 'ce_meshfailuredetail') ?? '', /503 model_unavailable/);
  const result = await resultOf<SubtaskCompleted>(h, last);
  assert.equal(result.type, 'io.mesh.subtask.completed');
  assert.equal((result.data.output as { model: string }).model, 'secondary');
  const models = (await fake.stats()).log.map((r) => `${r.model}:${r.outcome}`).sort();
  assert.deepEqual(models, ['primary:failed', 'primary:failed', 'secondary:ok']);
});
