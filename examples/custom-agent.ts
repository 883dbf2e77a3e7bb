#!/usr/bin/env node
/**
 * An agent of your own, run by a worker process of your own. The worker does everything around the
 * agent, as for the built-ins: a consumer group on `mesh.work.word-stats` (its topic is created at
 * start), idempotency with a processing lease, the subtask's timeout, the result event with its
 * lineage, retries and dead letters by the error taxonomy, metrics and `/readyz`. With `npm start`
 * running, in another terminal:
 *
 *   MESH_HTTP_PORT=8085 node --env-file=.env.mesh examples/custom-agent.ts
 *   npx mesh publish examples/custom-agent.json
 *
 * `examples/custom-agent.json` asks for a plan of one stage on this agent (template `planned` runs
 * a plan the request brings). MESH_WORKER_AGENTS, when set, can add built-in or LLM agents to the
 * same process.
 */
import { terminal } from '@mesh/errors';
import { runWorker, type Agent } from '@mesh/worker';

const wordStats: Agent = async (input, ctx) => {
  // The orchestrator's input: { task: <the request's input>, previous: { <stage>: { <node>: output } } }.
  const task = (input.task ?? {}) as { text?: unknown };
  if (typeof task.text !== 'string' || task.text.trim() === '')
    // Terminal: retrying cannot help. The node fails (io.mesh.subtask.failed) and the event is
    // dead-lettered with the reason; anything else thrown is a retryable handler_error.
    throw terminal('handler_error', 'word-stats needs a non-empty input.text');
  // A real agent would pass ctx.signal to its model or tool calls (aborted on the subtask's timeout,
  // when its lease is lost, or on shutdown), and ctx.idempotencyKey to any side effect that must
  // happen once.
  ctx.log.info({ chars: task.text.length }, 'counting words');
  const words = task.text.toLowerCase().match(/[\p{L}\p{N}']+/gu) ?? [];
  const counts = new Map<string, number>();
  for (const word of words) counts.set(word, (counts.get(word) ?? 0) + 1);
  const top = [...counts]
    .sort(([a, x], [b, y]) => y - x || a.localeCompare(b))
    .slice(0, 5)
    .map(([word, count]) => ({ word, count }));
  return {
    output: { words: words.length, distinct: counts.size, top },
    // A model-backed agent reports its tokens and cost here; budgets are checked against them.
    usage: { promptTokens: 0, completionTokens: 0 },
  };
};

runWorker({ agents: { 'word-stats': wordStats } });
