/**
 * Built-in agents that need no model: `echo`, a research set (`research`, `summarize`,
 * `fact-check`, `draft`) and a `planner` for templates that plan at run time. Their outputs are
 * plausible, structured and deterministic — the same input always gives the same output, so a
 * redelivered subtask yields the same result and tests can assert on it. Their input is the
 * orchestrator's `{ task, previous: { <stage>: { <node>: output } }, ...node input }`.
 */
import { createHash } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Agent, AgentContext, AgentResult } from './types.ts';

export const builtinAgentNames = [
  'echo',
  'research',
  'summarize',
  'fact-check',
  'draft',
  'planner',
] as const;
export type BuiltinAgentName = (typeof builtinAgentNames)[number];

export interface BuiltinOptions {
  /** Simulated latency of every run (MESH_AGENT_DELAY); aborted with the subtask. */
  delayMs?: number;
}

type Json = Record<string, unknown>;

const aspects = [
  'its history',
  'the economics involved',
  'recent measurements',
  'open questions',
  'public policy',
  'the underlying mechanisms',
  'regional differences',
  'long-term trends',
  'expert disagreement',
  'practical applications',
];
const observations = [
  'show a consistent pattern across independent studies',
  'have changed markedly over the last decade',
  'are better understood than popular accounts suggest',
  'depend strongly on local conditions',
  'are still debated among specialists',
  'matter more than is usually assumed',
  'are measured with growing precision',
];
const verdicts = ['supported', 'supported', 'unverified', 'disputed'] as const;

function hashOf(text: string): number {
  return createHash('sha256').update(text).digest().readUInt32BE(0);
}

function asString(value: unknown): string | undefined {
  return typeof value === 'string' && value.trim() !== '' ? value.trim() : undefined;
}

function asObject(value: unknown): Json | undefined {
  return typeof value === 'object' && value !== null && !Array.isArray(value)
    ? (value as Json)
    : undefined;
}

function capitalise(text: string): string {
  return text.charAt(0).toUpperCase() + text.slice(1);
}

function slug(text: string): string {
  return (
    text
      .toLowerCase()
      .replace(/[^a-z0-9]+/g, '-')
      .replace(/^-+|-+$/g, '')
      .slice(0, 60) || 'topic'
  );
}

/** The subject of the subtask: the node's own `topic`, else the task's topic, question or prompt. */
export function topicOf(input: Json): string {
  const task = asObject(input.task) ?? {};
  for (const candidate of [
    input.topic,
    input.question,
    task.topic,
    task.question,
    task.prompt,
    task.query,
    task.text,
    input.text,
  ]) {
    const text = asString(candidate);
    if (text !== undefined) return text.length > 200 ? `${text.slice(0, 197)}...` : text;
  }
  return 'the subject';
}

/** Every output of earlier stages, in stage and node order. */
function previousOutputs(input: Json): Json[] {
  const previous = asObject(input.previous) ?? {};
  const outputs: Json[] = [];
  for (const stage of Object.keys(previous).sort()) {
    const nodes = asObject(previous[stage]) ?? {};
    for (const node of Object.keys(nodes).sort()) {
      const output = asObject(nodes[node]);
      if (output !== undefined) outputs.push(output);
    }
  }
  return outputs;
}

function stringsOf(value: unknown): string[] {
  return Array.isArray(value) ? value.map(asString).filter((s) => s !== undefined) : [];
}

function unique(items: string[], max: number): string[] {
  return [...new Set(items)].slice(0, max);
}

function research(input: Json): Json {
  const topic = topicOf(input);
  const focus = asString(input.focus) ?? asString(input.angle) ?? asString(input.aspect);
  const h = hashOf(`${topic}\u0000${focus ?? ''}`);
  const picked = [0, 1, 2].map((i) => aspects[(h + i * 3) % aspects.length] ?? 'its context');
  const findings = picked.map(
    (aspect, i) =>
      `${capitalise(topic)}${focus === undefined ? '' : ` (${focus})`}: ${aspect} ${observations[(h >>> (i + 2)) % observations.length] ?? 'matter'}.`,
  );
  const sources = picked.map(
    (aspect, i) => `https://example.org/${slug(topic)}/${slug(aspect)}-${((h >>> i) % 900) + 100}`,
  );
  return { topic, findings, sources };
}

function summarize(input: Json): Json {
  const topic = topicOf(input);
  const outputs = previousOutputs(input);
  const material = outputs.flatMap((o) => [
    ...stringsOf(o.findings),
    ...stringsOf(o.points),
    ...(asString(o.summary) === undefined ? [] : [asString(o.summary) as string]),
  ]);
  const own = asString(input.text);
  const points = unique(material.length > 0 ? material : own === undefined ? [] : [own], 5);
  const sources = unique(
    outputs.flatMap((o) => stringsOf(o.sources)),
    20,
  ).length;
  const summary =
    points.length === 0
      ? `Nothing to summarise about ${topic} yet.`
      : `${capitalise(topic)}: ${points.length} key point${points.length === 1 ? '' : 's'} drawn from ${outputs.length || 1} input${outputs.length > 1 ? 's' : ''}${sources > 0 ? ` citing ${sources} source${sources === 1 ? '' : 's'}` : ''}. ${points[0]}`;
  return { summary, points };
}

function factCheck(input: Json): Json {
  const topic = topicOf(input);
  const material = previousOutputs(input).flatMap((o) => [
    ...stringsOf(o.points),
    ...stringsOf(o.findings),
  ]);
  const own = stringsOf(input.claims);
  const statements = unique(own.length > 0 ? own : material.length > 0 ? material : [topic], 5);
  const claims = statements.map((claim) => {
    const h = hashOf(claim);
    return {
      claim,
      verdict: verdicts[h % verdicts.length] ?? 'unverified',
      confidence: Math.round((0.55 + (h % 41) / 100) * 100) / 100,
    };
  });
  return { claims };
}

function draft(input: Json): Json {
  const topic = topicOf(input);
  const outputs = previousOutputs(input);
  const summary = outputs.map((o) => asString(o.summary)).find((s) => s !== undefined);
  const points = unique(
    outputs.flatMap((o) => [...stringsOf(o.points), ...stringsOf(o.findings)]),
    6,
  );
  const claims = outputs.flatMap((o) =>
    Array.isArray(o.claims) ? o.claims.map(asObject).filter((c) => c !== undefined) : [],
  );
  const sources = unique(
    outputs.flatMap((o) => stringsOf(o.sources)),
    10,
  );
  const paragraphs = [
    summary ?? `This brief covers ${topic}.`,
    ...(points.length > 0 ? [points.map((p) => `- ${p}`).join('\n')] : []),
  ];
  if (claims.length > 0) {
    const count = (verdict: string): number => claims.filter((c) => c.verdict === verdict).length;
    paragraphs.push(
      `Fact check: ${claims.length} claim${claims.length === 1 ? '' : 's'} reviewed — ${count('supported')} supported, ${count('unverified')} unverified, ${count('disputed')} disputed.`,
    );
  }
  if (sources.length > 0) paragraphs.push(`Sources:\n${sources.map((s) => `- ${s}`).join('\n')}`);
  return { title: `${capitalise(topic)}: a brief`, body: paragraphs.join('\n\n') };
}

/**
 * A research plan for the task: one `research` node per angle (the task's `angles`, 1 to 5 of them,
 * else two picked from its topic), then `summarize` and `fact-check` side by side, then `draft`.
 * A task that brings its own `plan` gets it back unchanged: the orchestrator validates whatever a
 * planner returns, so this is also how a caller (or a test) hands the mesh a plan of its own.
 */
function planner(input: Json): Json {
  const task = asObject(input.task) ?? {};
  if (task.plan !== undefined) return asObject(task.plan) ?? { stages: task.plan };
  const topic = topicOf(input);
  const given = unique(stringsOf(task.angles), 5);
  const h = hashOf(topic);
  const angles =
    given.length > 0
      ? given
      : unique(
          [
            aspects[h % aspects.length] ?? 'background',
            aspects[(h + 5) % aspects.length] ?? 'evidence',
          ],
          2,
        );
  return {
    stages: [
      {
        id: 'gather',
        dependsOn: [],
        nodes: angles.map((focus, i) => ({
          id: `research-${i + 1}`,
          agent: 'research',
          input: { focus },
        })),
      },
      {
        id: 'review',
        dependsOn: ['gather'],
        nodes: [
          { id: 'summary', agent: 'summarize' },
          { id: 'check', agent: 'fact-check' },
        ],
      },
      { id: 'write', dependsOn: ['review'], nodes: [{ id: 'draft', agent: 'draft' }] },
    ],
  };
}

const logic: Record<BuiltinAgentName, (input: Json) => Json> = {
  echo: (input) => input,
  research,
  summarize,
  'fact-check': factCheck,
  draft,
  planner,
};

export function isBuiltinAgent(name: string): name is BuiltinAgentName {
  return (builtinAgentNames as readonly string[]).includes(name);
}

/** The built-in agent of `name`. Built-ins use no model: their usage is zero tokens. */
export function builtinAgent(name: BuiltinAgentName, options: BuiltinOptions = {}): Agent {
  const run = logic[name];
  return async (input: Json, ctx: AgentContext): Promise<AgentResult> => {
    if ((options.delayMs ?? 0) > 0) await sleep(options.delayMs, undefined, { signal: ctx.signal });
    return { output: run(input), usage: { promptTokens: 0, completionTokens: 0, costUsd: 0 } };
  };
}
