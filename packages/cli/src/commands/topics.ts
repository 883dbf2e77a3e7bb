/** `mesh topics init`: every topic of the contract under the prefix, created when missing. */
import { variables } from '@mesh/config';
import { topicSpecs } from '@mesh/runtime';
import { parseAgents, stringOption, type ParsedCommand } from '../args.ts';
import type { CliContext } from '../context.ts';
import { table } from '../format.ts';

/** The worker's agents when MESH_WORKER_AGENTS is unset: its declared default. */
export const defaultAgents: string[] = parseAgents(variables.MESH_WORKER_AGENTS.default);

/** `--agents`, else MESH_WORKER_AGENTS (the agents the worker runs), else its default. */
export function agentsOf(ctx: CliContext, option: string | undefined): string[] {
  if (option !== undefined) return parseAgents(option);
  const fromEnv = ctx.config.mesh.env.MESH_WORKER_AGENTS;
  return fromEnv === undefined ? defaultAgents : parseAgents(fromEnv, 'MESH_WORKER_AGENTS');
}

export interface TopicsReport {
  created: string[];
  existing: string[];
}

/** Creates the missing topics; existing ones are left as they are. @throws CliError. */
export async function initTopics(ctx: CliContext, agents: string[]): Promise<TopicsReport> {
  const specs = topicSpecs(ctx.config.mesh, agents);
  const admin = await ctx.admin();
  const created = await ctx.kafkaStep(
    admin.ensureTopics(specs),
    Math.max(30_000, ctx.config.timeoutMs),
  );
  const fresh = new Set(created);
  return {
    created,
    existing: specs.map((s) => s.topic).filter((topic) => !fresh.has(topic)),
  };
}

export async function topicsInit(ctx: CliContext, parsed: ParsedCommand): Promise<void> {
  const agents = agentsOf(ctx, stringOption(parsed.values, 'agents'));
  const report = await initTopics(ctx, agents);
  if (ctx.json) {
    ctx.emit({ prefix: ctx.config.mesh.topicPrefix, agents, ...report });
    return;
  }
  const { partitions, replicationFactor } = ctx.config.mesh;
  const rows = [
    ...report.created.map((topic) => ['created', topic]),
    ...report.existing.map((topic) => ['exists', topic]),
  ];
  for (const line of table(['STATUS', 'TOPIC'], rows)) ctx.print(line);
  ctx.print(
    `${report.created.length} created (${partitions} partitions, replication ${replicationFactor}), ${report.existing.length} already there`,
  );
}
