/**
 * A client of any OpenAI-compatible chat-completions endpoint (`POST <base>/chat/completions`), with
 * the provider's failures mapped onto the contract's failure classes:
 *
 * | provider answer                                            | MeshError                       |
 * |------------------------------------------------------------|---------------------------------|
 * | 429 (after the retry-wait budget is spent)                 | `rate_limited`, `retryAfterMs`  |
 * | 400/413/422 `context_length_exceeded` or "context length"  | `context_overflow`              |
 * | no answer within MESH_LLM_TIMEOUT, or 408                  | `timeout`                       |
 * | 5xx, connection refused/reset, a body that is not JSON     | `handler_error`, retryable      |
 * | any other 4xx (401, 403, 404, …)                           | `handler_error`, terminal       |
 *
 * Short 429 storms are absorbed here: the request is tried again after Retry-After (seconds or an
 * HTTP date; `retry-after-ms` too) while the total wait stays within MESH_LLM_MAX_RETRY_WAIT, and
 * the pause is shared with the other replicas through the rate limiter. Every request first takes a
 * slot of the shared rate limit.
 *
 * The API key is sent only in the Authorization header. Provider error text is cut short and any
 * occurrence of the key is masked before it can reach a message, a log line or `meshfailuredetail`.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { isMeshError, retryable, terminal } from '@mesh/errors';
import type { Logger } from '@mesh/telemetry';
import type { LlmSettings } from '../settings.ts';
import { estimateTokens, type ChatMessage } from './prompt.ts';
import type { RateLimiter } from './rate-limiter.ts';

export interface ChatRequest {
  model: string;
  messages: ChatMessage[];
  responseFormat?: Record<string, unknown>;
}

export interface ChatOptions {
  signal: AbortSignal;
  idempotencyKey?: string;
  log?: Logger;
}

export interface ChatAnswer {
  /** `choices[0].message.content` as the provider sent it. */
  content: unknown;
  promptTokens: number;
  completionTokens: number;
  /** The provider reported no usage; the counts are estimates. */
  estimated: boolean;
}

/** Milliseconds to wait from `retry-after-ms` or `Retry-After` (delta-seconds or an HTTP date). */
export function parseRetryAfter(headers: Headers, now = Date.now()): number | undefined {
  const ms = headers.get('retry-after-ms');
  if (ms !== null && /^\d+(\.\d+)?$/.test(ms.trim())) return Math.ceil(Number(ms));
  const value = headers.get('retry-after')?.trim();
  if (value === undefined || value === '') return undefined;
  if (/^\d+(\.\d+)?$/.test(value)) return Math.ceil(Number(value) * 1000);
  const date = Date.parse(value);
  return Number.isNaN(date) ? undefined : Math.max(0, date - now);
}

const contextPattern =
  /context[_ ]length|context window|maximum context|too many tokens|prompt is too long|reduce the length/i;

interface ProviderError {
  code?: string;
  message?: string;
}

/** What the client needs of the shared rate limiter. */
export type Limiter = Pick<RateLimiter, 'acquire' | 'record' | 'pause'>;

/** A limiter that never waits (for tools and tests that run without Redis). */
export const unlimited: Limiter = {
  acquire: async () => 0,
  record: async () => undefined,
  pause: async () => undefined,
};

export class ChatClient {
  readonly #settings: LlmSettings;
  readonly #limiter: Limiter;
  readonly #url: string;

  constructor(settings: LlmSettings, limiter: Limiter) {
    this.#settings = settings;
    this.#limiter = limiter;
    this.#url = `${settings.baseUrl}/chat/completions`;
  }

  /** Masks the API key wherever it appears, and bounds the text. */
  #scrub(text: string, max = 300): string {
    const key = this.#settings.apiKey;
    let clean = key === undefined || key === '' ? text : text.split(key).join('***');
    clean = clean.replace(/\s+/g, ' ').trim();
    return clean.length > max ? `${clean.slice(0, max - 1)}…` : clean;
  }

  /**
   * Sends one chat completion and returns the answer, waiting for rate-limit slots and through short
   * 429 storms. @throws MeshError as in the table above; the signal's reason when it aborts.
   */
  async complete(request: ChatRequest, options: ChatOptions): Promise<ChatAnswer> {
    const { signal } = options;
    const body = JSON.stringify({
      model: request.model,
      messages: request.messages,
      ...(request.responseFormat === undefined ? {} : { response_format: request.responseFormat }),
    });
    const reserved = estimateTokens(request.messages.map((m) => m.content).join('\n'));
    const maxWait = this.#settings.maxRetryWaitMs;
    let rateLimitedWait = 0;
    for (let attempt = 1; ; attempt += 1) {
      const waited = await this.#limiter.acquire(reserved, signal);
      if (waited > 0) options.log?.debug({ waitedMs: waited }, 'waited for the LLM rate limit');
      const response = await this.#post(body, options);
      if (response.status === 429) {
        await response.body?.cancel().catch(() => undefined);
        await this.#limiter.record(-reserved);
        const retryAfterMs =
          parseRetryAfter(response.headers) ?? Math.min(1_000 * 2 ** (attempt - 1), 30_000);
        await this.#limiter.pause(Math.min(retryAfterMs, maxWait));
        if (rateLimitedWait + retryAfterMs > maxWait) {
          throw retryable(
            'rate_limited',
            `the LLM provider answered 429 ${attempt} time${attempt === 1 ? '' : 's'}; Retry-After ${retryAfterMs} ms is beyond the ${maxWait} ms this worker waits`,
            { retryAfterMs },
          );
        }
        options.log?.info({ retryAfterMs, attempt }, 'LLM provider answered 429; waiting');
        rateLimitedWait += retryAfterMs;
        try {
          await sleep(retryAfterMs, undefined, { signal });
        } catch {
          signal.throwIfAborted();
        }
        continue;
      }
      if (!response.ok) {
        await this.#limiter.record(-reserved);
        throw await this.#failure(response);
      }
      const answer = await this.#answer(response, request, options);
      await this.#limiter.record(answer.promptTokens + answer.completionTokens - reserved);
      return answer;
    }
  }

  async #post(body: string, options: ChatOptions): Promise<Response> {
    const timeout = AbortSignal.timeout(this.#settings.timeoutMs);
    try {
      return await fetch(this.#url, {
        method: 'POST',
        headers: {
          'content-type': 'application/json',
          accept: 'application/json',
          ...(this.#settings.apiKey === undefined
            ? {}
            : { authorization: `Bearer ${this.#settings.apiKey}` }),
          ...(options.idempotencyKey === undefined
            ? {}
            : { 'idempotency-key': options.idempotencyKey }),
        },
        body,
        signal: AbortSignal.any([options.signal, timeout]),
      });
    } catch (error) {
      throw this.#transportFailure(error, timeout, options.signal);
    }
  }

  #transportFailure(error: unknown, timeout: AbortSignal, outer: AbortSignal): unknown {
    if (outer.aborted) return outer.reason;
    if (timeout.aborted)
      return retryable(
        'timeout',
        `the LLM provider did not answer within ${this.#settings.timeoutMs} ms`,
      );
    if (isMeshError(error)) return error;
    const cause = (error as { cause?: { code?: unknown; message?: unknown } }).cause;
    const why =
      typeof cause?.code === 'string'
        ? cause.code
        : typeof cause?.message === 'string'
          ? cause.message
          : (error as Error).message;
    return retryable('handler_error', `cannot reach the LLM provider: ${this.#scrub(why)}`);
  }

  async #readError(response: Response): Promise<ProviderError> {
    let text = '';
    try {
      text = (await response.text()).slice(0, 4_096);
    } catch {
      return {};
    }
    try {
      const parsed = JSON.parse(text) as { error?: unknown; message?: unknown; code?: unknown };
      const error =
        typeof parsed.error === 'object' && parsed.error !== null
          ? (parsed.error as { message?: unknown; code?: unknown; type?: unknown })
          : parsed;
      const message =
        typeof error.message === 'string'
          ? error.message
          : typeof parsed.error === 'string'
            ? parsed.error
            : undefined;
      const code = typeof error.code === 'string' ? error.code : undefined;
      return {
        ...(code === undefined ? {} : { code }),
        ...(message === undefined ? {} : { message: this.#scrub(message) }),
      };
    } catch {
      return text === '' ? {} : { message: this.#scrub(text) };
    }
  }

  async #failure(response: Response): Promise<unknown> {
    const status = response.status;
    const { code, message } = await this.#readError(response);
    const said = `${status}${code === undefined ? '' : ` ${code}`}${message === undefined ? '' : `: ${message}`}`;
    if (
      [400, 413, 422].includes(status) &&
      (code === 'context_length_exceeded' || contextPattern.test(message ?? '') || status === 413)
    )
      return retryable(
        'context_overflow',
        `the prompt is over the model's context window (${said})`,
      );
    if (status === 408) return retryable('timeout', `the LLM provider timed out (${said})`);
    if (status >= 500) return retryable('handler_error', `the LLM provider failed (${said})`);
    return terminal('handler_error', `the LLM provider refused the request (${said})`);
  }

  async #answer(
    response: Response,
    request: ChatRequest,
    options: ChatOptions,
  ): Promise<ChatAnswer> {
    let payload: unknown;
    try {
      payload = await response.json();
    } catch (error) {
      if (options.signal.aborted) throw options.signal.reason;
      if ((error as Error).name === 'TimeoutError')
        throw retryable(
          'timeout',
          `the LLM provider did not finish its answer within ${this.#settings.timeoutMs} ms`,
        );
      throw retryable('handler_error', 'the LLM provider answered with a body that is not JSON');
    }
    const body = (payload ?? {}) as {
      choices?: { message?: { content?: unknown } }[];
      usage?: { prompt_tokens?: unknown; completion_tokens?: unknown };
    };
    const content = Array.isArray(body.choices) ? body.choices[0]?.message?.content : undefined;
    const promptTokens = body.usage?.prompt_tokens;
    const completionTokens = body.usage?.completion_tokens;
    if (Number.isSafeInteger(promptTokens) && Number.isSafeInteger(completionTokens))
      return {
        content,
        promptTokens: Math.max(0, promptTokens as number),
        completionTokens: Math.max(0, completionTokens as number),
        estimated: false,
      };
    return {
      content,
      promptTokens: estimateTokens(request.messages.map((m) => m.content).join('\n')),
      completionTokens: typeof content === 'string' ? estimateTokens(content) : 0,
      estimated: true,
    };
  }
}
