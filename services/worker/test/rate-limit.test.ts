/**
 * The LLM rate limit is shared through Redis by every worker replica of a provider: two worker
 * instances together never send more than MESH_LLM_RPM requests in one window, and waiting for a
 * window is backpressure, not failure. The limiter's token budget and provider pause are checked
 * directly against the real Redis.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { uniqueName } from '@mesh/testkit';
import { RateLimiter } from '../src/index.ts';
import {
  assignment,
  llmVars,
  publish,
  resultOf,
  startClient,
  startFakeLlm,
  startReplica,
} from './helpers.ts';

test('two worker instances share one provider limit: never more than MESH_LLM_RPM requests in a window', async (t) => {
  const fake = await startFakeLlm(t);
  const windowMs = 2_000;
  const vars = llmVars(fake.baseUrl, {
    MESH_LLM_AGENTS: 'llm,llm2',
    MESH_LLM_RPM: '3',
    MESH_LLM_RATE_WINDOW: '2s',
  });
  const h = await startClient(t, vars, ['llm', 'llm2']);
  // Two instances, each with its own agent (so both certainly send requests), one provider.
  await startReplica(t, { ...h.env, MESH_WORKER_AGENTS: 'llm' });
  await startReplica(t, { ...h.env, MESH_WORKER_AGENTS: 'llm2' });
  const events = Array.from({ length: 10 }, (_, i) =>
    assignment(i % 2 === 0 ? 'llm' : 'llm2', { task: { n: i } }),
  );
  // Publish early in a window: a slot taken in the last milliseconds of one window would reach the
  // fake server in the next and blur a count that is about the limiter's windows.
  await new Promise((resolve) => setTimeout(resolve, windowMs - (Date.now() % windowMs) + 50));
  await publish(h, ...events);
  for (const event of events)
    assert.equal((await resultOf(h, event, 60_000)).type, 'io.mesh.subtask.completed');

  const { log } = await fake.stats();
  assert.equal(log.length, 10);
  const perWindow = new Map<number, number>();
  for (const { at } of log)
    perWindow.set(Math.floor(at / windowMs), (perWindow.get(Math.floor(at / windowMs)) ?? 0) + 1);
  t.diagnostic(`requests per ${windowMs} ms window: ${[...perWindow.values()].join(', ')}`);
  assert.ok(
    [...perWindow.values()].every((n) => n <= 3),
    `more than 3 requests in a window: ${JSON.stringify([...perWindow])}`,
  );
  assert.ok(perWindow.size >= 4, '10 requests at 3 a window need at least 4 windows');
  assert.equal(h.probe.on(h.client.topics.dlq).length, 0, 'waiting for a window is not a failure');
  for (const tier of ['1s', '2s']) assert.equal(h.probe.on(h.client.topics.retry(tier)).length, 0);
});

test('the token budget of a window, a provider pause, and an abort while waiting', async (t) => {
  const h = await startClient(t);
  const windowMs = 1_000;
  const limiter = new RateLimiter(
    h.client.redis,
    { provider: uniqueName('tokens'), requestsPerWindow: 0, tokensPerWindow: 100, windowMs },
    h.client.keyPrefix,
  );
  const never = new AbortController().signal;
  // Start right after a window boundary so the first two calls share a window.
  await new Promise((resolve) => setTimeout(resolve, windowMs - (Date.now() % windowMs) + 20));
  const started = Date.now();
  assert.equal(await limiter.acquire(60, never), 0);
  await limiter.record(-30); // the request used 30 tokens fewer than it reserved
  assert.equal(await limiter.acquire(60, never), 0, '30 + 60 fit in 100');
  await limiter.acquire(60, never);
  assert.ok(
    Math.floor(Date.now() / windowMs) > Math.floor(started / windowMs),
    'the third call waited for the next window',
  );

  await assert.rejects(
    limiter.acquire(60, AbortSignal.timeout(50)),
    (error: Error) => error.name === 'TimeoutError',
    'a spent window waits, abortably',
  );

  const paused = new RateLimiter(
    h.client.redis,
    { provider: uniqueName('pause'), requestsPerWindow: 0, tokensPerWindow: 0, windowMs },
    h.client.keyPrefix,
  );
  await paused.pause(400);
  const waited = await paused.acquire(1, never);
  assert.ok(waited >= 300, `a provider pause holds every caller (waited ${waited} ms)`);
});
