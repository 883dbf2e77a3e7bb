// node:test's test() and describe() return promises the runner itself awaits.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { MeshError } from '@mesh/errors';
import { createMetrics } from '@mesh/telemetry';
import { createHttpServer, tokenMatches, type HttpOptions, type ReadinessReport } from './index.ts';

function server(overrides: Partial<HttpOptions> = {}) {
  const metrics = createMetrics({ defaultMetrics: false });
  const { app, requireToken } = createHttpServer({
    service: 'orchestrator',
    metrics,
    readiness: async () => ({ ready: true, kafka: true, redis: true, registry: true }),
    ...overrides,
  });
  let handled = 0;
  app.post('/v1/things', { preHandler: requireToken }, async (request) => {
    handled += 1;
    return { ok: true, body: request.body };
  });
  app.get('/v1/missing', async () => {
    throw new MeshError('not_found', 'task t-1 not found');
  });
  app.get('/v1/leaky', async () => {
    throw new MeshError('conflict', 'cannot reach redis://:hunter2@cache:6379 now');
  });
  app.get('/v1/away', async () => {
    throw new MeshError('kafka_unavailable', 'produce failed: Connection error');
  });
  app.get('/v1/limited', async () => {
    throw new MeshError('rate_limited', 'too many', { retryAfterMs: 12_300 });
  });
  app.get('/v1/crash', async () => {
    throw new Error('internal detail password=hunter2');
  });
  return { app, metrics, handledCount: () => handled };
}

describe('common routes', () => {
  test('GET /healthz answers 200', async (t) => {
    const { app } = server();
    t.after(() => app.close());
    const response = await app.inject({ method: 'GET', url: '/healthz' });
    assert.equal(response.statusCode, 200);
    assert.deepEqual(response.json(), { status: 'ok', service: 'orchestrator' });
  });

  test('GET /readyz answers 200 when ready, with the report', async (t) => {
    const { app } = server();
    t.after(() => app.close());
    const response = await app.inject({ method: 'GET', url: '/readyz' });
    assert.equal(response.statusCode, 200);
    assert.deepEqual(response.json(), {
      ready: true,
      kafka: true,
      redis: true,
      registry: true,
      service: 'orchestrator',
    });
  });

  test('GET /readyz answers 503 when not ready, naming the failing component', async (t) => {
    let calls = 0;
    const readiness = async (): Promise<ReadinessReport> => {
      calls += 1;
      return { ready: false, kafka: true, redis: false, registry: true };
    };
    const { app } = server({ readiness });
    t.after(() => app.close());
    const response = await app.inject({ method: 'GET', url: '/readyz' });
    assert.equal(response.statusCode, 503);
    assert.equal(response.json<ReadinessReport>().redis, false);
    assert.equal(calls, 1);
  });

  test('GET /metrics answers Prometheus text with the contract metrics', async (t) => {
    const { app, metrics } = server();
    t.after(() => app.close());
    metrics.consumed.inc({
      service: 'orchestrator',
      topic: 'mesh.requests',
      type: 'io.mesh.task.requested',
    });
    const response = await app.inject({ method: 'GET', url: '/metrics' });
    assert.equal(response.statusCode, 200);
    assert.match(String(response.headers['content-type']), /^text\/plain; version=0\.0\.4/);
    assert.match(response.body, /# TYPE mesh_events_consumed_total counter/);
    assert.match(
      response.body,
      /mesh_events_consumed_total\{service="orchestrator",topic="mesh.requests",type="io.mesh.task.requested"\} 1/,
    );
  });

  test('an unknown route answers 404 JSON', async (t) => {
    const { app } = server();
    t.after(() => app.close());
    const response = await app.inject({ method: 'GET', url: '/nope?x=1' });
    assert.equal(response.statusCode, 404);
    assert.match(String(response.headers['content-type']), /application\/json/);
    assert.deepEqual(response.json(), { error: 'not_found', message: 'no route GET /nope' });
  });
});

describe('errors', () => {
  test('a thrown MeshError answers with its status and code', async (t) => {
    const { app } = server();
    t.after(() => app.close());
    const response = await app.inject({ method: 'GET', url: '/v1/missing' });
    assert.equal(response.statusCode, 404);
    assert.deepEqual(response.json(), { error: 'not_found', message: 'task t-1 not found' });
  });

  test('a retryable 503 or 429 says when to try again; other errors do not', async (t) => {
    const { app } = server();
    t.after(() => app.close());
    const away = await app.inject({ method: 'GET', url: '/v1/away' });
    assert.equal(away.statusCode, 503);
    assert.equal(away.headers['retry-after'], '5', 'the default for a dependency away');
    const limited = await app.inject({ method: 'GET', url: '/v1/limited' });
    assert.equal(limited.statusCode, 429);
    assert.equal(limited.headers['retry-after'], '13', "the error's own time, rounded up");
    const missing = await app.inject({ method: 'GET', url: '/v1/missing' });
    assert.equal(missing.headers['retry-after'], undefined);
  });

  test('secrets in a MeshError message are masked', async (t) => {
    const { app } = server();
    t.after(() => app.close());
    const response = await app.inject({ method: 'GET', url: '/v1/leaky' });
    assert.equal(response.statusCode, 409);
    assert.equal(response.json<{ error: string }>().error, 'conflict');
    assert.equal(response.body.includes('hunter2'), false);
  });

  test('any other error answers 500 without its message', async (t) => {
    const { app } = server();
    t.after(() => app.close());
    const response = await app.inject({ method: 'GET', url: '/v1/crash' });
    assert.equal(response.statusCode, 500);
    assert.deepEqual(response.json(), { error: 'internal', message: 'internal error' });
  });

  test('a body over bodyLimit answers 413', async (t) => {
    const { app, handledCount } = server({ bodyLimit: 1_024 });
    t.after(() => app.close());
    const response = await app.inject({
      method: 'POST',
      url: '/v1/things',
      headers: { 'content-type': 'application/json' },
      payload: JSON.stringify({ text: 'x'.repeat(2_000) }),
    });
    assert.equal(response.statusCode, 413);
    assert.equal(response.json<{ error: string }>().error, 'payload_too_large');
    assert.equal(handledCount(), 0);
  });

  test('a body within bodyLimit is accepted', async (t) => {
    const { app } = server({ bodyLimit: 1_024 });
    t.after(() => app.close());
    const response = await app.inject({
      method: 'POST',
      url: '/v1/things',
      headers: { 'content-type': 'application/json' },
      payload: JSON.stringify({ text: 'x'.repeat(500) }),
    });
    assert.equal(response.statusCode, 200);
  });

  test('invalid JSON answers 400 bad_request', async (t) => {
    const { app } = server();
    t.after(() => app.close());
    const response = await app.inject({
      method: 'POST',
      url: '/v1/things',
      headers: { 'content-type': 'application/json' },
      payload: '{"a":',
    });
    assert.equal(response.statusCode, 400);
    assert.equal(response.json<{ error: string }>().error, 'bad_request');
  });
});

describe('requireToken', () => {
  const post = (headers: Record<string, string> = {}) => ({
    method: 'POST' as const,
    url: '/v1/things',
    headers: { 'content-type': 'application/json', ...headers },
    payload: JSON.stringify({ a: 1 }),
  });

  test('answers 401 without a token and does not run the handler', async (t) => {
    const { app, handledCount } = server({ apiToken: 's3cret-token' });
    t.after(() => app.close());
    const response = await app.inject(post());
    assert.equal(response.statusCode, 401);
    assert.equal(response.headers['www-authenticate'], 'Bearer');
    assert.equal(response.json<{ error: string }>().error, 'unauthorized');
    assert.equal(handledCount(), 0);
  });

  test('answers 401 with a wrong token or another scheme', async (t) => {
    const { app, handledCount } = server({ apiToken: 's3cret-token' });
    t.after(() => app.close());
    for (const authorization of [
      'Bearer wrong',
      'Bearer s3cret-token-x',
      'Basic s3cret-token',
      's3cret-token',
    ]) {
      const response = await app.inject(post({ authorization }));
      assert.equal(response.statusCode, 401, authorization);
    }
    assert.equal(handledCount(), 0);
  });

  test('answers 200 with the right token', async (t) => {
    const { app, handledCount } = server({ apiToken: 's3cret-token' });
    t.after(() => app.close());
    const response = await app.inject(post({ authorization: 'Bearer s3cret-token' }));
    assert.equal(response.statusCode, 200);
    assert.deepEqual(response.json(), { ok: true, body: { a: 1 } });
    assert.equal(handledCount(), 1);
  });

  test('guards nothing when no token is configured', async (t) => {
    const { app, handledCount } = server();
    t.after(() => app.close());
    assert.equal((await app.inject(post())).statusCode, 200);
    assert.equal((await app.inject(post({ authorization: 'Bearer anything' }))).statusCode, 200);
    assert.equal(handledCount(), 2);
  });

  test('read routes stay open when a token is configured', async (t) => {
    const { app } = server({ apiToken: 's3cret-token' });
    t.after(() => app.close());
    assert.equal((await app.inject({ method: 'GET', url: '/healthz' })).statusCode, 200);
  });
});

describe('tokenMatches', () => {
  test('accepts the exact bearer token, with any case of the scheme', () => {
    assert.equal(tokenMatches('Bearer abc.def', 'abc.def'), true);
    assert.equal(tokenMatches('bearer abc.def', 'abc.def'), true);
    assert.equal(tokenMatches('BEARER   abc.def', 'abc.def'), true);
  });

  test('rejects anything else', () => {
    assert.equal(tokenMatches(undefined, 'abc'), false);
    assert.equal(tokenMatches('', 'abc'), false);
    assert.equal(tokenMatches('abc', 'abc'), false);
    assert.equal(tokenMatches('Basic abc', 'abc'), false);
    assert.equal(tokenMatches('Bearer abcd', 'abc'), false);
    assert.equal(tokenMatches('Bearer ab', 'abc'), false);
    assert.equal(tokenMatches('Bearer ABC', 'abc'), false);
  });

  test('an empty configured token matches nothing', () => {
    assert.equal(tokenMatches('Bearer ', ''), false);
    assert.equal(tokenMatches(undefined, ''), false);
  });
});

test('query strings are coerced to the declared types', async () => {
  const { app } = createHttpServer({
    service: 's',
    metrics: createMetrics({ defaultMetrics: false }),
    readiness: async () => ({ ready: true }),
  });
  app.get(
    '/items',
    {
      schema: {
        querystring: {
          type: 'object',
          properties: { limit: { type: 'integer', minimum: 1, maximum: 10 } },
        },
      },
    },
    async (request) => request.query,
  );
  assert.deepEqual((await app.inject({ url: '/items?limit=5' })).json(), { limit: 5 });
  assert.equal((await app.inject({ url: '/items?limit=50' })).statusCode, 400);
  assert.equal((await app.inject({ url: '/items?limit=abc' })).statusCode, 400);
});
