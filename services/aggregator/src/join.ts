/**
 * The join rules of a stage (docs/services.md, "A task, step by step", point 5), as pure functions:
 * given a stage's join spec, the outcomes of its nodes so far and whether its deadline has passed,
 * `decide` says whether the stage is still open or how it ended. No I/O here: the aggregator keeps
 * the outcomes in Redis and calls these under its atomic close.
 */

/** The join spec every assignment carries in `data.stage` and the worker copies into its result. */
export interface JoinSpec {
  nodes: string[];
  join: 'all' | 'quorum' | 'first';
  /** Successes needed by a `quorum` join; a majority of `nodes` when unset. */
  quorum?: number;
  /** RFC 3339 time at which the stage times out. */
  deadline?: string;
  /** What a deadline yields: `partial` (with at least one success) or `fail` (the default). */
  onTimeout?: 'partial' | 'fail';
  /** The last stage of the plan: its join also ends the task. */
  final?: boolean;
  template?: string;
  /** How the final stage's outputs become the task output (default `merge`). */
  synthesis?: 'merge' | 'concat';
}

/** Token and cost usage, as `io.mesh.subtask.completed` and `io.mesh.stage.completed` carry it. */
export interface Usage {
  promptTokens?: number;
  completionTokens?: number;
  costUsd?: number;
  steps?: number;
}

export type NodeOutcome =
  | { ok: true; output: Record<string, unknown>; usage?: Usage }
  | { ok: false; failure: string; detail: string; usage?: Usage };

export type Outcomes = Readonly<Record<string, NodeOutcome>>;

export type StageStatus = 'completed' | 'partial' | 'failed';

/** Why a stage ended; stable strings, used in logs and in the detail of a failed task. */
export type DecisionReason =
  | 'all_succeeded'
  | 'node_failed'
  | 'quorum_reached'
  | 'quorum_unreachable'
  | 'first_succeeded'
  | 'all_failed'
  | 'deadline'
  /** Decided otherwise, but its events would be more than one event can carry (`outcome.ts`). */
  | 'results_too_large';

export type Decision =
  | { status: 'undecided' }
  | {
      status: StageStatus;
      reason: DecisionReason;
      /** Nodes without an outcome when a deadline decided the stage. */
      timedOut: string[];
    };

/** The spec of a result that carries none: a single-node stage joined by that node alone. */
export function singleNodeSpec(nodeId: string): JoinSpec {
  return { nodes: [nodeId], join: 'all', final: false };
}

/** Successes a `quorum` join needs: `quorum` (a majority by default), at most the node count. */
export function quorumOf(spec: JoinSpec): number {
  const wanted = spec.quorum ?? Math.floor(spec.nodes.length / 2) + 1;
  return Math.max(1, Math.min(wanted, spec.nodes.length));
}

/** The deadline in ms since the epoch, or undefined when the spec has none (or an unreadable one). */
export function deadlineMs(spec: JoinSpec): number | undefined {
  if (spec.deadline === undefined) return undefined;
  const ms = Date.parse(spec.deadline);
  return Number.isNaN(ms) ? undefined : ms;
}

export function deadlinePassed(spec: JoinSpec, now: number): boolean {
  const due = deadlineMs(spec);
  return due !== undefined && now >= due;
}

export type Admission = 'new' | 'duplicate' | 'unknown_node';

/**
 * Whether an outcome of `nodeId` counts: the first outcome of a node wins, so a later one
 * (a redelivery, a retried subtask that also succeeded) is a duplicate; a node outside the spec's
 * `nodes` never counts.
 */
export function admit(spec: JoinSpec, outcomes: Outcomes, nodeId: string): Admission {
  if (!spec.nodes.includes(nodeId)) return 'unknown_node';
  return Object.hasOwn(outcomes, nodeId) ? 'duplicate' : 'new';
}

/**
 * Decides a stage from the outcomes of its nodes (outcomes of nodes outside `nodes` are ignored).
 *
 * - `all`: completed when every node succeeded; failed as soon as one failed;
 * - `quorum`: completed when `quorumOf(spec)` succeeded; failed when that can no longer be reached;
 * - `first`: completed at the first success; failed when all failed;
 * - still open when `deadlineExpired`: partial when `onTimeout` is `partial` and at least one node
 *   succeeded, else failed.
 *
 * A rule that is met wins over the deadline, so a result that completes the stage just after its
 * deadline (before the timer closed it) still completes it.
 */
export function decide(spec: JoinSpec, outcomes: Outcomes, deadlineExpired: boolean): Decision {
  let succeeded = 0;
  let failed = 0;
  const pending: string[] = [];
  for (const node of spec.nodes) {
    const outcome = Object.hasOwn(outcomes, node) ? outcomes[node] : undefined;
    if (outcome === undefined) pending.push(node);
    else if (outcome.ok) succeeded += 1;
    else failed += 1;
  }
  const total = spec.nodes.length;
  const ended = (status: StageStatus, reason: DecisionReason): Decision => ({
    status,
    reason,
    timedOut: [],
  });
  switch (spec.join) {
    case 'all':
      if (failed > 0) return ended('failed', 'node_failed');
      if (succeeded === total) return ended('completed', 'all_succeeded');
      break;
    case 'quorum': {
      const needed = quorumOf(spec);
      if (succeeded >= needed) return ended('completed', 'quorum_reached');
      if (succeeded + pending.length < needed) return ended('failed', 'quorum_unreachable');
      break;
    }
    case 'first':
      if (succeeded > 0) return ended('completed', 'first_succeeded');
      if (failed === total) return ended('failed', 'all_failed');
      break;
  }
  if (!deadlineExpired) return { status: 'undecided' };
  return {
    status: spec.onTimeout === 'partial' && succeeded > 0 ? 'partial' : 'failed',
    reason: 'deadline',
    timedOut: pending,
  };
}

const usageKeys = ['promptTokens', 'completionTokens', 'costUsd', 'steps'] as const;

/**
 * The sum of the usages given; a key appears when at least one usage has it. Costs are rounded to
 * 1e-9 USD so that float sums do not grow noise digits.
 */
export function sumUsage(usages: Iterable<Usage | undefined>): Usage {
  const sum: Usage = {};
  for (const usage of usages) {
    if (usage === undefined) continue;
    for (const key of usageKeys) {
      const value = usage[key];
      if (typeof value === 'number') sum[key] = (sum[key] ?? 0) + value;
    }
  }
  if (sum.costUsd !== undefined) sum.costUsd = Math.round(sum.costUsd * 1e9) / 1e9;
  return sum;
}
