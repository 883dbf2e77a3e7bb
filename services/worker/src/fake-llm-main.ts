/**
 * `node services/worker/src/fake-llm-main.ts`: the fake LLM as a process, for benchmarks and demos.
 * Point the worker at it with `MESH_LLM_BASE_URL=http://127.0.0.1:<port>/v1`.
 *
 * Environment: FAKE_LLM_PORT (default 8089), FAKE_LLM_HOST (default 127.0.0.1), FAKE_LLM_LATENCY_MS,
 * FAKE_LLM_429_RATE (0..1), FAKE_LLM_429_STORM (next N requests), FAKE_LLM_RETRY_AFTER (seconds or
 * an HTTP date), FAKE_LLM_MAX_PROMPT_CHARS, FAKE_LLM_MALFORMED_RATE (0..1), FAKE_LLM_API_KEY,
 * FAKE_LLM_ECHO_AUTH (true/false), FAKE_LLM_SEED. A bad value ends it with status 78 naming it.
 */
import { createFakeLlm, type FakeLlmBehaviour } from './fake-llm.ts';

const problems: string[] = [];

function number(
  name: string,
  { min, max, integer }: { min: number; max: number; integer: boolean },
): number | undefined {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return undefined;
  const n = Number(raw);
  if (!Number.isFinite(n) || n < min || n > max || (integer && !Number.isInteger(n))) {
    problems.push(
      `${name} must be ${integer ? 'an integer' : 'a number'} from ${min} to ${max}, got ${JSON.stringify(raw)}`,
    );
    return undefined;
  }
  return n;
}

const port = number('FAKE_LLM_PORT', { min: 0, max: 65_535, integer: true }) ?? 8089;
const host = process.env.FAKE_LLM_HOST ?? '127.0.0.1';
const behaviour: Partial<FakeLlmBehaviour> = {};
const set = <K extends keyof FakeLlmBehaviour>(key: K, value: FakeLlmBehaviour[K] | undefined) => {
  if (value !== undefined) behaviour[key] = value;
};
set('latencyMs', number('FAKE_LLM_LATENCY_MS', { min: 0, max: 600_000, integer: true }));
set('rateLimitProbability', number('FAKE_LLM_429_RATE', { min: 0, max: 1, integer: false }));
set('rateLimitStorm', number('FAKE_LLM_429_STORM', { min: 0, max: 1e9, integer: true }));
set('maxPromptChars', number('FAKE_LLM_MAX_PROMPT_CHARS', { min: 0, max: 1e9, integer: true }));
set('malformedRate', number('FAKE_LLM_MALFORMED_RATE', { min: 0, max: 1, integer: false }));
set('seed', number('FAKE_LLM_SEED', { min: 0, max: 2 ** 32 - 1, integer: true }));
set('retryAfter', process.env.FAKE_LLM_RETRY_AFTER);
set('apiKey', process.env.FAKE_LLM_API_KEY);
const echo = process.env.FAKE_LLM_ECHO_AUTH;
if (echo !== undefined && echo !== '') {
  if (echo === 'true' || echo === 'false') behaviour.echoAuthorization = echo === 'true';
  else problems.push(`FAKE_LLM_ECHO_AUTH must be true or false, got ${JSON.stringify(echo)}`);
}
if (problems.length > 0) {
  for (const line of problems) process.stderr.write(`fake-llm: config: ${line}\n`);
  process.exit(78);
}

const app = createFakeLlm(behaviour);
const address = await app.listen({ host, port });
process.stdout.write(`fake LLM listening on ${address}/v1\n`);
const stop = (): void => {
  app.close().then(
    () => process.exit(0),
    () => process.exit(1),
  );
};
process.once('SIGTERM', stop);
process.once('SIGINT', stop);
