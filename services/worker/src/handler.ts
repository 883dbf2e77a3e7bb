/**
 * The worker's handler of `io.mesh.subtask.assigned`, one per hosted agent: skip the subtask if its
 * task already ended, run the agent within the subtask's `timeoutMs`, check the output against its
 * `outputSchema`, and publish `io.mesh.subtask.completed` to `mesh.results`. Failures are thrown as
 * MeshErrors and routed by the runtime (retry tier or `mesh.dlq`); a failure that is final also
 * publishes `io.mesh.subtask.failed`, so the aggregator can join the stage without this node.
 */
import { eventTypes } from '@mesh/contracts';
import {
  failureClassOf,
  isMeshError,
  retryable,
  safeDetail,
  toMeshError,
  type MeshError,
} from '@mesh/errors';
import type { Emit, Handler, HandlerContext, MeshRuntime } from '@mesh/runtime';
import { redisFailure, type Redis } from '@mesh/redis';
import { withUsage } from './agents/llm.ts';
import type { Agent, AgentContext, AgentFlags, AgentUsage } from './agents/types.ts';
import type { OutputValidator } from './output-schema.ts';

/** The `data` of `io.mesh.subtask.assigned` (schemas/io.mesh.subtask.assigned.json). */
export interface SubtaskAssigned {
  taskId: string;
  stageId: string;
  nodeId: string;
  agent: string;
  input: Record<string, unknown>;
  outputSchema?: Record<string, unknown>;
  timeoutMs?: number;
  model?: string;
  flags?: Partial<AgentFlags>;
  stage?: Record<string, unknown>;
}

export interface Usage extends AgentUsage {
  steps?: number;
}

/** The `data` of `io.mesh.subtask.completed`. */
export interface SubtaskCompleted {
  taskId: string;
  stageId: string;
  nodeId: string;
  agent: string;
  output: Record<string, unknown>;
  usage: Usage;
  durationMs: number;
  stage?: Record<string, unknown>;
  delegate?: { agent: string; input: Record<string, unknown> };
}

/** The `data` of `io.mesh.subtask.failed`. */
export interface SubtaskFailed {
  taskId: string;
  stageId: string;
  nodeId: string;
  agent: string;
  failure: string;
  detail: string;
  attempts: number;
  usage?: Usage;
  stage?: Record<string, unknown>;
}

export interface SubtaskHandlerOptions {
  runtime: Pick<MeshRuntime, 'topics' | 'redis' | 'config' | 'key'>;
  /** The agent this consumer group runs (its work topic's agent). */
  agentName: string;
  agent: Agent;
  validator: OutputValidator;
}

/**
 * Flags of this delivery: the assignment's own, plus what the last failure asks for when the event
 * comes back from a retry tier with its failure headers (`context_overflow` → truncate the context,
 * `invalid_output` → stricter output), whichever service re-dispatched it.
 */
export function flagsOf(data: SubtaskAssigned, lastFailure: string | undefined): AgentFlags {
  return {
    truncateContext: data.flags?.truncateContext === true || lastFailure === 'context_overflow',
    strictOutput: data.flags?.strictOutput === true || lastFailure === 'invalid_output',
  };
}

function usageOf(value: unknown): Usage | undefined {
  if (typeof value !== 'object' || value === null) return undefined;
  const { promptTokens, completionTokens, costUsd } = value as Record<string, unknown>;
  const count = (n: unknown): number | undefined =>
    typeof n === 'number' && Number.isSafeInteger(n) && n >= 0 ? n : undefined;
  const usage: Usage = {
    promptTokens: count(promptTokens) ?? 0,
    completionTokens: count(completionTokens) ?? 0,
  };
  if (typeof costUsd === 'number' && Number.isFinite(costUsd) && costUsd >= 0)
    usage.costUsd = costUsd;
  return usage;
}

/** Resolves or rejects with `work`, or rejects with the signal's reason as soon as it aborts. */
async function untilAborted<T>(work: Promise<T>, signal: AbortSignal): Promise<T> {
  signal.throwIfAborted();
  let onAbort: (() => void) | undefined;
  const aborted = new Promise<never>((_, reject) => {
    onAbort = () => reject(signal.reason as Error);
    signal.addEventListener('abort', onAbort, { once: true });
  });
  try {
    return await Promise.race([work, aborted]);
  } finally {
    if (onAbort !== undefined) signal.removeEventListener('abort', onAbort);
  }
}

/** The task's final state, if it ended (`mesh:final:<taskId>`, docs/services.md). */
async function taskEnded(redis: Redis, key: string): Promise<string | null> {
  try {
    return await redis.get(key);
  } catch (error) {
    throw redisFailure(error, 'final marker check');
  }
}

export function subtaskHandler(options: SubtaskHandlerOptions): {
  handler: Handler;
  onTerminalFailure: (ctx: HandlerContext, error: MeshError) => Emit[];
} {
  const { runtime, agentName, agent, validator } = options;

  const handler: Handler = async (ctx) => {
    const data = ctx.event.data as SubtaskAssigned;
    // Made on first use: most subtasks never log, and a child logger per event is not free.
    let child: AgentContext['log'] | undefined;
    const log = (): AgentContext['log'] =>
      (child ??= ctx.log.child({ agent: agentName, taskId: data.taskId, nodeId: data.nodeId }));
    const ended = await taskEnded(runtime.redis, runtime.key('final', data.taskId));
    if (ended !== null) {
      log().info({ final: ended }, 'task already ended; subtask skipped');
      return;
    }
    if (data.agent !== agentName)
      log().warn({ assignedTo: data.agent }, 'subtask names another agent than its work topic');

    const started = performance.now();
    const timeout = data.timeoutMs === undefined ? undefined : AbortSignal.timeout(data.timeoutMs);
    const signal = timeout === undefined ? ctx.signal : AbortSignal.any([ctx.signal, timeout]);
    const deadline = data.timeoutMs === undefined ? undefined : Date.now() + data.timeoutMs;
    const agentCtx: AgentContext = {
      agent: agentName,
      taskId: data.taskId,
      stageId: data.stageId,
      nodeId: data.nodeId,
      idempotencyKey: ctx.idempotencyKey,
      signal,
      attempt: ctx.attempt,
      lastAttempt: ctx.attempt >= runtime.config.maxAttempts,
      flags: flagsOf(data, ctx.event.meshfailure),
      ...(data.model === undefined ? {} : { model: data.model }),
      ...(data.outputSchema === undefined ? {} : { outputSchema: data.outputSchema }),
      remainingMs: () => (deadline === undefined ? undefined : Math.max(0, deadline - Date.now())),
      get log() {
        return log();
      },
    };

    let result;
    try {
      result = await untilAborted(agent(data.input, agentCtx), signal);
    } catch (error) {
      if (timeout?.aborted === true && !ctx.signal.aborted)
        throw retryable(
          'timeout',
          `agent ${agentName} did not finish within the subtask's ${data.timeoutMs} ms`,
          { cause: error },
        );
      if (ctx.signal.aborted && !isMeshError(error))
        // The runtime writes no outcome for it: the next member, or the lease's new holder, runs it.
        throw retryable(
          'handler_error',
          `agent ${agentName} was stopped: the worker is stopping, or its lease was lost`,
        );
      throw error;
    }
    const durationMs = Math.round((performance.now() - started) * 10) / 10;
    const { output } = result;
    const usage: Usage = {
      ...(usageOf(result.usage) ?? { promptTokens: 0, completionTokens: 0 }),
      steps: 1,
    };
    if (typeof output !== 'object' || output === null || Array.isArray(output))
      throw withUsage(
        retryable('invalid_output', `agent ${agentName} returned an output that is not an object`),
        usage,
      );
    if (data.outputSchema !== undefined) {
      try {
        validator.check(output, data.outputSchema);
      } catch (error) {
        const mesh = toMeshError(error);
        throw mesh.code === 'invalid_output' ? withUsage(mesh, usage) : mesh;
      }
    }
    const completed: SubtaskCompleted = {
      taskId: data.taskId,
      stageId: data.stageId,
      nodeId: data.nodeId,
      agent: data.agent,
      output,
      usage,
      durationMs,
      ...(data.stage === undefined ? {} : { stage: data.stage }),
      ...(result.delegate === undefined ? {} : { delegate: result.delegate }),
    };
    if (ctx.log.isLevelEnabled('debug')) log().debug({ durationMs, usage }, 'subtask completed');
    return {
      emit: [
        {
          topic: runtime.topics.results,
          event: ctx.derive({
            type: eventTypes.subtaskCompleted,
            data: completed,
            visited: agentName,
          }),
        },
      ],
    };
  };

  const onTerminalFailure = (ctx: HandlerContext, error: MeshError): Emit[] => {
    const data = ctx.event.data as SubtaskAssigned;
    const usage = usageOf(error.details?.usage);
    const failed: SubtaskFailed = {
      taskId: data.taskId,
      stageId: data.stageId,
      nodeId: data.nodeId,
      agent: data.agent,
      failure: failureClassOf(error),
      detail: safeDetail(error),
      attempts: Math.max(1, ctx.attempt),
      ...(usage === undefined ? {} : { usage: { ...usage, steps: 1 } }),
      ...(data.stage === undefined ? {} : { stage: data.stage }),
    };
    return [
      {
        topic: runtime.topics.results,
        event: ctx.derive({ type: eventTypes.subtaskFailed, data: failed, visited: agentName }),
      },
    ];
  };

  return { handler, onTerminalFailure };
}
