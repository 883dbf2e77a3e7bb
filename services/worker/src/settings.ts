/**
 * The worker's settings. Its variables are declared with every other service's in `@mesh/config`
 * (services share one environment), so a value of the wrong shape already stops the service with
 * one line naming it; `readWorkerSettings` then checks what the shared loader does not check for
 * service variables — integer and duration ranges, list items — and the rules that tie variables
 * together, and reports in the same one-line-per-variable form.
 */
import {
  formatDuration,
  parseDuration,
  variables as meshVariables,
  type MeshConfig,
  type Variable,
} from '@mesh/config';
import { MeshError } from '@mesh/errors';
import { demoAgentNames } from './agents/demo.ts';
import { builtinAgentNames } from './agents/builtin.ts';

/** Worker variables beyond the shared table: none, all are declared in `@mesh/config`. */
export const workerVariables = {} as const satisfies Record<string, Variable>;

/**
 * The worker variables of a process hosting agents of its own: MESH_WORKER_AGENTS defaults to
 * them, so such a worker hosts exactly its own agents unless the variable says otherwise.
 */
export function workerVariablesFor(custom: readonly string[]): Record<string, Variable> {
  if (custom.length === 0) return workerVariables;
  return {
    ...workerVariables,
    MESH_WORKER_AGENTS: { ...meshVariables.MESH_WORKER_AGENTS, default: custom.join(',') },
  };
}

const table: Record<string, Variable> = { ...meshVariables, ...workerVariables };

type WorkerVariable =
  | 'MESH_LLM_MAX_RETRY_WAIT'
  | 'MESH_RELAY_AGENTS'
  | 'MESH_WORKER_AGENTS'
  | 'MESH_AGENT_DELAY'
  | 'MESH_LLM_BASE_URL'
  | 'MESH_LLM_API_KEY'
  | 'MESH_LLM_MODEL'
  | 'MESH_LLM_FALLBACK_MODEL'
  | 'MESH_LLM_TIMEOUT'
  | 'MESH_LLM_AGENTS'
  | 'MESH_LLM_MAX_CONTEXT_CHARS'
  | 'MESH_LLM_COST_PER_1K_TOKENS'
  | 'MESH_LLM_RPM'
  | 'MESH_LLM_TPM'
  | 'MESH_LLM_RATE_WINDOW'
  | 'MESH_LLM_PROVIDER';

export interface RateSettings {
  provider: string;
  requestsPerWindow: number;
  tokensPerWindow: number;
  windowMs: number;
}

export interface LlmSettings {
  baseUrl: string;
  apiKey?: string;
  model: string;
  fallbackModel?: string;
  timeoutMs: number;
  maxContextChars: number;
  costPer1kTokens?: number;
  maxRetryWaitMs: number;
  rate: RateSettings;
}

export interface WorkerSettings {
  /** Agents this process runs, in the order configured. */
  agents: string[];
  /** The hosted agents served by the LLM handler. */
  llmAgents: string[];
  /** Agents that hand their work on to `input.next` (MESH_RELAY_AGENTS). */
  relayAgents: string[];
  agentDelayMs: number;
  /** Present when at least one LLM agent is hosted. */
  llm?: LlmSettings;
}

function describe(value: string): string {
  return `got ${JSON.stringify(value.length > 60 ? `${value.slice(0, 57)}...` : value)}`;
}

/**
 * The worker's settings from a validated config. `custom` names the agents of your own the process
 * was given: they have handlers (such a worker loads its config with `workerVariablesFor`, so that
 * MESH_WORKER_AGENTS defaults to them).
 *
 * @throws MeshError `config_invalid` (not retryable) with one line per bad variable, naming it.
 */
export function readWorkerSettings(
  config: Pick<MeshConfig, 'env'>,
  custom: readonly string[] = [],
): WorkerSettings {
  const problems = new Map<string, string>();
  const bad = (name: WorkerVariable, why: string): void => {
    if (!problems.has(name)) problems.set(name, why);
  };
  const raw = (name: WorkerVariable): string | undefined => config.env[name];
  const get = (name: WorkerVariable): string | undefined => raw(name) ?? table[name]?.default;
  const int = (name: WorkerVariable): number => {
    const text = get(name) ?? '';
    const kind = table[name]?.kind;
    const n = Number(text);
    if (kind?.type !== 'int') return n;
    if (!Number.isSafeInteger(n) || n < kind.min || n > kind.max)
      bad(name, `must be an integer from ${kind.min} to ${kind.max}, ${describe(text)}`);
    return n;
  };
  const duration = (name: WorkerVariable): number => {
    const text = get(name) ?? '';
    const kind = table[name]?.kind;
    let ms: number;
    try {
      ms = parseDuration(text);
    } catch {
      bad(name, `must be a duration such as 500ms, 30s, 5m, ${describe(text)}`);
      return Number.NaN;
    }
    if (kind?.type === 'duration' && (ms < kind.minMs || ms > kind.maxMs))
      bad(
        name,
        `must be a duration such as 500ms, 30s, 5m, 1h, 7d, from ${formatDuration(kind.minMs)} to ${formatDuration(kind.maxMs)}, ${describe(text)}`,
      );
    return ms;
  };
  const list = (name: WorkerVariable): string[] => {
    const items = [
      ...new Set(
        (get(name) ?? '')
          .split(',')
          .map((item) => item.trim())
          .filter(Boolean),
      ),
    ];
    const kind = table[name]?.kind;
    if (kind?.type === 'list') {
      const pattern = new RegExp(kind.itemPattern);
      const wrong = items.filter((item) => !pattern.test(item));
      if (wrong.length > 0)
        bad(
          name,
          `must be ${kind.allowed} (lower-case letters, digits, . _ -), ${describe(wrong.join(','))}`,
        );
    }
    return items;
  };

  const own = new Set(custom);
  const agents = list('MESH_WORKER_AGENTS');
  const llmNames = new Set(list('MESH_LLM_AGENTS'));
  const relayNames = new Set(
    raw('MESH_RELAY_AGENTS') === undefined ? [] : list('MESH_RELAY_AGENTS'),
  );
  const builtins = new Set<string>([...builtinAgentNames, ...demoAgentNames]);
  const unknown = agents.filter(
    (a) => !own.has(a) && !llmNames.has(a) && !relayNames.has(a) && !builtins.has(a),
  );
  if (unknown.length > 0)
    bad(
      'MESH_WORKER_AGENTS',
      `names agents without a handler: ${unknown.join(', ')} (${own.size > 0 ? `this worker's own: ${[...own].join(', ')}; ` : ''}built-in: ${[...builtinAgentNames, ...demoAgentNames].join(', ')}; LLM-backed: the names in MESH_LLM_AGENTS; relays: the names in MESH_RELAY_AGENTS)`,
    );
  // An agent of your own is served by its own code, whatever the other lists say.
  const relayAgents = agents.filter((a) => !own.has(a) && relayNames.has(a) && !llmNames.has(a));
  if (agents.length === 0) bad('MESH_WORKER_AGENTS', 'must name at least one agent');
  const llmAgents = agents.filter((a) => !own.has(a) && llmNames.has(a));
  const agentDelayMs = duration('MESH_AGENT_DELAY');

  let llm: LlmSettings | undefined;
  // Range checks run whatever agents are hosted, so a typo does not wait for the day an LLM agent is added.
  const timeoutMs = duration('MESH_LLM_TIMEOUT');
  const maxContextChars = int('MESH_LLM_MAX_CONTEXT_CHARS');
  const requestsPerWindow = int('MESH_LLM_RPM');
  const tokensPerWindow = int('MESH_LLM_TPM');
  const windowMs = duration('MESH_LLM_RATE_WINDOW');
  const maxRetryWaitMs = duration('MESH_LLM_MAX_RETRY_WAIT');
  const cost = raw('MESH_LLM_COST_PER_1K_TOKENS');
  if (llmAgents.length > 0) {
    const why = `is required when MESH_WORKER_AGENTS hosts an LLM agent (${llmAgents.join(', ')})`;
    const baseUrl = raw('MESH_LLM_BASE_URL');
    const model = raw('MESH_LLM_MODEL');
    if (baseUrl === undefined) bad('MESH_LLM_BASE_URL', why);
    if (model === undefined) bad('MESH_LLM_MODEL', why);
    if (baseUrl !== undefined && model !== undefined) {
      const apiKey = raw('MESH_LLM_API_KEY');
      const fallbackModel = raw('MESH_LLM_FALLBACK_MODEL');
      llm = {
        baseUrl: baseUrl.replace(/\/+$/, ''),
        ...(apiKey === undefined ? {} : { apiKey }),
        model,
        ...(fallbackModel === undefined ? {} : { fallbackModel }),
        timeoutMs,
        maxContextChars,
        ...(cost === undefined ? {} : { costPer1kTokens: Number(cost) }),
        maxRetryWaitMs,
        rate: {
          provider: raw('MESH_LLM_PROVIDER') ?? providerOf(baseUrl),
          requestsPerWindow,
          tokensPerWindow,
          windowMs,
        },
      };
    }
  }
  if (problems.size > 0) {
    throw new MeshError(
      'config_invalid',
      [...problems].map(([name, why]) => `${name} ${why}`).join('\n'),
      { details: { variables: [...problems.keys()] } },
    );
  }
  return { agents, llmAgents, relayAgents, agentDelayMs, ...(llm === undefined ? {} : { llm }) };
}

/** The host (and port) of the base URL: the default name the rate limit is shared under. */
function providerOf(baseUrl: string): string {
  try {
    return new URL(baseUrl).host.replace(/[^A-Za-z0-9._:-]/g, '_') || 'llm';
  } catch {
    return 'llm';
  }
}
