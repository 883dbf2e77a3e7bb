import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import type { AddressInfo } from 'node:net';
import { isMeshError, type MeshError } from '@mesh/errors';
import { createFakeLlm } from '../fake-llm.ts';
import type { LlmSettings } from '../settings.ts';
import { ChatClient, parseRetryAfter, unlimited } from './chat.ts';

describe('parseRetryAfter', () => {
  const headers = (init: Record<string, string>) => new Headers(init);
  test('reads delta-seconds, an HTTP date and retry-after-ms', () => {
    const now = Date.parse('2025-01-01T00:00:00Z');
    assert.equal(parseRetryAfter(headers({ 'retry-after': '2' }), now), 2_000);
    assert.equal(parseRetryAfter(headers({ 'retry-after': '0.5' }), now), 500);
    assert.equal(
      parseRetryAfter(headers({ 'retry-after': 'Wed, 01 Jan 2025 00:00:07 GMT' }), now),
      7_000,
    );
    assert.equal(
      parseRetryAfter(headers({ 'retry-after': 'Tue, 31 Dec 2024 00:00:00 GMT' }), now),
      0,
    );
    assert.equal(
      parseRetryAfter(headers({ 'retry-after-ms': '250', 'retry-after': '9' }), now),
      250,
    );
    assert.equal(parseRetryAfter(headers({ 'retry-after': 'soon' }), now), undefined);
    assert.equal(parseRetryAfter(headers({}), now), undefined);
  });
});

describe('ChatClient against the fake LLM', () => {
  const fake = createFakeLlm({ apiKey: 'k-123', echoAuthorization: true });
  let settings: LlmSettings;
  before(async () => {
    await fake.listen({ host: '127.0.0.1', port: 0 });
    settings = {
      baseUrl: `http://127.0.0.1:${(fake.server.address() as AddressInfo).port}/v1`,
      apiKey: 'k-123',
      model: 'm',
      timeoutMs: 1_000,
      maxContextChars: 1_000,
      maxRetryWaitMs: 3_000,
      rate: { provider: 'fake', requestsPerWindow: 0, tokensPerWindow: 0, windowMs: 60_000 },
    };
  });
  after(() => fake.close());

  const configure = async (change: Record<string, unknown>) =>
    fake.inject({ method: 'POST', url: '/admin/config', payload: change });
  const ask = (overrides: Partial<LlmSettings> = {}, content = 'hi') =>
    new ChatClient({ ...settings, ...overrides }, unlimited).complete(
      { model: 'm', messages: [{ role: 'user', content }] },
      { signal: new AbortController().signal },
    );
  const fails = async (
    promise: Promise<unknown>,
    code: string,
    retryable: boolean,
    message?: RegExp,
  ) => {
    await assert.rejects(promise, (error: unknown) => {
      assert.ok(isMeshError(error), String(error));
      const mesh: MeshError = error;
      assert.equal(mesh.code, code, mesh.message);
      assert.equal(mesh.retryable, retryable, mesh.message);
      if (message !== undefined) assert.match(mesh.message, message);
      assert.ok(!mesh.message.includes('k-123'), `the key leaked: ${mesh.message}`);
      return true;
    });
  };

  test('returns the content and the usage of the response', async () => {
    const answer = await ask();
    assert.equal(typeof answer.content, 'string');
    assert.equal(answer.estimated, false);
    assert.equal(answer.promptTokens, 1);
  });

  test('maps provider failures onto the failure classes, masking the key', async () => {
    await configure({ failNext: 1, failStatus: 503 });
    await fails(ask(), 'handler_error', true, /failed \(503 injected/);
    await configure({ failNext: 1, failStatus: 404 });
    await fails(ask(), 'handler_error', false, /refused the request \(404/);
    await configure({ failNext: 1, failStatus: 408 });
    await fails(ask(), 'timeout', true);
    await configure({ failNext: 1, failStatus: 413 });
    await fails(ask(), 'context_overflow', true);
    await configure({ maxPromptChars: 10 });
    await fails(ask({}, 'x'.repeat(100)), 'context_overflow', true, /context_length_exceeded/);
    await configure({ maxPromptChars: 0 });
    await fails(ask({ apiKey: 'wrong-key-456' }), 'handler_error', false, /key: \*\*\*/);
    await fails(ask({ baseUrl: 'http://127.0.0.1:9/v1' }), 'handler_error', true, /cannot reach/);
  });

  test('times out a slow answer', async () => {
    await configure({ latencyMs: 500 });
    await fails(ask({ timeoutMs: 100 }), 'timeout', true, /within 100 ms/);
    await configure({ latencyMs: 0 });
  });

  test('waits through 429s within the budget, else throws rate_limited with retryAfterMs', async () => {
    const date = new Date(Date.now() + 1_000).toUTCString();
    await configure({ rateLimitStorm: 2, retryAfter: '0.1' });
    assert.equal(typeof (await ask()).content, 'string');
    await configure({ rateLimitStorm: 1, retryAfter: date });
    assert.equal(typeof (await ask()).content, 'string', 'an HTTP-date Retry-After is honoured');
    await configure({ rateLimitStorm: 1, retryAfter: '60' });
    await assert.rejects(ask(), (error: MeshError) => {
      assert.equal(error.code, 'rate_limited');
      assert.equal(error.retryAfterMs, 60_000);
      return true;
    });
  });
});
