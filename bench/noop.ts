/**
 * The no-op work of the in-process runtime benchmarks (`runtime`, `overhead`): the subtask events
 * they queue, and the handler that answers each with one derived `io.mesh.subtask.completed`.
 */
import { newEvent, type MeshEvent } from '@mesh/envelope';
import type { HandlerContext, HandlerResult } from '@mesh/runtime';

interface Assigned {
  taskId: string;
  stageId: string;
  nodeId: string;
  agent: string;
}

/** The `i`-th `io.mesh.subtask.assigned` for `agent`, keyed by one of `keys` task ids. */
export function assignedEvent(agent: string, i: number, keys: number): MeshEvent {
  const taskId = `task-${i % keys}`;
  return newEvent({
    type: 'io.mesh.subtask.assigned',
    source: '/bench',
    correlationid: taskId,
    agent,
    data: { taskId, stageId: 's1', nodeId: `n${i}`, agent, input: { seq: i } },
  });
}

/** The no-op handler's answer: the subtask completed with an empty output, emitted on `topic`. */
export function completeAssigned(ctx: HandlerContext, topic: string): HandlerResult {
  const data = ctx.event.data as Assigned;
  const event = ctx.derive({
    type: 'io.mesh.subtask.completed',
    data: {
      taskId: data.taskId,
      stageId: data.stageId,
      nodeId: data.nodeId,
      agent: data.agent,
      output: {},
    },
    visited: data.agent,
  });
  return { emit: [{ topic, event }] };
}
