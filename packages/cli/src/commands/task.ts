/**
 * `mesh task <id>`: a task's state and causal chain from the orchestrator's API, and the writes on it
 * (`--cancel`, `--approve`, `--deny`), which the orchestrator turns into events on mesh.control.
 */
import {
  flag,
  parseInterval,
  parsePositiveInt,
  stringOption,
  type ParsedCommand,
} from '../args.ts';
import type { CliContext } from '../context.ts';
import { UsageError } from '../errors.ts';
import { age, clock, summarize, table, truncate } from '../format.ts';
import { callApi } from '../http.ts';

/** The parts of the orchestrator's task state the CLI shows (GET /v1/tasks/:id). */
export interface TaskView {
  id: string;
  status: string;
  template?: string;
  createdAt?: string;
  updatedAt?: string;
  deadline?: string;
  budget?: Record<string, unknown>;
  usage?: { promptTokens?: number; completionTokens?: number; costUsd?: number; steps?: number };
  plan?: {
    id: string;
    gate?: { id: string; prompt?: string };
    nodes?: { id: string; agent: string }[];
  }[];
  stages?: Record<
    string,
    { status: string; startedAt?: string; endedAt?: string; failures?: unknown }
  >;
  output?: unknown;
  failure?: { reason: string; detail: string };
  [more: string]: unknown;
}

/** One event of the causal chain (GET /v1/tasks/:id/events). */
export interface ChainEvent {
  id: string;
  type: string;
  time?: string;
  source?: string;
  topic?: string;
  causationid?: string;
  hopcount?: number;
  agent?: string;
  agentpath?: string;
  meshattempt?: number;
  detail?: string;
}

const idPattern = /^[A-Za-z0-9._:-]{1,200}$/;

/**
 * The chain as an indented tree: each event under the event that caused it, in the order the
 * orchestrator recorded them; events whose cause is not in the chain start a branch of their own.
 */
export function chainLines(events: ChainEvent[]): string[] {
  const ids = new Set(events.map((e) => e.id));
  const children = new Map<string, ChainEvent[]>();
  const roots: ChainEvent[] = [];
  for (const event of events) {
    const parent = event.causationid;
    if (parent !== undefined && parent !== event.id && ids.has(parent)) {
      const list = children.get(parent) ?? [];
      list.push(event);
      children.set(parent, list);
    } else roots.push(event);
  }
  const lines: string[] = [];
  const seen = new Set<string>();
  const visit = (event: ChainEvent, depth: number): void => {
    if (seen.has(event.id)) return;
    seen.add(event.id);
    const facts = [
      event.agent === undefined ? undefined : `→ ${event.agent}`,
      event.hopcount === undefined ? undefined : `hop ${event.hopcount}`,
      event.meshattempt === undefined || event.meshattempt <= 1
        ? undefined
        : `attempt ${event.meshattempt}`,
      event.detail === undefined ? undefined : truncate(event.detail, 80),
    ].filter((f) => f !== undefined);
    lines.push(
      `${clock(event.time).padEnd(12)} ${'  '.repeat(depth)}${event.type}${facts.length > 0 ? `  ${facts.join(', ')}` : ''}`,
    );
    for (const child of children.get(event.id) ?? []) visit(child, depth + 1);
  };
  for (const root of roots) visit(root, 0);
  return lines;
}

export function taskLines(task: TaskView, events: ChainEvent[]): string[] {
  const usage = task.usage ?? {};
  const lines = [
    `task ${task.id}  ${task.status.toUpperCase()}${task.template ? `  template ${task.template}` : ''}`,
    `created ${task.createdAt ?? '?'}  updated ${task.updatedAt ?? '?'}${task.deadline ? `  deadline ${task.deadline}` : ''}`,
    `usage: ${usage.steps ?? 0} steps, ${(usage.promptTokens ?? 0) + (usage.completionTokens ?? 0)} tokens, $${(usage.costUsd ?? 0).toFixed(4)}${task.budget && Object.keys(task.budget).length > 0 ? `  budget ${summarize(task.budget, 80)}` : ''}`,
  ];
  const stages = task.stages ?? {};
  const order = task.plan?.map((s) => s.id) ?? Object.keys(stages);
  if (order.length > 0) {
    lines.push('', 'stages:');
    const rows = order.map((id) => {
      const plan = task.plan?.find((s) => s.id === id);
      const what = plan?.gate
        ? `gate ${plan.gate.id}${plan.gate.prompt ? `: ${plan.gate.prompt}` : ''}`
        : (plan?.nodes ?? [])
            .map((n) => (n.id === n.agent ? n.agent : `${n.id}=${n.agent}`))
            .join(', ');
      return [`  ${id}`, stages[id]?.status ?? 'pending', truncate(what, 70)];
    });
    lines.push(...table(['  STAGE', 'STATUS', 'NODES'], rows).slice(1));
  }
  if (task.failure !== undefined)
    lines.push('', `failure: ${task.failure.reason} — ${task.failure.detail}`);
  if (task.output !== undefined) lines.push('', `output: ${summarize(task.output, 300)}`);
  if (events.length > 0)
    lines.push('', `causal chain (${events.length} events):`, ...chainLines(events));
  return lines;
}

export async function task(ctx: CliContext, parsed: ParsedCommand): Promise<void> {
  const { values } = parsed;
  const id = parsed.positionals[0] ?? '';
  if (!idPattern.test(id))
    throw new UsageError(`${JSON.stringify(id)} is not a task id (letters, digits, . _ : -)`);
  const actions = (['cancel', 'approve', 'deny'] as const).filter((a) => flag(values, a));
  if (actions.length > 1) throw new UsageError(`choose one of --${actions.join(', --')}`);
  const action = actions[0];
  const gate = stringOption(values, 'gate');
  const reason = stringOption(values, 'reason');
  const comment = stringOption(values, 'comment');
  if (gate !== undefined && action !== 'approve' && action !== 'deny')
    throw new UsageError('--gate goes with --approve or --deny');
  if (reason !== undefined && action !== 'cancel')
    throw new UsageError('--reason goes with --cancel');
  if (comment !== undefined && action !== 'approve' && action !== 'deny')
    throw new UsageError('--comment goes with --approve or --deny');
  const path = `/v1/tasks/${encodeURIComponent(id)}`;

  if (action === 'cancel') {
    const answer = await callApi<{ status?: string } | undefined>(
      ctx,
      'orchestrator',
      'POST',
      `${path}/cancel`,
      {
        ...(reason === undefined ? {} : { reason }),
        by: 'mesh-cli',
      },
    );
    if (ctx.json) ctx.emit(answer);
    else ctx.print(`task ${id}: cancel requested (${answer?.status ?? 'cancelling'})`);
    return;
  }
  if (action === 'approve' || action === 'deny') {
    const answer = await callApi<{ gateId?: string } | undefined>(
      ctx,
      'orchestrator',
      'POST',
      `${path}/${action}`,
      {
        ...(gate === undefined ? {} : { gateId: gate }),
        ...(comment === undefined ? {} : { comment }),
        by: 'mesh-cli',
      },
    );
    if (ctx.json) ctx.emit(answer);
    else
      ctx.print(
        `task ${id}: gate ${answer?.gateId ?? gate ?? '?'} ${action === 'approve' ? 'approved' : 'denied'}`,
      );
    return;
  }

  const [state, chain] = await Promise.all([
    callApi<TaskView>(ctx, 'orchestrator', 'GET', path),
    callApi<{ events?: ChainEvent[] }>(ctx, 'orchestrator', 'GET', `${path}/events`),
  ]);
  const events = chain?.events ?? [];
  if (ctx.json) {
    ctx.emit({ task: state, events });
    return;
  }
  for (const line of taskLines(state, events)) ctx.print(line);
}

/** One task of `GET /v1/tasks`. */
export interface TaskSummary {
  id: string;
  status: string;
  template?: string;
  createdAt?: string;
  failure?: { reason: string; detail: string };
  waitingOn?: { stage: string; status: string; since?: string; agents?: string[]; gate?: string }[];
}

/** What a task waits on, for a table cell: `research [research, summarize] 12m; review [gate review] 3m`. */
export function waitingText(summary: TaskSummary, now = Date.now()): string {
  return (summary.waitingOn ?? [])
    .map((w) => {
      const what = w.gate === undefined ? (w.agents ?? []).join(', ') : `gate ${w.gate}`;
      const since = w.since === undefined ? '' : ` ${age(now - Date.parse(w.since))}`;
      return `${w.stage} [${what}]${since}`;
    })
    .join('; ');
}

export async function tasks(ctx: CliContext, parsed: ParsedCommand): Promise<void> {
  const query = new URLSearchParams();
  const status = stringOption(parsed.values, 'status');
  // The orchestrator checks the statuses and names the ones it knows.
  if (status !== undefined) query.set('status', status);
  const olderThan = stringOption(parsed.values, 'older-than');
  if (olderThan !== undefined)
    query.set('olderThan', `${parseInterval(olderThan, '--older-than', 0)}ms`);
  const limit = stringOption(parsed.values, 'limit');
  if (limit !== undefined) query.set('limit', String(parsePositiveInt(limit, '--limit', 500)));
  const search = query.size > 0 ? `?${query.toString()}` : '';
  const answer = await callApi<{ tasks?: TaskSummary[]; byStatus?: StatusCounts }>(
    ctx,
    'orchestrator',
    'GET',
    `/v1/tasks${search}`,
  );
  const items = answer?.tasks ?? [];
  if (ctx.json) {
    ctx.emit({
      tasks: items,
      ...(answer?.byStatus === undefined ? {} : { byStatus: answer.byStatus }),
    });
    return;
  }
  const now = Date.now();
  const kept = answer?.byStatus === undefined ? undefined : statusLine(answer.byStatus, now);
  if (items.length === 0) {
    ctx.print('no tasks');
    if (kept !== undefined) ctx.print(kept);
    return;
  }
  const rows = items.map((t) => [
    t.id,
    t.status,
    t.template ?? '',
    t.createdAt === undefined ? '' : age(now - Date.parse(t.createdAt)),
    t.failure === undefined
      ? waitingText(t, now)
      : truncate(`${t.failure.reason}: ${t.failure.detail}`, 80),
  ]);
  for (const line of table(['ID', 'STATUS', 'TEMPLATE', 'AGE', 'WAITING ON / FAILURE'], rows))
    ctx.print(line);
  ctx.print(`${items.length} task${items.length === 1 ? '' : 's'}`);
  if (kept !== undefined) ctx.print(kept);
}

/** Every task the orchestrator keeps, by status (`GET /v1/tasks`, `byStatus`). */
export type StatusCounts = Record<string, { count: number; oldestCreatedAt?: string }>;

/** `kept: running 3 (oldest 2h) · awaiting_approval 1 (oldest 5m) · completed 120`: statuses with tasks. */
export function statusLine(counts: StatusCounts, now = Date.now()): string {
  const parts = Object.entries(counts)
    .filter(([, { count }]) => count > 0)
    .map(([status, { count, oldestCreatedAt }]) =>
      oldestCreatedAt === undefined || !unfinishedStatuses.has(status)
        ? `${status} ${count}`
        : `${status} ${count} (oldest ${age(now - Date.parse(oldestCreatedAt))})`,
    );
  return `kept: ${parts.length === 0 ? 'none' : parts.join(' · ')}`;
}

const unfinishedStatuses = new Set(['accepted', 'running', 'awaiting_approval']);
