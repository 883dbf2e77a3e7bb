/**
 * Demonstration agents that show the mesh's guarantees rather than do work:
 *
 * - `tally` performs an external side effect the way a well-behaved tool call should: keyed by
 *   `ctx.idempotencyKey`, so a subtask redelivered after a crash applies it once. It also counts its
 *   runs, which is how the reliability suite proves that completed subtasks never run again.
 *   `input.task.fail: true` makes it fail every time (a poison subtask).
 * - relay agents (named in MESH_RELAY_AGENTS) hand their work to the agent in `input.next` and name
 *   themselves as the next hop: two relays pointing at each other delegate for ever, which the hop
 *   and revisit guards stop.
 */
import { retryable } from '@mesh/errors';
import type { Redis } from '@mesh/redis';
import type { Agent } from './types.ts';

export const demoAgentNames = ['tally'] as const;

const noUsage = { promptTokens: 0, completionTokens: 0, costUsd: 0 };

/**
 * `key(kind, idempotencyKey)` names the Redis keys of the side effect and the run counter; both
 * expire after `ttlMs` (the mesh's idempotency TTL), like every other key of a task.
 */
export function tallyAgent(
  redis: Redis,
  key: (kind: 'effect' | 'runs', idempotencyKey: string) => string,
  ttlMs: number,
  delayMs = 0,
): Agent {
  return async (input, ctx) => {
    const counter = key('runs', ctx.idempotencyKey);
    // Sent together on one connection, so in this order.
    const [runs] = await Promise.all([redis.incr(counter), redis.pexpire(counter, ttlMs)]);
    if (delayMs > 0) await new Promise((resolve) => setTimeout(resolve, delayMs));
    if ((input.task as { fail?: unknown } | undefined)?.fail === true)
      throw retryable('handler_error', 'tally was asked to fail');
    // The side effect: applied at most once per idempotency key, whatever the number of runs.
    const applied =
      (await redis.set(key('effect', ctx.idempotencyKey), ctx.nodeId, 'PX', ttlMs, 'NX')) === 'OK';
    return { output: { node: ctx.nodeId, applied, runs }, usage: noUsage };
  };
}

export function relayAgent(name: string): Agent {
  return async (input) => {
    const next = typeof input.next === 'string' ? input.next : undefined;
    if (next === undefined) return { output: { relayed: false, by: name }, usage: noUsage };
    return {
      output: { relayed: true, by: name, to: next },
      usage: noUsage,
      delegate: { agent: next, input: { next: name } },
    };
  };
}
