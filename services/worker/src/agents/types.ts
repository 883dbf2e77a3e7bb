/**
 * What an agent is to the worker: a function from the subtask's input to a structured output. The
 * worker does everything around it — the final-marker check, timeouts, output validation, the
 * result event, failure routing — so an agent holds only the logic of its role.
 */
import type { Logger } from '@mesh/telemetry';

/** Tokens and money one run cost (the `usage` of `io.mesh.subtask.completed`). */
export interface AgentUsage {
  promptTokens: number;
  completionTokens: number;
  costUsd?: number;
}

export interface AgentFlags {
  /** Shorten the context sent to a model (set after a `context_overflow`). */
  truncateContext: boolean;
  /** Ask for JSON only, with constrained decoding where the provider has it (after `invalid_output`). */
  strictOutput: boolean;
}

export interface AgentContext {
  /** The agent name the subtask was assigned to. */
  agent: string;
  taskId: string;
  stageId: string;
  nodeId: string;
  /** Stable across redeliveries of this subtask: pass it to the tools the agent calls. */
  idempotencyKey: string;
  /** Aborted on the subtask's `timeoutMs`, on shutdown past the drain timeout, or on a lost lease. */
  signal: AbortSignal;
  /** Delivery attempt, from 1. */
  attempt: number;
  /** The last attempt MESH_MAX_ATTEMPTS allows: what fails now is dead-lettered. */
  lastAttempt: boolean;
  flags: AgentFlags;
  /** Model override of the assignment (e.g. the fallback model chosen by DLQ triage). */
  model?: string;
  /** JSON Schema the output must satisfy; the worker validates it after the agent returns. */
  outputSchema?: Record<string, unknown>;
  /** Milliseconds left before the subtask's own `timeoutMs`, when it has one. */
  remainingMs(): number | undefined;
  log: Logger;
}

export interface AgentResult {
  output: Record<string, unknown>;
  usage?: AgentUsage;
  /** Hand the work on to another agent (the orchestrator dispatches it). */
  delegate?: { agent: string; input: Record<string, unknown> };
}

/**
 * An agent. Throw a MeshError (`retryable(...)` / `terminal(...)` from `@mesh/errors`) to choose how
 * a failure is routed; anything else thrown counts as a retryable `handler_error`.
 */
export type Agent = (input: Record<string, unknown>, ctx: AgentContext) => Promise<AgentResult>;
