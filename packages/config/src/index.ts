/**
 * The MESH_* environment, parsed and validated once at start-up.
 *
 * Every variable the mesh reads is declared in `variables` below, with its type, default and allowed
 * range. The table is turned into a JSON Schema compiled by ajv at module load; `loadConfig` checks
 * the whole environment at once and throws a `config_invalid` MeshError whose message has one line
 * per bad variable, naming it and what is allowed. An unknown `MESH_` variable is an error too: a
 * typo such as `MESH_MAX_HOP` would otherwise silently leave a guard at its default.
 */
import { readFileSync } from 'node:fs';
import { Ajv } from 'ajv';
import { MeshError, registerSecret } from '@mesh/errors';

export type Kind =
  | { type: 'string'; pattern?: string; allowed?: string }
  | { type: 'secret' }
  | { type: 'url'; schemes: string[] }
  | { type: 'int'; min: number; max: number }
  | { type: 'bool' }
  | { type: 'duration'; minMs: number; maxMs: number }
  | { type: 'durations' }
  | { type: 'enum'; values: readonly string[] }
  | { type: 'list'; itemPattern: string; allowed: string };

export interface Variable {
  kind: Kind;
  default?: string;
  doc: string;
}

const durationPattern = '^[0-9]+(ms|s|m|h|d)$';

/**
 * How many times the running bounds (MESH_CONCURRENCY, MESH_PARTITION_CONCURRENCY) may be
 * finishing: handlers returned, their outputs waiting for Kafka's acknowledgement and their done
 * markers for Redis. A finishing event holds no handler and only its record and outputs in memory.
 * At 1 a partition ran in lockstep waves of its bound: one wave finishing filled the second half of
 * the room, and the next waited for its acknowledgement, the event loop idle 12% of the no-op
 * benchmark's run; at 4, 8% more events per second (same-hour runs alternated, 4 of 4). The
 * consumer runtime applies it; the variables' docs below state it.
 */
export const finishingFactor = 4;

/** Every variable the mesh reads. Services read the ones of their role; all are validated. */
export const variables = {
  MESH_KAFKA_BROKERS: {
    kind: {
      type: 'list',
      itemPattern: '^[A-Za-z0-9._-]+:[0-9]{1,5}$',
      allowed: 'a comma-separated list of host:port',
    },
    doc: 'Kafka bootstrap brokers.',
  },
  MESH_KAFKA_CLIENT_ID: {
    kind: { type: 'string', pattern: '^[A-Za-z0-9._-]{1,100}$', allowed: 'letters, digits, . _ -' },
    doc: 'Kafka client id; defaults to the service name.',
  },
  MESH_KAFKA_SSL: { kind: { type: 'bool' }, default: 'false', doc: 'Connect to Kafka over TLS.' },
  MESH_KAFKA_SSL_CA_FILE: {
    kind: { type: 'string', pattern: '^.+$', allowed: 'a file path' },
    doc: "PEM file of the CA that signed the brokers' certificates; unset: the public CAs Node trusts.",
  },
  MESH_KAFKA_SSL_REJECT_UNAUTHORIZED: {
    kind: { type: 'bool' },
    default: 'true',
    doc: "Verify the brokers' certificates.",
  },
  MESH_KAFKA_SASL_MECHANISM: {
    kind: { type: 'enum', values: ['plain', 'scram-sha-256', 'scram-sha-512'] },
    doc: 'SASL mechanism; unset means no SASL. A login the broker refuses stops the service (exit 78).',
  },
  MESH_KAFKA_SASL_USERNAME: {
    kind: { type: 'string', pattern: '^.+$', allowed: 'a user name' },
    doc: 'SASL user.',
  },
  MESH_KAFKA_SASL_PASSWORD: { kind: { type: 'secret' }, doc: 'SASL password.' },
  MESH_SCHEMA_REGISTRY_URL: {
    kind: { type: 'url', schemes: ['http', 'https'] },
    doc: 'Confluent-compatible schema registry base URL.',
  },
  MESH_SCHEMA_REGISTRY_USERNAME: {
    kind: { type: 'string', pattern: '^.+$', allowed: 'a user name' },
    doc: 'Registry basic-auth user.',
  },
  MESH_SCHEMA_REGISTRY_PASSWORD: { kind: { type: 'secret' }, doc: 'Registry basic-auth password.' },
  MESH_SCHEMA_REGISTRY_CA_FILE: {
    kind: { type: 'string', pattern: '^.+$', allowed: 'a file path' },
    doc: "PEM file of the CA that signed an https registry's certificate; unset: the public CAs Node trusts.",
  },
  MESH_REDIS_URL: {
    kind: { type: 'url', schemes: ['redis', 'rediss'] },
    doc: 'Redis URL, e.g. redis://:password@host:6379/0.',
  },
  MESH_REDIS_PASSWORD: { kind: { type: 'secret' }, doc: 'Redis password, if not in the URL.' },
  MESH_REDIS_TLS_CA_FILE: {
    kind: { type: 'string', pattern: '^.+$', allowed: 'a file path' },
    doc: "PEM file of the CA that signed Redis's certificate, for a rediss:// URL; unset: the public CAs Node trusts.",
  },
  MESH_TOPIC_PREFIX: {
    kind: {
      type: 'string',
      pattern: '^[A-Za-z0-9._-]{0,100}$',
      allowed: 'up to 100 of letters, digits, . _ -',
    },
    default: 'mesh.',
    doc: 'Prefix of every topic.',
  },
  MESH_PARTITIONS: {
    kind: { type: 'int', min: 1, max: 1000 },
    default: '6',
    doc: 'Partitions of topics the mesh creates.',
  },
  MESH_REPLICATION_FACTOR: {
    kind: { type: 'int', min: 1, max: 10 },
    default: '1',
    doc: 'Replication factor of topics the mesh creates.',
  },
  MESH_CREATE_TOPICS: {
    kind: { type: 'bool' },
    default: 'true',
    doc: 'Create missing topics at service start.',
  },
  MESH_MAX_HOPS: {
    kind: { type: 'int', min: 1, max: 1000 },
    default: '10',
    doc: 'Largest hopcount an event may carry.',
  },
  MESH_MAX_REVISITS: {
    kind: { type: 'int', min: 0, max: 100 },
    default: '2',
    doc: 'How often an agent may appear again in one agentpath.',
  },
  MESH_MAX_ATTEMPTS: {
    kind: { type: 'int', min: 1, max: 100 },
    default: '3',
    doc: 'Delivery attempts of a subtask before it is dead-lettered.',
  },
  MESH_RETRY_TIERS: {
    kind: { type: 'durations' },
    default: '5s,30s,5m',
    doc: 'Delays of the retry tiers, in order.',
  },
  MESH_IDEMPOTENCY_TTL: {
    kind: { type: 'duration', minMs: 1_000, maxMs: 90 * 86_400_000 },
    default: '7d',
    doc: 'How long done markers, task states, causal chains and dead letters are kept in Redis (Redis grows with the task rate times this; docs/services.md).',
  },
  MESH_TASK_RETENTION: {
    kind: { type: 'duration', minMs: 1_000, maxMs: 90 * 86_400_000 },
    doc: "How long an ended task's state and causal chain stay readable after its last change (GET /v1/tasks/<id>); unset: MESH_IDEMPOTENCY_TTL, which also keeps unfinished tasks. Shorter keeps Redis small at high task rates: an ended task is still recognised by its final marker, kept for MESH_IDEMPOTENCY_TTL.",
  },
  MESH_LEASE_TTL: {
    kind: { type: 'duration', minMs: 1_000, maxMs: 3_600_000 },
    default: '30s',
    doc: 'Processing lease; renewed while a handler runs.',
  },
  MESH_CONCURRENCY: {
    kind: { type: 'int', min: 1, max: 100_000 },
    default: '1000',
    doc: `Handlers running at once in one process; ${finishingFactor} times as many again may be finishing (output being written).`,
  },
  MESH_PARTITION_CONCURRENCY: {
    kind: { type: 'int', min: 1, max: 10_000 },
    default: '200',
    doc: `Handlers running at once per partition (distinct keys); ${finishingFactor} times as many again may be finishing.`,
  },
  MESH_MAX_EVENT_BYTES: {
    kind: { type: 'int', min: 1_024, max: 64 * 1_048_576 },
    default: '1048576',
    doc: 'Largest event value accepted.',
  },
  MESH_SHUTDOWN_TIMEOUT: {
    kind: { type: 'duration', minMs: 0, maxMs: 600_000 },
    default: '30s',
    doc: 'How long SIGTERM waits for running handlers; the last commit and leaving the group then take up to 5 s more.',
  },
  MESH_API_TOKEN: {
    kind: { type: 'secret' },
    doc: 'Bearer token required by write endpoints when set.',
  },
  MESH_HTTP_HOST: {
    kind: { type: 'string', pattern: '^[A-Za-z0-9.:-]+$', allowed: 'a host name or address' },
    default: '0.0.0.0',
    doc: 'HTTP bind address.',
  },
  MESH_HTTP_PORT: {
    kind: { type: 'int', min: 0, max: 65_535 },
    doc: 'HTTP port; each service has its own default.',
  },
  MESH_HTTP_PUBLISH_TIMEOUT: {
    kind: { type: 'duration', minMs: 100, maxMs: 600_000 },
    default: '10s',
    doc: 'How long an HTTP write (POST /v1/tasks, cancel, approve, deny, a dead-letter replay) waits for Kafka to take its event before it answers 503 kafka_unavailable with Retry-After; an event not yet sent by then is withdrawn and never written.',
  },
  MESH_LOG_LEVEL: {
    kind: { type: 'enum', values: ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] },
    default: 'info',
    doc: 'Log level.',
  },
  MESH_LAG_INTERVAL: {
    kind: { type: 'duration', minMs: 500, maxMs: 600_000 },
    default: '5s',
    doc: 'How often consumer lag is read from the broker.',
  },
  // Service variables live here too: services share one environment (a compose env file, a Helm
  // ConfigMap), so each must know the others' variables to tell a typo from a neighbour's setting.
  MESH_TEMPLATES_DIR: {
    kind: { type: 'string', pattern: '^.+$', allowed: 'a directory path' },
    doc: 'orchestrator: directory of workflow template files.',
  },
  MESH_DEFAULT_TEMPLATE: {
    kind: { type: 'string', pattern: '^[a-z0-9][a-z0-9._-]{0,62}$', allowed: 'a template name' },
    doc: 'orchestrator: template of requests that name none.',
  },
  MESH_TRIAGE_RULES: {
    kind: { type: 'string', pattern: '^.+$', allowed: 'a JSON rules file path' },
    doc: 'dlq-triage: rule table for handler_error dead letters.',
  },
  MESH_TRIAGE_MAX_REMEDIATIONS: {
    kind: { type: 'int', min: 0, max: 100 },
    default: '2',
    doc: 'dlq-triage: remediations tried per event before it is escalated.',
  },
  MESH_FALLBACK_MODEL: {
    kind: { type: 'string', pattern: '^.{1,200}$', allowed: 'a model name' },
    doc: 'dlq-triage: model an exhausted handler_error is retried on once.',
  },
  MESH_WORKER_AGENTS: {
    kind: {
      type: 'list',
      itemPattern: '^[a-z0-9][a-z0-9._-]{0,62}$',
      allowed: 'a comma-separated list of agent names',
    },
    default: 'echo,research,summarize,fact-check,draft,planner',
    doc: 'worker: the agents this worker runs, one consumer group each.',
  },
  MESH_AGENT_DELAY: {
    kind: { type: 'duration', minMs: 0, maxMs: 600_000 },
    default: '0ms',
    doc: 'worker: simulated latency of the built-in agents.',
  },
  MESH_SCHEMAS_DIR: {
    kind: { type: 'string', pattern: '^.+$', allowed: 'a directory path' },
    doc: 'Directory of the JSON Schema contracts, when an image moves schemas/.',
  },
  MESH_AGGREGATOR_TICK: {
    kind: { type: 'duration', minMs: 10, maxMs: 60_000 },
    default: '250ms',
    doc: 'aggregator: how often it looks for stages whose deadline passed.',
  },
  MESH_RELAY_AGENTS: {
    kind: {
      type: 'list',
      itemPattern: '^[a-z0-9][a-z0-9._-]{0,62}$',
      allowed: 'a comma-separated list of agent names',
    },
    doc: 'worker: agents that hand their work to the agent named in input.next (delegation demos and loop-guard tests).',
  },
  MESH_LLM_BASE_URL: {
    kind: { type: 'url', schemes: ['http', 'https'] },
    doc: 'worker: OpenAI-compatible API base URL, e.g. https://api.openai.com/v1.',
  },
  MESH_LLM_API_KEY: { kind: { type: 'secret' }, doc: 'worker: API key of the LLM provider.' },
  MESH_LLM_MODEL: {
    kind: { type: 'string', pattern: '^.{1,200}$', allowed: 'a model name' },
    doc: 'worker: chat model.',
  },
  MESH_LLM_FALLBACK_MODEL: {
    kind: { type: 'string', pattern: '^.{1,200}$', allowed: 'a model name' },
    doc: "worker: model tried on a subtask's last attempt after the primary model failed.",
  },
  MESH_LLM_TIMEOUT: {
    kind: { type: 'duration', minMs: 100, maxMs: 3_600_000 },
    default: '60s',
    doc: 'worker: limit of one model call.',
  },
  MESH_LLM_AGENTS: {
    kind: {
      type: 'list',
      itemPattern: '^[a-z0-9][a-z0-9._-]{0,62}$',
      allowed: 'a comma-separated list of agent names',
    },
    default: 'llm',
    doc: 'worker: agents served by the LLM handler.',
  },
  MESH_LLM_MAX_CONTEXT_CHARS: {
    kind: { type: 'int', min: 100, max: 10_000_000 },
    default: '32000',
    doc: 'worker: prompt size kept when a retry asks to truncate context.',
  },
  MESH_LLM_COST_PER_1K_TOKENS: {
    kind: {
      type: 'string',
      pattern: '^[0-9]+([.][0-9]+)?$',
      allowed: 'a decimal number of dollars',
    },
    doc: 'worker: price used to report cost in usage.',
  },
  MESH_LLM_MAX_RETRY_WAIT: {
    kind: { type: 'duration', minMs: 0, maxMs: 600_000 },
    default: '30s',
    doc: 'worker: total wait on provider 429s inside one handler before the subtask fails as rate_limited.',
  },
  MESH_LLM_RPM: {
    kind: { type: 'int', min: 0, max: 10_000_000 },
    default: '0',
    doc: 'worker: requests per window to the provider, shared by all replicas (0 = unlimited).',
  },
  MESH_LLM_TPM: {
    kind: { type: 'int', min: 0, max: 1_000_000_000 },
    default: '0',
    doc: 'worker: tokens per window to the provider, shared by all replicas (0 = unlimited).',
  },
  MESH_LLM_RATE_WINDOW: {
    kind: { type: 'duration', minMs: 100, maxMs: 3_600_000 },
    default: '60s',
    doc: 'worker: the rate-limit window.',
  },
  MESH_LLM_PROVIDER: {
    kind: { type: 'string', pattern: '^[A-Za-z0-9._:-]{1,100}$', allowed: 'a provider name' },
    doc: 'worker: rate-limit key; defaults to the base URL host.',
  },
  MESH_ORCHESTRATOR_URL: {
    kind: { type: 'url', schemes: ['http', 'https'] },
    default: 'http://127.0.0.1:8080',
    doc: 'cli, dashboard: the orchestrator API.',
  },
  MESH_DLQ_URL: {
    kind: { type: 'url', schemes: ['http', 'https'] },
    default: 'http://127.0.0.1:8084',
    doc: 'cli, dashboard: the dlq-triage API.',
  },
} as const satisfies Record<string, Variable>;

export type VariableName = keyof typeof variables;

function schemaOf(kind: Kind): Record<string, unknown> {
  switch (kind.type) {
    case 'string':
      return { type: 'string', ...(kind.pattern === undefined ? {} : { pattern: kind.pattern }) };
    case 'secret':
      return { type: 'string', minLength: 1 };
    case 'url':
      return { type: 'string', pattern: `^(${kind.schemes.join('|')})://[^\\s]+$` };
    case 'int':
      return { type: 'string', pattern: '^-?[0-9]+$' };
    case 'bool':
      return { type: 'string', enum: ['true', 'false', '1', '0', 'yes', 'no'] };
    case 'duration':
      return { type: 'string', pattern: durationPattern };
    case 'durations':
      return { type: 'string', pattern: '^[0-9]+(ms|s|m|h|d)(,[0-9]+(ms|s|m|h|d))*$' };
    case 'enum':
      return { type: 'string', enum: [...kind.values] };
    case 'list':
      return { type: 'string', pattern: '^[^,]+(,[^,]+)*$' };
  }
}

function allowedOf(kind: Kind): string {
  switch (kind.type) {
    case 'string':
      return kind.allowed ?? 'a string';
    case 'secret':
      return 'a non-empty string';
    case 'url':
      return `a ${kind.schemes.join(' or ')} URL`;
    case 'int':
      return `an integer from ${kind.min} to ${kind.max}`;
    case 'bool':
      return 'true or false';
    case 'duration':
      return `a duration such as 500ms, 30s, 5m, 1h, 7d, from ${formatDuration(kind.minMs)} to ${formatDuration(kind.maxMs)}`;
    case 'durations':
      return 'a comma-separated list of durations such as 5s,30s,5m';
    case 'enum':
      return `one of ${kind.values.join(', ')}`;
    case 'list':
      return kind.allowed;
  }
}

const ajv = new Ajv({ allErrors: true, strict: true });
const validateEnv = ajv.compile({
  type: 'object',
  properties: Object.fromEntries(
    Object.entries(variables as Record<string, Variable>).map(([name, v]) => [
      name,
      schemaOf(v.kind),
    ]),
  ),
  additionalProperties: false,
});

const unitMs = { ms: 1, s: 1_000, m: 60_000, h: 3_600_000, d: 86_400_000 } as const;

/** Parses `500ms`, `30s`, `5m`, `1h`, `7d` into milliseconds; throws on anything else. */
export function parseDuration(text: string): number {
  const match = /^([0-9]+)(ms|s|m|h|d)$/.exec(text.trim());
  if (match === null)
    throw new MeshError('config_invalid', `not a duration: ${JSON.stringify(text)}`);
  return Number(match[1]) * unitMs[match[2] as keyof typeof unitMs];
}

export function formatDuration(ms: number): string {
  for (const [unit, size] of [
    ['d', 86_400_000],
    ['h', 3_600_000],
    ['m', 60_000],
    ['s', 1_000],
  ] as const) {
    if (ms >= size && ms % size === 0) return `${ms / size}${unit}`;
  }
  return `${ms}ms`;
}

export interface MeshConfig {
  service: string;
  kafka: {
    brokers: string[];
    clientId: string;
    ssl?: boolean | { rejectUnauthorized: boolean; ca?: string[] };
    sasl?: {
      mechanism: 'plain' | 'scram-sha-256' | 'scram-sha-512';
      username: string;
      password: string;
    };
  };
  registry: { url: string; username?: string; password?: string; ca?: string[] };
  redis: { url: string; password?: string; ca?: string[] };
  topicPrefix: string;
  partitions: number;
  replicationFactor: number;
  createTopics: boolean;
  maxHops: number;
  maxRevisits: number;
  maxAttempts: number;
  /** Retry tiers in order, e.g. `[{ name: '5s', delayMs: 5000 }, …]`. */
  retryTiers: { name: string; delayMs: number }[];
  idempotencyTtlMs: number;
  /** MESH_TASK_RETENTION, else MESH_IDEMPOTENCY_TTL. */
  taskRetentionMs: number;
  leaseTtlMs: number;
  concurrency: number;
  partitionConcurrency: number;
  maxEventBytes: number;
  shutdownTimeoutMs: number;
  apiToken?: string;
  /** MESH_HTTP_PUBLISH_TIMEOUT: how long an HTTP write waits for Kafka. */
  http: { host: string; port: number; publishTimeoutMs: number };
  logLevel: string;
  lagIntervalMs: number;
  /** The raw validated MESH_* values, for service-specific variables. */
  env: Readonly<Record<string, string>>;
}

export interface LoadOptions {
  /** The service name, used for the client id and `meshfailedby`. */
  service: string;
  /** The service's default HTTP port. */
  defaultHttpPort: number;
  /** Variables the service requires beyond the core ones. */
  required?: VariableName[];
  /** Service-specific variables (validated the same way, and known so they are not "unknown"). */
  extra?: Record<string, Variable>;
  /** Reads a file named by a variable (for the CA file); injectable for tests. */
  readFile?: (path: string) => string;
}

const coreRequired: VariableName[] = [
  'MESH_KAFKA_BROKERS',
  'MESH_SCHEMA_REGISTRY_URL',
  'MESH_REDIS_URL',
];

/** The offending value for an error line: user info of URLs masked, long values cut. */
function describe(value: string | undefined): string {
  if (value === undefined) return 'unset';
  const masked = value.replace(/\/\/[^/@\s]*@/g, '//***@');
  return `got ${JSON.stringify(masked.length > 60 ? `${masked.slice(0, 57)}...` : masked)}`;
}

/**
 * Reads and validates the MESH_* variables of `env`.
 *
 * @throws MeshError `config_invalid` (not retryable) listing every bad variable, one per line, each
 *   naming the variable and what is allowed. Secrets are never echoed back.
 */
export function loadConfig(env: NodeJS.ProcessEnv, options: LoadOptions): MeshConfig {
  const table: Record<string, Variable> = {
    ...(variables as Record<string, Variable>),
    ...options.extra,
  };
  const mesh: Record<string, string> = {};
  for (const [name, value] of Object.entries(env)) {
    // MESH_STACK_* and MESH_TEST_* configure the local stack and the test harness, not services.
    if (name.startsWith('MESH_STACK_') || name.startsWith('MESH_TEST_')) continue;
    if (name.startsWith('MESH_') && value !== undefined && value !== '') mesh[name] = value;
  }
  const problems = new Map<string, string>();
  const bad = (name: string, why: string): void => {
    if (!problems.has(name)) problems.set(name, why);
  };
  const known = Object.fromEntries(Object.entries(mesh).filter(([name]) => name in variables));
  if (!validateEnv(known)) {
    for (const error of validateEnv.errors ?? []) {
      const name = error.instancePath.slice(1);
      const v = table[name];
      if (v !== undefined)
        bad(
          name,
          `must be ${allowedOf(v.kind)}, ${v.kind.type === 'secret' ? 'got an empty value' : describe(mesh[name])}`,
        );
    }
  }
  for (const [name, value] of Object.entries(mesh)) {
    const v = table[name];
    if (v === undefined) {
      bad(name, `is not a variable the mesh knows; known ones are listed in docs/configuration.md`);
      continue;
    }
    if (!(name in variables)) {
      const validate = ajv.compile(schemaOf(v.kind));
      if (!validate(value)) {
        bad(
          name,
          `must be ${allowedOf(v.kind)}, ${v.kind.type === 'secret' ? 'got an empty value' : describe(value)}`,
        );
        continue;
      }
    }
    if (problems.has(name)) continue;
    // What a pattern cannot say: ranges of numbers and durations, the items of a list.
    const kind = v.kind;
    if (kind.type === 'int') {
      const n = Number(value);
      if (!Number.isSafeInteger(n) || n < kind.min || n > kind.max)
        bad(name, `must be ${allowedOf(kind)}, ${describe(value)}`);
    } else if (kind.type === 'duration') {
      const ms = parseDuration(value);
      if (ms < kind.minMs || ms > kind.maxMs)
        bad(name, `must be ${allowedOf(kind)}, ${describe(value)}`);
    } else if (kind.type === 'list') {
      const items = value.split(',').map((item) => item.trim());
      if (!items.every((item) => new RegExp(kind.itemPattern).test(item)))
        bad(name, `must be ${allowedOf(kind)}, ${describe(value)}`);
    } else if (kind.type === 'secret') {
      registerSecret(value);
    }
  }
  for (const name of [...coreRequired, ...(options.required ?? [])]) {
    if (mesh[name] === undefined) bad(name, `is required: ${table[name]?.doc ?? ''}`.trim());
  }

  const get = (name: string): string | undefined => mesh[name] ?? table[name]?.default;
  const int = (name: string): number => {
    const raw = get(name);
    const kind = table[name]?.kind;
    if (raw === undefined || kind?.type !== 'int') return Number.NaN;
    const n = Number(raw);
    if (!Number.isSafeInteger(n) || n < kind.min || n > kind.max)
      bad(name, `must be ${allowedOf(kind)}, ${describe(raw)}`);
    return n;
  };
  const duration = (name: string): number => {
    const raw = get(name);
    const kind = table[name]?.kind;
    if (raw === undefined || kind?.type !== 'duration' || problems.has(name)) return Number.NaN;
    const ms = parseDuration(raw);
    if (ms < kind.minMs || ms > kind.maxMs)
      bad(name, `must be ${allowedOf(kind)}, ${describe(raw)}`);
    return ms;
  };
  const bool = (name: string): boolean => ['true', '1', 'yes'].includes(get(name) ?? '');

  const brokers = (get('MESH_KAFKA_BROKERS') ?? '')
    .split(',')
    .map((b) => b.trim())
    .filter(Boolean);
  const brokerKind = variables.MESH_KAFKA_BROKERS.kind;
  if (
    mesh.MESH_KAFKA_BROKERS !== undefined &&
    !brokers.every((b) => new RegExp(brokerKind.itemPattern).test(b))
  ) {
    bad(
      'MESH_KAFKA_BROKERS',
      `must be ${brokerKind.allowed}, ${describe(mesh.MESH_KAFKA_BROKERS)}`,
    );
  }

  const saslMechanism = get('MESH_KAFKA_SASL_MECHANISM') as
    'plain' | 'scram-sha-256' | 'scram-sha-512' | undefined;
  if (saslMechanism !== undefined) {
    if (get('MESH_KAFKA_SASL_USERNAME') === undefined)
      bad('MESH_KAFKA_SASL_USERNAME', `is required when MESH_KAFKA_SASL_MECHANISM is set`);
    if (get('MESH_KAFKA_SASL_PASSWORD') === undefined)
      bad('MESH_KAFKA_SASL_PASSWORD', `is required when MESH_KAFKA_SASL_MECHANISM is set`);
  }
  /** The certificates of a CA file, or undefined (reported) when it cannot be read or holds none. */
  const caCertificates = (name: string): string[] | undefined => {
    const file = get(name);
    if (file === undefined) return undefined;
    let text: string;
    try {
      text = (options.readFile ?? defaultReadFile)(file);
    } catch (error) {
      bad(name, `must name a readable PEM file: ${(error as Error).message}`);
      return undefined;
    }
    if (!text.includes('-----BEGIN CERTIFICATE-----')) {
      bad(name, `must name a PEM file of certificates; ${file} holds none`);
      return undefined;
    }
    return [text];
  };
  let ssl: MeshConfig['kafka']['ssl'];
  if (!bool('MESH_KAFKA_SSL') && get('MESH_KAFKA_SSL_CA_FILE') !== undefined)
    bad('MESH_KAFKA_SSL_CA_FILE', 'is set but MESH_KAFKA_SSL is not: a CA is for a TLS listener');
  if (bool('MESH_KAFKA_SSL')) {
    const ca = caCertificates('MESH_KAFKA_SSL_CA_FILE');
    ssl = {
      rejectUnauthorized: bool('MESH_KAFKA_SSL_REJECT_UNAUTHORIZED'),
      ...(ca === undefined ? {} : { ca }),
    };
  }

  const registryCa = caCertificates('MESH_SCHEMA_REGISTRY_CA_FILE');
  if (registryCa !== undefined && !(get('MESH_SCHEMA_REGISTRY_URL') ?? '').startsWith('https://'))
    bad('MESH_SCHEMA_REGISTRY_CA_FILE', 'is set but MESH_SCHEMA_REGISTRY_URL is not https://');
  const redisCa = caCertificates('MESH_REDIS_TLS_CA_FILE');
  if (redisCa !== undefined && !(get('MESH_REDIS_URL') ?? '').startsWith('rediss://'))
    bad('MESH_REDIS_TLS_CA_FILE', 'is set but MESH_REDIS_URL is not rediss:// (Redis over TLS)');

  const tiers = (get('MESH_RETRY_TIERS') ?? '').split(',').filter(Boolean);
  const retryTiers = problems.has('MESH_RETRY_TIERS')
    ? []
    : tiers.map((name) => ({ name, delayMs: parseDuration(name) }));
  if (new Set(tiers).size !== tiers.length)
    bad('MESH_RETRY_TIERS', `must not repeat a tier, ${describe(get('MESH_RETRY_TIERS'))}`);

  const config: MeshConfig = {
    service: options.service,
    kafka: {
      brokers,
      clientId: get('MESH_KAFKA_CLIENT_ID') ?? options.service,
      ...(ssl === undefined ? {} : { ssl }),
      ...(saslMechanism === undefined
        ? {}
        : {
            sasl: {
              mechanism: saslMechanism,
              username: get('MESH_KAFKA_SASL_USERNAME') ?? '',
              password: get('MESH_KAFKA_SASL_PASSWORD') ?? '',
            },
          }),
    },
    registry: {
      url: (get('MESH_SCHEMA_REGISTRY_URL') ?? '').replace(/\/+$/, ''),
      ...optional('username', get('MESH_SCHEMA_REGISTRY_USERNAME')),
      ...optional('password', get('MESH_SCHEMA_REGISTRY_PASSWORD')),
      ...(registryCa === undefined ? {} : { ca: registryCa }),
    },
    redis: {
      url: get('MESH_REDIS_URL') ?? '',
      ...optional('password', get('MESH_REDIS_PASSWORD')),
      ...(redisCa === undefined ? {} : { ca: redisCa }),
    },
    topicPrefix: get('MESH_TOPIC_PREFIX') ?? 'mesh.',
    partitions: int('MESH_PARTITIONS'),
    replicationFactor: int('MESH_REPLICATION_FACTOR'),
    createTopics: bool('MESH_CREATE_TOPICS'),
    maxHops: int('MESH_MAX_HOPS'),
    maxRevisits: int('MESH_MAX_REVISITS'),
    maxAttempts: int('MESH_MAX_ATTEMPTS'),
    retryTiers,
    idempotencyTtlMs: duration('MESH_IDEMPOTENCY_TTL'),
    taskRetentionMs:
      get('MESH_TASK_RETENTION') === undefined
        ? duration('MESH_IDEMPOTENCY_TTL')
        : duration('MESH_TASK_RETENTION'),
    leaseTtlMs: duration('MESH_LEASE_TTL'),
    concurrency: int('MESH_CONCURRENCY'),
    partitionConcurrency: int('MESH_PARTITION_CONCURRENCY'),
    maxEventBytes: int('MESH_MAX_EVENT_BYTES'),
    shutdownTimeoutMs: duration('MESH_SHUTDOWN_TIMEOUT'),
    ...optional('apiToken', get('MESH_API_TOKEN')),
    http: {
      host: get('MESH_HTTP_HOST') ?? '0.0.0.0',
      port: mesh.MESH_HTTP_PORT === undefined ? options.defaultHttpPort : int('MESH_HTTP_PORT'),
      publishTimeoutMs: duration('MESH_HTTP_PUBLISH_TIMEOUT'),
    },
    logLevel: get('MESH_LOG_LEVEL') ?? 'info',
    lagIntervalMs: duration('MESH_LAG_INTERVAL'),
    env: Object.freeze({ ...defaultsOf(table), ...mesh }),
  };
  if (problems.size > 0) {
    const lines = [...problems].map(([name, why]) => `${name} ${why}`);
    throw new MeshError('config_invalid', lines.join('\n'), {
      details: { variables: [...problems.keys()] },
    });
  }
  return config;
}

/** The declared defaults, so `config.env` answers for every variable that has one. */
function defaultsOf(table: Record<string, Variable>): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [name, v] of Object.entries(table)) if (v.default !== undefined) out[name] = v.default;
  return out;
}

function optional<K extends string>(key: K, value: string | undefined): { [P in K]?: string } {
  return (value === undefined ? {} : { [key]: value }) as { [P in K]?: string };
}

function defaultReadFile(path: string): string {
  return readFileSync(path, 'utf8');
}

/**
 * Loads the config or ends the process: each bad variable is printed as one line
 * `config: MESH_X must be …` on stderr and the process exits with status 78 (EX_CONFIG).
 */
export function loadConfigOrExit(
  options: LoadOptions,
  env: NodeJS.ProcessEnv = process.env,
): MeshConfig {
  try {
    return loadConfig(env, options);
  } catch (error) {
    if (error instanceof MeshError && error.code === 'config_invalid') {
      for (const line of error.message.split('\n'))
        process.stderr.write(`${options.service}: config: ${line}\n`);
      process.exit(78);
    }
    throw error;
  }
}

/** A single topic name under the configured prefix. */
export function topicName(config: Pick<MeshConfig, 'topicPrefix'>, name: string): string {
  return `${config.topicPrefix}${name}`;
}
