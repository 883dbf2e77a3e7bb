/**
 * What a decided stage publishes, as pure functions of its spec, its outcomes and the decision:
 * the `io.mesh.stage.completed` data and, for the final stage, the task's outcome
 * (`io.mesh.task.completed` with the synthesised output, or `io.mesh.task.failed`).
 */
import { formatBytes } from '@mesh/runtime';
import {
  quorumOf,
  sumUsage,
  type Decision,
  type JoinSpec,
  type Outcomes,
  type StageStatus,
  type Usage,
} from './join.ts';

export const eventTypes = {
  subtaskCompleted: 'io.mesh.subtask.completed',
  subtaskFailed: 'io.mesh.subtask.failed',
  stageCompleted: 'io.mesh.stage.completed',
  taskCompleted: 'io.mesh.task.completed',
  taskFailed: 'io.mesh.task.failed',
} as const;

export interface StageRef {
  taskId: string;
  stageId: string;
}

export interface StageFailure {
  failure: string;
  detail?: string;
}

/** The data of `io.mesh.stage.completed` (schemas/io.mesh.stage.completed.json). */
export interface StageCompletedData {
  taskId: string;
  stageId: string;
  status: StageStatus;
  results: Record<string, Record<string, unknown>>;
  failures: Record<string, StageFailure>;
  usage: Usage;
  final: boolean;
}

export type TaskOutcome =
  | {
      type: typeof eventTypes.taskCompleted;
      data: {
        taskId: string;
        output: Record<string, unknown>;
        status: 'completed' | 'partial';
        usage: Usage;
        template?: string;
      };
    }
  | {
      type: typeof eventTypes.taskFailed;
      data: {
        taskId: string;
        reason: 'stage_failed';
        detail: string;
        stageId: string;
        usage: Usage;
      };
    };

type Decided = Exclude<Decision, { status: 'undecided' }>;

const maxDetail = 2_000;
/** The contract's pattern for a template name on `io.mesh.task.completed`. */
const templatePattern = /^[a-z0-9][a-z0-9._-]{0,62}$/;

function clip(text: string, max = maxDetail): string {
  return text.length <= max ? text : `${text.slice(0, max - 3)}...`;
}

/**
 * The stage's joined results: the output of every node that succeeded, the failure of every node
 * that failed (and a `timeout` for each node a deadline left without an outcome), the summed usage
 * of all the outcomes that counted, in the order of the spec's nodes.
 */
export function stageCompletedData(
  ref: StageRef,
  spec: JoinSpec,
  outcomes: Outcomes,
  decision: Decided,
): StageCompletedData {
  const results: Record<string, Record<string, unknown>> = {};
  const failures: Record<string, StageFailure> = {};
  const usages: (Usage | undefined)[] = [];
  for (const node of spec.nodes) {
    const outcome = Object.hasOwn(outcomes, node) ? outcomes[node] : undefined;
    if (outcome === undefined) continue;
    usages.push(outcome.usage);
    if (outcome.ok) results[node] = outcome.output;
    else failures[node] = { failure: outcome.failure, detail: clip(outcome.detail) };
  }
  const deadline = spec.deadline === undefined ? '' : ` ${spec.deadline}`;
  for (const node of decision.timedOut)
    failures[node] = {
      failure: 'timeout',
      detail: `no result before the stage deadline${deadline}`,
    };
  return {
    taskId: ref.taskId,
    stageId: ref.stageId,
    status: decision.status,
    results,
    failures,
    usage: sumUsage(usages),
    final: spec.final === true,
  };
}

/**
 * The task output of the final stage. `merge` (the default) is a structured merge, one key per node
 * that succeeded. `concat` also joins, in node order, the top-level string fields of every output
 * into `text` (blank-line separated), and keeps the per-node outputs under `nodes`.
 */
export function synthesise(
  spec: JoinSpec,
  results: Record<string, Record<string, unknown>>,
): Record<string, unknown> {
  const merged: Record<string, Record<string, unknown>> = {};
  for (const node of spec.nodes) {
    const output = results[node];
    if (output !== undefined) merged[node] = output;
  }
  if (spec.synthesis !== 'concat') return merged;
  const texts: string[] = [];
  for (const output of Object.values(merged))
    for (const value of Object.values(output)) if (typeof value === 'string') texts.push(value);
  return { text: texts.join('\n\n'), nodes: merged };
}

/**
 * Each failed node with its failure class and, with `why`, the detail it gave: the reader of a
 * failed task needs both. Nodes timed out by a deadline share one reason, given once by the caller.
 */
function describeFailures(stage: StageCompletedData, why = true): string {
  return Object.entries(stage.failures)
    .map(([node, { failure, detail }]) =>
      why && detail !== undefined && detail !== ''
        ? `${node} (${failure}: ${detail})`
        : `${node} (${failure})`,
    )
    .join(', ');
}

/** Why the stage failed, naming the nodes that failed or gave no result; at most 2000 characters. */
export function failureDetail(
  spec: JoinSpec,
  stage: StageCompletedData,
  decision: Decided,
): string {
  const failed = describeFailures(stage, decision.reason !== 'deadline');
  const head = `stage ${stage.stageId} failed`;
  switch (decision.reason) {
    case 'quorum_unreachable':
      return clip(
        `${head}: a quorum of ${quorumOf(spec)} of ${spec.nodes.length} can no longer be reached; failed: ${failed}`,
      );
    case 'all_failed':
      return clip(`${head}: every node failed: ${failed}`);
    case 'deadline':
      return clip(
        `${head}: deadline ${spec.deadline ?? ''} passed without ${spec.onTimeout === 'partial' ? 'any result' : 'the join being met'}; failed or missing: ${failed}`,
      );
    default:
      return clip(`${head}: ${failed}`);
  }
}

/** What a decided stage publishes: its stage data and, for the final stage, the task's outcome. */
export interface StageEvents {
  decision: Decided;
  stage: StageCompletedData;
  outcome?: TaskOutcome;
}

/**
 * What a decided stage publishes, each event's data at most `limit` bytes (`sizeOf`, as the codec
 * encodes it). Joined results too large for one event, or a task output made of them, fail the
 * stage instead (`results_too_large`): every node that succeeded is failed as `invalid_output` with
 * the size of its output, so that the task ends with that reason rather than waiting for a stage
 * event that Kafka refuses every time it is published.
 */
export function stageEvents(
  ref: StageRef,
  spec: JoinSpec,
  outcomes: Outcomes,
  decision: Decided,
  limit: number,
  sizeOf: (data: unknown) => number,
): StageEvents {
  const stage = stageCompletedData(ref, spec, outcomes, decision);
  const outcome = spec.final === true ? taskOutcome(spec, stage, decision) : undefined;
  const largest = Math.max(sizeOf(stage), outcome === undefined ? 0 : sizeOf(outcome.data));
  if (largest <= limit)
    return outcome === undefined ? { decision, stage } : { decision, stage, outcome };
  const failures: Record<string, StageFailure> = {};
  const why = `the stage's results come to ${formatBytes(largest)}, more than the ${formatBytes(limit)} one event can carry`;
  for (const node of spec.nodes) {
    if (Object.hasOwn(stage.results, node))
      failures[node] = {
        failure: 'invalid_output',
        detail: `output of ${formatBytes(sizeOf(stage.results[node]))}; ${why}`,
      };
    else if (Object.hasOwn(stage.failures, node))
      failures[node] = stage.failures[node] as StageFailure;
  }
  const tooLarge: Decided = { status: 'failed', reason: 'results_too_large', timedOut: [] };
  const failed: StageCompletedData = {
    ...stage,
    status: 'failed',
    results: {},
    failures,
  };
  return spec.final === true
    ? { decision: tooLarge, stage: failed, outcome: taskOutcome(spec, failed, tooLarge) }
    : { decision: tooLarge, stage: failed };
}

/** The task's outcome when the final stage is decided: completed (or partial), or failed. */
export function taskOutcome(
  spec: JoinSpec,
  stage: StageCompletedData,
  decision: Decided,
): TaskOutcome {
  if (stage.status === 'failed') {
    return {
      type: eventTypes.taskFailed,
      data: {
        taskId: stage.taskId,
        reason: 'stage_failed',
        detail: failureDetail(spec, stage, decision),
        stageId: stage.stageId,
        usage: stage.usage,
      },
    };
  }
  return {
    type: eventTypes.taskCompleted,
    data: {
      taskId: stage.taskId,
      output: synthesise(spec, stage.results),
      status: stage.status,
      usage: stage.usage,
      ...(spec.template !== undefined && templatePattern.test(spec.template)
        ? { template: spec.template }
        : {}),
    },
  };
}
