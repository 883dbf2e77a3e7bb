/**
 * `mesh dlq list | replay | discard`: the dead letters held by dlq-triage, through its HTTP API
 * (`GET /v1/dlq?failure=&agent=&task=`, `POST /v1/dlq/:id/replay`, `POST /v1/dlq/:id/discard`).
 */
import { isFailureClass } from '@mesh/errors';
import { stringOption, type ParsedCommand } from '../args.ts';
import type { CliContext } from '../context.ts';
import { UsageError } from '../errors.ts';
import { clock, table, truncate } from '../format.ts';
import { callApi } from '../http.ts';

export interface DeadLetter {
  id: string;
  failure: string;
  detail?: string;
  originTopic?: string;
  agent?: string;
  taskId?: string;
  type?: string;
  at?: string;
  status?: string;
}

const idPattern = /^[A-Za-z0-9._:-]{1,200}$/;

function checkId(id: string | undefined): string {
  if (id === undefined || !idPattern.test(id))
    throw new UsageError(
      `${JSON.stringify(id ?? '')} is not a dead-letter id (letters, digits, . _ : -)`,
    );
  return id;
}

export async function dlqList(ctx: CliContext, parsed: ParsedCommand): Promise<void> {
  const failure = stringOption(parsed.values, 'failure');
  if (failure !== undefined && !isFailureClass(failure))
    throw new UsageError(
      `--failure ${JSON.stringify(failure)} is not a failure class (rate_limited, timeout, context_overflow, invalid_output, schema_violation, malformed_event, hop_limit_exceeded, cycle_detected, budget_exceeded, handler_error)`,
    );
  const query = new URLSearchParams();
  if (failure !== undefined) query.set('failure', failure);
  for (const name of ['agent', 'task'] as const) {
    const value = stringOption(parsed.values, name);
    if (value !== undefined) query.set(name, value);
  }
  const search = query.size > 0 ? `?${query.toString()}` : '';
  const answer = await callApi<{ items?: DeadLetter[] }>(
    ctx,
    'dlq-triage',
    'GET',
    `/v1/dlq${search}`,
  );
  const items = answer?.items ?? [];
  if (ctx.json) {
    ctx.emit({ items });
    return;
  }
  if (items.length === 0) {
    ctx.print('no dead letters');
    return;
  }
  const rows = items.map((item) => [
    item.id,
    clock(item.at),
    item.status ?? '',
    item.failure,
    item.agent ?? '',
    item.taskId ?? '',
    item.type ?? '',
    item.originTopic ?? '',
    truncate(item.detail ?? '', 60),
  ]);
  for (const line of table(
    ['ID', 'AT', 'STATUS', 'FAILURE', 'AGENT', 'TASK', 'TYPE', 'ORIGIN', 'DETAIL'],
    rows,
  ))
    ctx.print(line);
  ctx.print(`${items.length} dead letter${items.length === 1 ? '' : 's'}`);
}

export async function dlqReplay(ctx: CliContext, parsed: ParsedCommand): Promise<void> {
  const id = checkId(parsed.positionals[0]);
  const answer = await callApi<Record<string, unknown> | undefined>(
    ctx,
    'dlq-triage',
    'POST',
    `/v1/dlq/${encodeURIComponent(id)}/replay`,
    {},
  );
  if (ctx.json) ctx.emit(answer ?? { id, status: 'replayed' });
  else
    ctx.print(
      `dead letter ${id} replayed${typeof answer?.topic === 'string' ? ` to ${answer.topic}` : ''}`,
    );
}

export async function dlqDiscard(ctx: CliContext, parsed: ParsedCommand): Promise<void> {
  const id = checkId(parsed.positionals[0]);
  const reason = stringOption(parsed.values, 'reason');
  if (reason === undefined || reason.trim() === '')
    throw new UsageError('mesh dlq discard needs --reason "why it is discarded"');
  const answer = await callApi<Record<string, unknown> | undefined>(
    ctx,
    'dlq-triage',
    'POST',
    `/v1/dlq/${encodeURIComponent(id)}/discard`,
    { reason },
  );
  if (ctx.json) ctx.emit(answer ?? { id, status: 'discarded' });
  else ctx.print(`dead letter ${id} discarded`);
}
