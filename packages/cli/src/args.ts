/**
 * The command line grammar: which commands exist, their options (node:util `parseArgs`, strict), and
 * the small value parsers the commands share. Pure: nothing here touches the network or the process,
 * so it is unit-tested on its own.
 */
import { parseArgs, type ParseArgsOptionsConfig } from 'node:util';
import { parseDuration } from '@mesh/config';
import { UsageError } from './errors.ts';

export interface CommandSpec {
  /** `topics init`, `publish`, … */
  name: string;
  /** One line: how to call it. */
  usage: string;
  summary: string;
  /** More lines of help, printed after the usage. */
  details?: string[];
  options: ParseArgsOptionsConfig;
  /** How many positional arguments it takes. */
  positionals: { min: number; max: number };
}

const common: ParseArgsOptionsConfig = {
  json: { type: 'boolean' },
  help: { type: 'boolean', short: 'h' },
};

export const commands: readonly CommandSpec[] = [
  {
    name: 'topics init',
    usage: 'mesh topics init [--agents a,b,...]',
    summary: 'create every topic of the contract under the prefix; print created / existing',
    details: [
      '--agents  agents whose mesh.work.<agent> topics to create',
      "          (default: MESH_WORKER_AGENTS, the worker's agents)",
    ],
    options: { agents: { type: 'string' } },
    positionals: { min: 0, max: 0 },
  },
  {
    name: 'schemas register',
    usage: 'mesh schemas register',
    summary: 'register every schemas/*.json in the registry (compatibility BACKWARD)',
    options: {},
    positionals: { min: 0, max: 0 },
  },
  {
    name: 'schemas check',
    usage: 'mesh schemas check',
    summary: 'report whether each schema is compatible, registering nothing; exit 1 if one is not',
    options: {},
    positionals: { min: 0, max: 0 },
  },
  {
    name: 'publish',
    usage:
      'mesh publish [file|-] [--template name] [--key k] | --raw [file|-] [--topic t] [--new-id]',
    summary: 'publish a task (io.mesh.task.requested data) to mesh.requests; print its id',
    details: [
      'file|-      the JSON to publish; - (or nothing, with a pipe) reads stdin',
      '--template  set the workflow template of the task',
      '--key       Kafka key of the record (default: the task id)',
      '--raw       the input is a whole CloudEvent: publish it as it is in structured mode',
      '            (content-type application/cloudevents+json, what kcat -P sends)',
      '--topic     with --raw: the topic (short names like requests are put under the prefix)',
      '--new-id    with --raw: give the event a fresh id (the mesh drops a repeated id)',
    ],
    options: {
      template: { type: 'string' },
      key: { type: 'string' },
      raw: { type: 'boolean' },
      topic: { type: 'string' },
      'new-id': { type: 'boolean' },
    },
    positionals: { min: 0, max: 1 },
  },
  {
    name: 'tail',
    usage: 'mesh tail <topic> [--follow] [--from-beginning] [--limit n]',
    summary: 'print the events of a topic, decoded (short names: outputs, dlq, work.echo, …)',
    details: [
      'without --follow: the last --limit events (10 by default), or with --from-beginning the',
      'first --limit (all) of them, then exit.  --follow: new events (after the existing ones',
      'with --from-beginning) until Ctrl-C or --limit.  --json: one JSON object per line.',
      'Reads with a throw-away consumer group that commits nothing.',
    ],
    options: {
      follow: { type: 'boolean', short: 'f' },
      'from-beginning': { type: 'boolean' },
      limit: { type: 'string', short: 'n' },
    },
    positionals: { min: 1, max: 1 },
  },
  {
    name: 'task',
    usage: 'mesh task <id> [--cancel [--reason r] | --approve [--gate g] | --deny [--gate g]]',
    summary: 'a task status and causal chain from the orchestrator; cancel, approve or deny it',
    details: [
      'MESH_ORCHESTRATOR_URL (default http://127.0.0.1:8080); MESH_API_TOKEN is sent as bearer',
      'token when set.',
    ],
    options: {
      cancel: { type: 'boolean' },
      approve: { type: 'boolean' },
      deny: { type: 'boolean' },
      gate: { type: 'string' },
      reason: { type: 'string' },
      comment: { type: 'string' },
    },
    positionals: { min: 1, max: 1 },
  },
  {
    name: 'tasks',
    usage: 'mesh tasks [--status s[,s…]] [--older-than 10m] [--limit n]',
    summary: 'the latest tasks, and what each unfinished one waits on; find the stuck ones',
    details: [
      '--status      only tasks in these states: accepted, running, awaiting_approval, completed,',
      '              failed, cancelled (comma-separated)',
      '--older-than  only tasks created longer ago than this (10m, 2h, 1d)',
      '--limit       at most this many (50 by default, 500 at most)',
      'The last line counts every task kept, by status, with the age of the oldest unfinished one.',
      'e.g. mesh tasks --status running,awaiting_approval --older-than 15m',
    ],
    options: {
      status: { type: 'string' },
      'older-than': { type: 'string' },
      limit: { type: 'string', short: 'n' },
    },
    positionals: { min: 0, max: 0 },
  },
  {
    name: 'lag',
    usage: 'mesh lag [--watch] [--interval 2s] [--group g]',
    summary:
      'committed, end, lag and lag in seconds of every consumer group under the prefix, and the work topics no group reads',
    options: {
      watch: { type: 'boolean', short: 'w' },
      interval: { type: 'string' },
      group: { type: 'string' },
    },
    positionals: { min: 0, max: 0 },
  },
  {
    name: 'dlq list',
    usage: 'mesh dlq list [--failure c] [--agent a] [--task t]',
    summary: 'dead letters held by dlq-triage (MESH_DLQ_URL, default http://127.0.0.1:8084)',
    options: {
      failure: { type: 'string' },
      agent: { type: 'string' },
      task: { type: 'string' },
    },
    positionals: { min: 0, max: 0 },
  },
  {
    name: 'dlq replay',
    usage:
      'mesh dlq replay <id> | mesh dlq replay --failure c|--agent a|--task t|--all [--limit n] [--dry-run]',
    summary: 'send a dead letter back to its origin topic; or every waiting one a filter selects',
    details: [
      'with a filter instead of an id: the dead letters still waiting (parked or escalated) that',
      'match all of --failure, --agent and --task (or every one, with --all), oldest first, at',
      'most --limit (100 by default, 1000 at most).  --dry-run lists them and replays nothing.',
    ],
    options: {
      failure: { type: 'string' },
      agent: { type: 'string' },
      task: { type: 'string' },
      all: { type: 'boolean' },
      limit: { type: 'string', short: 'n' },
      'dry-run': { type: 'boolean' },
    },
    positionals: { min: 0, max: 1 },
  },
  {
    name: 'dlq discard',
    usage: 'mesh dlq discard <id> --reason "…"',
    summary: 'close a dead letter without replaying it',
    options: { reason: { type: 'string' } },
    positionals: { min: 1, max: 1 },
  },
  {
    name: 'doctor',
    usage: 'mesh doctor',
    summary: 'try Kafka, the registry and Redis with the current settings; exit 1 if one fails',
    details: [
      'Connects as a service does (TLS, SASL and credentials included) and reports, one line each:',
      'the topics under the prefix, the contracts registered and compatible, and whether Redis',
      'may evict mesh keys. A setting refused names the variable to fix.',
    ],
    options: {},
    positionals: { min: 0, max: 0 },
  },
  {
    name: 'start',
    usage: 'mesh start [--ready-timeout 90s]',
    summary: 'the local stack, topics, schemas and the four services, until Ctrl-C (npm start)',
    options: { 'ready-timeout': { type: 'string' } },
    positionals: { min: 0, max: 0 },
  },
];

export type OptionValues = Record<string, string | boolean | undefined>;

export interface ParsedCommand {
  spec: CommandSpec;
  values: OptionValues;
  positionals: string[];
  json: boolean;
}

export type CommandLine = ParsedCommand | { help: string };

const groups = new Map<string, CommandSpec[]>();
for (const spec of commands) {
  const [head = '', sub] = spec.name.split(' ');
  if (sub !== undefined) groups.set(head, [...(groups.get(head) ?? []), spec]);
}

/** The whole help text, or one command's. */
export function helpText(spec?: CommandSpec): string {
  if (spec !== undefined) {
    return [
      `usage: ${spec.usage}`,
      '',
      spec.summary,
      ...(spec.details ?? []),
      '',
      '--json  machine-readable output on stdout',
    ].join('\n');
  }
  const width = Math.max(...commands.map((c) => c.name.length));
  return [
    'usage: mesh <command> [options] [--json]',
    '',
    ...commands.map((c) => `  ${c.name.padEnd(width)}  ${c.summary}`),
    '',
    'Configuration comes from the MESH_* variables (MESH_KAFKA_BROKERS, MESH_SCHEMA_REGISTRY_URL,',
    'MESH_REDIS_URL, MESH_TOPIC_PREFIX, …); when they are unset, from .env.mesh of `npm run stack -- up`.',
    '`mesh <command> --help` for one command.',
  ].join('\n');
}

/**
 * Parses `argv` (without `node main.ts`).
 * @throws UsageError naming the unknown command, the unknown or malformed option, or the missing argument.
 */
export function parseCommandLine(argv: readonly string[]): CommandLine {
  const [first, second] = argv;
  if (first === undefined || first === 'help' || first === '--help' || first === '-h') {
    const topic = first === 'help' ? argv.slice(1).join(' ') : '';
    const matching = commands.filter((c) => c.name === topic || c.name.startsWith(`${topic} `));
    return {
      help:
        topic === '' || matching.length === 0
          ? helpText()
          : matching.map((spec) => helpText(spec)).join('\n\n'),
    };
  }
  let spec: CommandSpec | undefined;
  let rest: string[];
  const group = groups.get(first);
  if (group !== undefined) {
    const choices = group.map((c) => c.name.split(' ')[1] ?? '').join(', ');
    if (second === undefined || second.startsWith('-')) {
      if (second === '--help' || second === '-h') return { help: helpText() };
      throw new UsageError(`mesh ${first} needs a subcommand: ${choices}`);
    }
    spec = group.find((c) => c.name === `${first} ${second}`);
    if (spec === undefined)
      throw new UsageError(`unknown command "mesh ${first} ${second}"; choose one of: ${choices}`);
    rest = argv.slice(2);
  } else {
    spec = commands.find((c) => c.name === first);
    if (spec === undefined) throw new UsageError(`unknown command "${first}"; see mesh --help`);
    rest = argv.slice(1);
  }
  let parsed: { values: OptionValues; positionals: string[] };
  try {
    parsed = parseArgs({
      args: rest,
      options: { ...common, ...spec.options },
      allowPositionals: true,
      strict: true,
    }) as { values: OptionValues; positionals: string[] };
  } catch (error) {
    throw new UsageError(`${describeParseError(error)} (mesh ${spec.name} --help)`);
  }
  if (parsed.values.help === true) return { help: helpText(spec) };
  const count = parsed.positionals.length;
  if (count < spec.positionals.min) throw new UsageError(`missing argument; usage: ${spec.usage}`);
  if (count > spec.positionals.max)
    throw new UsageError(
      `unexpected argument ${JSON.stringify(parsed.positionals[spec.positionals.max])}; usage: ${spec.usage}`,
    );
  return {
    spec,
    values: parsed.values,
    positionals: parsed.positionals,
    json: parsed.values.json === true,
  };
}

function describeParseError(error: unknown): string {
  const message = error instanceof Error ? error.message : String(error);
  const code = (error as { code?: unknown }).code;
  // "Unknown option '--x'", "Option '-n, --limit <value>' argument missing", …
  const option = /(--[A-Za-z0-9][\w-]*)/.exec(message)?.[1] ?? /'(-\w)/.exec(message)?.[1];
  if (code === 'ERR_PARSE_ARGS_UNKNOWN_OPTION' && option !== undefined)
    return `unknown option ${option}`;
  if (code === 'ERR_PARSE_ARGS_INVALID_OPTION_VALUE' && option !== undefined)
    return message.includes('argument missing')
      ? `option ${option} needs a value`
      : `option ${option} takes no value`;
  return message.split('\n')[0] ?? message;
}

/** A string option, or undefined. */
export function stringOption(values: OptionValues, name: string): string | undefined {
  const value = values[name];
  return typeof value === 'string' ? value : undefined;
}

export function flag(values: OptionValues, name: string): boolean {
  return values[name] === true;
}

/** A positive integer, e.g. `--limit 5`, at most `max`. @throws UsageError. */
export function parsePositiveInt(text: string, option: string, max?: number): number {
  if (!/^[0-9]+$/.test(text.trim()) || Number(text) < 1 || !Number.isSafeInteger(Number(text)))
    throw new UsageError(`${option} must be a positive integer, got ${JSON.stringify(text)}`);
  if (max !== undefined && Number(text) > max) throw new UsageError(`${option} is at most ${max}`);
  return Number(text);
}

/** `2s`, `500ms`, `1m`, or a plain number of seconds. @throws UsageError below `minMs`. */
export function parseInterval(text: string, option: string, minMs = 200): number {
  const trimmed = text.trim();
  let ms: number;
  if (/^[0-9]+(\.[0-9]+)?$/.test(trimmed)) ms = Math.round(Number(trimmed) * 1_000);
  else {
    try {
      ms = parseDuration(trimmed);
    } catch {
      throw new UsageError(
        `${option} must be a duration such as 500ms, 2s or 1m, got ${JSON.stringify(text)}`,
      );
    }
  }
  if (ms < minMs) throw new UsageError(`${option} must be at least ${minMs}ms`);
  return ms;
}

const agentName = /^[a-z0-9][a-z0-9._-]{0,62}$/;

/** `a,b,c` → agent names, each checked. @throws UsageError naming the bad one. */
export function parseAgents(text: string, option = '--agents'): string[] {
  const agents = text
    .split(',')
    .map((a) => a.trim())
    .filter((a) => a !== '');
  if (agents.length === 0) throw new UsageError(`${option} names no agent`);
  for (const agent of agents) {
    if (!agentName.test(agent))
      throw new UsageError(
        `${option}: ${JSON.stringify(agent)} is not an agent name (lower-case letters, digits, . _ -)`,
      );
  }
  return [...new Set(agents)];
}

/** The topics of the contract, by their name under the prefix. */
export const shortTopicNames = [
  'requests',
  'results',
  'stages',
  'outputs',
  'control',
  'escalations',
  'dlq',
] as const;

/**
 * A topic argument as a full topic name: a short name of the contract (`outputs`, `dlq`,
 * `work.echo`, `retry.5s`) is put under the prefix; a name that already carries the prefix, or any
 * other name, is taken as it is (so non-mesh topics can be read too).
 */
export function expandTopic(prefix: string, name: string): string {
  const trimmed = name.trim();
  if (trimmed === '') throw new UsageError('the topic name is empty');
  if (prefix !== '' && trimmed.startsWith(prefix)) return trimmed;
  if (
    (shortTopicNames as readonly string[]).includes(trimmed) ||
    /^(work|retry)\.[A-Za-z0-9._-]+$/.test(trimmed)
  )
    return `${prefix}${trimmed}`;
  return trimmed;
}
