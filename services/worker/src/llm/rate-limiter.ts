/**
 * A rate limit per LLM provider shared by every worker replica: requests and tokens per fixed window,
 * counted in Redis by Lua scripts so that checking and taking a slot is one atomic step, and timed
 * by the Redis server's clock so replicas with skewed clocks still agree on the window.
 *
 * Keys (`mesh:rl:<provider>:*`, docs/services.md, under the mesh's Redis key prefix): `:window` is a
 * hash {window, requests, tokens} of the current window; `:pause` is set when the provider itself
 * pushed back (a 429 with Retry-After), so every replica holds off until then instead of each
 * learning it with its own 429.
 *
 * When the window is spent, `acquire` waits for the next one rather than failing: the handler stays
 * busy, the runtime's per-partition and per-process limits fill up and consumption pauses — that is
 * the backpressure — and lag shows where work waits.
 */
import { createHash } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { redisFailure, type Redis } from '@mesh/redis';
import type { RateSettings } from '../settings.ts';

const acquireScript = `
local windowMs = tonumber(ARGV[1])
local maxRequests = tonumber(ARGV[2])
local maxTokens = tonumber(ARGV[3])
local tokens = tonumber(ARGV[4])
local paused = redis.call('PTTL', KEYS[2])
if paused > 0 then return {0, paused} end
local now = redis.call('TIME')
local nowMs = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local window = math.floor(nowMs / windowMs)
local waitMs = (window + 1) * windowMs - nowMs
local state = redis.call('HMGET', KEYS[1], 'window', 'requests', 'tokens')
local requests, used = 0, 0
if tonumber(state[1]) == window then
  requests = tonumber(state[2]) or 0
  used = tonumber(state[3]) or 0
end
if maxRequests > 0 and requests >= maxRequests then return {0, waitMs} end
-- A request larger than the whole token budget still runs, alone, in a fresh window.
if maxTokens > 0 and used > 0 and used + tokens > maxTokens then return {0, waitMs} end
redis.call('HSET', KEYS[1], 'window', window, 'requests', requests + 1, 'tokens', used + tokens)
redis.call('PEXPIRE', KEYS[1], windowMs * 2)
return {1, 0}
`;

const recordScript = `
local windowMs = tonumber(ARGV[1])
local delta = tonumber(ARGV[2])
local now = redis.call('TIME')
local nowMs = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local window = math.floor(nowMs / windowMs)
local current = tonumber(redis.call('HGET', KEYS[1], 'window'))
if current == window then
  local used = tonumber(redis.call('HGET', KEYS[1], 'tokens')) or 0
  redis.call('HSET', KEYS[1], 'tokens', math.max(0, used + delta))
elseif delta > 0 then
  redis.call('HSET', KEYS[1], 'window', window, 'requests', 0, 'tokens', delta)
  redis.call('PEXPIRE', KEYS[1], windowMs * 2)
end
return 1
`;

const pauseScript = `
local ms = tonumber(ARGV[1])
if redis.call('PTTL', KEYS[1]) < ms then redis.call('SET', KEYS[1], '1', 'PX', ms) end
return 1
`;

interface Script {
  text: string;
  sha: string;
}

function script(text: string): Script {
  return { text, sha: createHash('sha1').update(text).digest('hex') };
}

const scripts = {
  acquire: script(acquireScript),
  record: script(recordScript),
  pause: script(pauseScript),
};

async function run(
  redis: Redis,
  { text, sha }: Script,
  keys: string[],
  args: (string | number)[],
): Promise<unknown> {
  try {
    try {
      return await redis.evalsha(sha, keys.length, ...keys, ...args);
    } catch (error) {
      if (!String((error as Error).message).startsWith('NOSCRIPT')) throw error;
      return await redis.eval(text, keys.length, ...keys, ...args);
    }
  } catch (error) {
    throw redisFailure(error, 'rate limiter');
  }
}

export class RateLimiter {
  readonly settings: RateSettings;
  readonly #redis: Redis;
  readonly #windowKey: string;
  readonly #pauseKey: string;

  /** `keyPrefix` is the mesh's Redis key prefix (`runtime.keyPrefix`, `mesh:` by default). */
  constructor(redis: Redis, settings: RateSettings, keyPrefix = 'mesh:') {
    this.#redis = redis;
    this.settings = settings;
    this.#windowKey = `${keyPrefix}rl:${settings.provider}:window`;
    this.#pauseKey = `${keyPrefix}rl:${settings.provider}:pause`;
  }

  /**
   * Takes one request and `tokens` tokens of the provider's window, waiting for the next window
   * (or the end of a provider pause) as long as it takes. Resolves with the time it waited (0 when a
   * slot was free at once).
   * @throws the signal's reason when `signal` aborts; MeshError `redis_unavailable` (retryable).
   */
  async acquire(tokens: number, signal: AbortSignal): Promise<number> {
    const { windowMs, requestsPerWindow, tokensPerWindow } = this.settings;
    let waited = 0;
    for (;;) {
      signal.throwIfAborted();
      const [granted, waitMs] = (await run(
        this.#redis,
        scripts.acquire,
        [this.#windowKey, this.#pauseKey],
        [windowMs, requestsPerWindow, tokensPerWindow, Math.max(0, Math.round(tokens))],
      )) as [number, number];
      if (granted === 1) return waited;
      // A little jitter so the replicas that waited do not all hit Redis in the same millisecond.
      const delay = Math.max(1, waitMs) + Math.floor(Math.random() * Math.min(50, 1 + waitMs / 10));
      const before = Date.now();
      try {
        await sleep(delay, undefined, { signal });
      } catch {
        signal.throwIfAborted();
      }
      waited += Date.now() - before;
    }
  }

  /** Corrects the current window's token count by what a request really used minus what it took. */
  async record(deltaTokens: number): Promise<void> {
    if (this.settings.tokensPerWindow === 0 || deltaTokens === 0) return;
    await run(
      this.#redis,
      scripts.record,
      [this.#windowKey],
      [this.settings.windowMs, Math.round(deltaTokens)],
    );
  }

  /** Holds every replica's requests to this provider for `ms` (a 429's Retry-After). */
  async pause(ms: number): Promise<void> {
    if (ms <= 0) return;
    await run(this.#redis, scripts.pause, [this.#pauseKey], [Math.ceil(ms)]);
  }
}
