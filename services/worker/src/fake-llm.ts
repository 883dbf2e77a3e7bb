/**
 * A fake OpenAI-compatible chat-completions server for tests, benchmarks and demos: no model, no
 * network, deterministic answers, and every failure the LLM agent must survive on demand.
 *
 * - `POST /v1/chat/completions`: answers with one JSON object derived from the prompt (the same
 *   prompt always gets the same answer) and a `usage` block. When the request has a
 *   `response_format` of type `json_schema`, or the system prompt carries the worker's schema marker,
 *   the answer is a sample of that schema.
 * - Behaviour (see `FakeLlmBehaviour`): latency, 429s by probability or as a storm of the next N
 *   requests (with Retry-After), `context_length_exceeded` above a prompt size, non-JSON content at
 *   a given rate, injected failures, an API key to demand, and error bodies that quote the
 *   Authorization header (to prove the worker never leaks it).
 * - `POST /admin/config` changes the behaviour at run time (partial, returns the whole);
 *   `GET /admin/stats` counts requests by outcome with their arrival times; `POST /admin/reset`
 *   clears the stats. The admin routes are unauthenticated: this is a test tool.
 */
import { createHash } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import Fastify, { type FastifyInstance, type FastifyReply } from 'fastify';
import { schemaMarker } from './llm/prompt.ts';

export interface FakeLlmBehaviour {
  /** Added to every completion, in ms. */
  latencyMs: number;
  /** Chance (0..1) that a request is answered 429, from a seeded generator. */
  rateLimitProbability: number;
  /** The next N requests are answered 429 (counts down). */
  rateLimitStorm: number;
  /** Retry-After of the 429s: delta-seconds (`"1"`) or an HTTP date; `""` sends none. */
  retryAfter: string;
  /** Prompts longer than this many characters get a 400 `context_length_exceeded`; 0 is no limit. */
  maxPromptChars: number;
  /** Fraction (0..1) of completions whose content is not JSON, spread evenly (1 = every one). */
  malformedRate: number;
  /** The next N requests fail with `failStatus`. */
  failNext: number;
  failStatus: number;
  /** Requests for these models fail with 503. */
  failModels: string[];
  /** When set, a request whose Authorization is not `Bearer <apiKey>` gets a 401. */
  apiKey: string;
  /** Error bodies quote the request's Authorization header. */
  echoAuthorization: boolean;
  seed: number;
}

export type FakeOutcome =
  | 'ok'
  | 'malformed'
  | 'rate_limited'
  | 'context_overflow'
  | 'failed'
  | 'unauthorized'
  | 'bad_request';

export interface FakeRequestRecord {
  /** Arrival time, ms since the epoch. */
  at: number;
  outcome: FakeOutcome;
  model: string;
  promptChars: number;
}

export interface FakeLlmStats {
  requests: number;
  byOutcome: Record<FakeOutcome, number>;
  /** Every request in arrival order (the last 10 000). */
  log: FakeRequestRecord[];
  inflight: number;
  maxInflight: number;
  /** Requests whose client went away before the answer was sent (e.g. a client timeout). */
  clientAborted: number;
}

const defaults: FakeLlmBehaviour = {
  latencyMs: 0,
  rateLimitProbability: 0,
  rateLimitStorm: 0,
  retryAfter: '1',
  maxPromptChars: 0,
  malformedRate: 0,
  failNext: 0,
  failStatus: 500,
  failModels: [],
  apiKey: '',
  echoAuthorization: false,
  seed: 1,
};

const behaviourSchema = {
  type: 'object',
  additionalProperties: false,
  properties: {
    latencyMs: { type: 'integer', minimum: 0, maximum: 600_000 },
    rateLimitProbability: { type: 'number', minimum: 0, maximum: 1 },
    rateLimitStorm: { type: 'integer', minimum: 0 },
    retryAfter: { type: 'string', maxLength: 100 },
    maxPromptChars: { type: 'integer', minimum: 0 },
    malformedRate: { type: 'number', minimum: 0, maximum: 1 },
    failNext: { type: 'integer', minimum: 0 },
    failStatus: { type: 'integer', minimum: 400, maximum: 599 },
    failModels: { type: 'array', items: { type: 'string' } },
    apiKey: { type: 'string' },
    echoAuthorization: { type: 'boolean' },
    seed: { type: 'integer' },
  },
} as const;

const outcomes: FakeOutcome[] = [
  'ok',
  'malformed',
  'rate_limited',
  'context_overflow',
  'failed',
  'unauthorized',
  'bad_request',
];

function emptyStats(): FakeLlmStats {
  return {
    requests: 0,
    byOutcome: Object.fromEntries(outcomes.map((o) => [o, 0])) as Record<FakeOutcome, number>,
    log: [],
    inflight: 0,
    maxInflight: 0,
    clientAborted: 0,
  };
}

/** mulberry32: a small seeded generator, so "random" 429s are the same on every run. */
function generator(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4_294_967_296;
  };
}

type Schema = Record<string, unknown>;

/** A value that satisfies the common parts of a JSON Schema, derived from `seed`. */
export function sampleOf(schema: unknown, seed: string, depth = 0): unknown {
  if (typeof schema !== 'object' || schema === null || depth > 8) return null;
  const s = schema as Schema;
  if ('const' in s) return s.const;
  if (Array.isArray(s.enum) && s.enum.length > 0) return s.enum[0];
  for (const keyword of ['anyOf', 'oneOf', 'allOf'] as const) {
    const options = s[keyword];
    if (Array.isArray(options) && options.length > 0) return sampleOf(options[0], seed, depth + 1);
  }
  const declared = Array.isArray(s.type)
    ? ((s.type as string[]).find((t) => t !== 'null') ?? 'null')
    : s.type;
  const type =
    typeof declared === 'string'
      ? declared
      : s.properties !== undefined
        ? 'object'
        : s.items !== undefined
          ? 'array'
          : 'string';
  switch (type) {
    case 'object': {
      const properties = (s.properties ?? {}) as Record<string, unknown>;
      const out: Record<string, unknown> = {};
      for (const [key, sub] of Object.entries(properties))
        out[key] = sampleOf(sub, `${seed}.${key}`, depth + 1);
      for (const key of Array.isArray(s.required) ? (s.required as string[]) : [])
        if (!(key in out)) out[key] = `${seed}.${key}`;
      return out;
    }
    case 'array': {
      const min = typeof s.minItems === 'number' ? s.minItems : 1;
      const max = typeof s.maxItems === 'number' ? s.maxItems : Math.max(min, 2);
      const count = Math.min(Math.max(min, 2), max);
      return Array.from({ length: count }, (_, i) => sampleOf(s.items, `${seed}[${i}]`, depth + 1));
    }
    case 'integer':
    case 'number': {
      let n = typeof s.minimum === 'number' ? s.minimum : 1;
      if (typeof s.exclusiveMinimum === 'number') n = s.exclusiveMinimum + 1;
      if (typeof s.maximum === 'number') n = Math.min(n, s.maximum);
      return type === 'integer' ? Math.ceil(n) : n;
    }
    case 'boolean':
      return true;
    case 'null':
      return null;
    default: {
      if (s.format === 'date-time') return '2025-01-01T00:00:00Z';
      if (s.format === 'date') return '2025-01-01';
      if (s.format === 'uri' || s.format === 'url')
        return `https://example.org/${createHash('sha1').update(seed).digest('hex').slice(0, 8)}`;
      if (s.format === 'email') return 'agent@example.org';
      let text = `sample ${createHash('sha1').update(seed).digest('hex').slice(0, 8)}`;
      const minLength = typeof s.minLength === 'number' ? s.minLength : 0;
      while (text.length < minLength) text += ' text';
      if (typeof s.maxLength === 'number') text = text.slice(0, s.maxLength);
      return text;
    }
  }
}

interface ChatBody {
  model?: unknown;
  messages?: { role?: unknown; content?: unknown }[];
  response_format?: { type?: unknown; json_schema?: { schema?: unknown } };
}

function schemaInPrompt(system: string): unknown {
  const at = system.indexOf(schemaMarker);
  if (at < 0) return undefined;
  try {
    return JSON.parse(system.slice(at + schemaMarker.length).trim()) as unknown;
  } catch {
    return undefined;
  }
}

/** The fake server (not listening yet: call `listen`, e.g. on port 0). */
export function createFakeLlm(options: Partial<FakeLlmBehaviour> = {}): FastifyInstance {
  let behaviour: FakeLlmBehaviour = { ...defaults, ...options };
  let random = generator(behaviour.seed);
  let malformedCredit = 0;
  let stats = emptyStats();
  const app = Fastify({ logger: false, bodyLimit: 16 * 1_048_576, forceCloseConnections: true });

  const record = (outcome: FakeOutcome, at: number, model: string, promptChars: number): void => {
    stats.byOutcome[outcome] += 1;
    stats.log.push({ at, outcome, model, promptChars });
    if (stats.log.length > 10_000) stats.log.shift();
  };

  const fail = (
    reply: FastifyReply,
    status: number,
    message: string,
    code: string,
    authorization: string | undefined,
  ): FastifyReply => {
    // Providers do quote keys back (OpenAI: "Incorrect API key provided: sk-…"); quoting the bare key
    // too means only the worker's own masking, not a generic "Bearer …" pattern, can hide it.
    const key = authorization?.replace(/^Bearer\s+/i, '');
    const quoted = behaviour.echoAuthorization
      ? ` (request authorization: ${authorization ?? 'none'}; key: ${key ?? 'none'})`
      : '';
    return reply.code(status).send({
      error: {
        message: `${message}${quoted}`,
        type: status === 429 ? 'rate_limit_error' : 'invalid_request_error',
        code,
      },
    });
  };

  app.post('/v1/chat/completions', async (request, reply) => {
    const at = Date.now();
    const counted = stats;
    counted.requests += 1;
    counted.inflight += 1;
    counted.maxInflight = Math.max(counted.maxInflight, counted.inflight);
    const closed = new AbortController();
    reply.raw.on('close', () => {
      if (!reply.raw.writableFinished) {
        counted.clientAborted += 1;
        closed.abort();
      }
    });
    try {
      const body = (request.body ?? {}) as ChatBody;
      const authorization = request.headers.authorization;
      const model = typeof body.model === 'string' ? body.model : '';
      const messages = Array.isArray(body.messages) ? body.messages : [];
      const texts = messages.map((m) => (typeof m.content === 'string' ? m.content : ''));
      const promptChars = texts.reduce((n, t) => n + t.length, 0);
      if (behaviour.apiKey !== '' && authorization !== `Bearer ${behaviour.apiKey}`) {
        record('unauthorized', at, model, promptChars);
        return fail(reply, 401, 'Incorrect API key provided', 'invalid_api_key', authorization);
      }
      if (model === '' || messages.length === 0) {
        record('bad_request', at, model, promptChars);
        return fail(
          reply,
          400,
          'model and messages are required',
          'invalid_request',
          authorization,
        );
      }
      if (behaviour.failModels.includes(model)) {
        record('failed', at, model, promptChars);
        return fail(
          reply,
          503,
          `The model ${model} is overloaded`,
          'model_unavailable',
          authorization,
        );
      }
      if (behaviour.failNext > 0) {
        behaviour.failNext -= 1;
        record('failed', at, model, promptChars);
        return fail(reply, behaviour.failStatus, 'Injected failure', 'injected', authorization);
      }
      const storm = behaviour.rateLimitStorm > 0;
      if (storm) behaviour.rateLimitStorm -= 1;
      if (
        storm ||
        (behaviour.rateLimitProbability > 0 && random() < behaviour.rateLimitProbability)
      ) {
        record('rate_limited', at, model, promptChars);
        if (behaviour.retryAfter !== '') void reply.header('retry-after', behaviour.retryAfter);
        return fail(
          reply,
          429,
          'Rate limit reached for requests',
          'rate_limit_exceeded',
          authorization,
        );
      }
      if (behaviour.maxPromptChars > 0 && promptChars > behaviour.maxPromptChars) {
        record('context_overflow', at, model, promptChars);
        return fail(
          reply,
          400,
          `This model's maximum context length is ${Math.ceil(behaviour.maxPromptChars / 4)} tokens. However, your messages resulted in ${Math.ceil(promptChars / 4)} tokens. Please reduce the length of the messages.`,
          'context_length_exceeded',
          authorization,
        );
      }
      if (behaviour.latencyMs > 0)
        await sleep(behaviour.latencyMs, undefined, { signal: closed.signal }).catch(
          () => undefined,
        );
      malformedCredit += behaviour.malformedRate;
      const malformed = malformedCredit >= 1 - 1e-9;
      if (malformed) malformedCredit -= 1;
      const digest = createHash('sha256')
        .update(`${model}\u0000${texts.join('\u0000')}`)
        .digest('hex');
      const system = messages.find((m) => m.role === 'system');
      const schema =
        body.response_format?.type === 'json_schema'
          ? body.response_format.json_schema?.schema
          : schemaInPrompt(typeof system?.content === 'string' ? system.content : '');
      const answer =
        schema === undefined
          ? {
              answer: `Deterministic answer ${digest.slice(0, 12)} for a ${promptChars}-character prompt.`,
              digest: digest.slice(0, 16),
              model,
            }
          : sampleOf(schema, digest.slice(0, 12));
      const content = malformed
        ? `Sure! Here is what you asked for: {"answer": "${digest.slice(0, 12)}"`
        : JSON.stringify(answer);
      record(malformed ? 'malformed' : 'ok', at, model, promptChars);
      const promptTokens = Math.ceil(promptChars / 4);
      const completionTokens = Math.ceil(content.length / 4);
      return reply.send({
        id: `chatcmpl-${digest.slice(0, 24)}`,
        object: 'chat.completion',
        created: Math.floor(at / 1000),
        model,
        choices: [{ index: 0, message: { role: 'assistant', content }, finish_reason: 'stop' }],
        usage: {
          prompt_tokens: promptTokens,
          completion_tokens: completionTokens,
          total_tokens: promptTokens + completionTokens,
        },
      });
    } finally {
      counted.inflight -= 1;
    }
  });

  app.post('/admin/config', { schema: { body: behaviourSchema } }, async (request) => {
    const change = request.body as Partial<FakeLlmBehaviour>;
    behaviour = { ...behaviour, ...change };
    if (change.seed !== undefined) random = generator(change.seed);
    return behaviour;
  });
  app.get('/admin/config', async () => behaviour);
  app.get('/admin/stats', async () => stats);
  app.post('/admin/reset', async () => {
    stats = emptyStats();
    malformedCredit = 0;
    return { ok: true };
  });
  return app;
}
