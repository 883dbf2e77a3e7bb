import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { silentLogger } from '@mesh/telemetry';
import type { AgentContext } from './types.ts';
import { builtinAgent, builtinAgentNames, topicOf } from './builtin.ts';

function context(signal = new AbortController().signal): AgentContext {
  return {
    agent: 'a',
    taskId: 't',
    stageId: 's',
    nodeId: 'n',
    idempotencyKey: 'k',
    signal,
    attempt: 1,
    lastAttempt: false,
    flags: { truncateContext: false, strictOutput: false },
    remainingMs: () => undefined,
    log: silentLogger(),
  };
}

describe('built-in agents', () => {
  test('are deterministic and never fail on an empty input', async () => {
    for (const name of builtinAgentNames) {
      const agent = builtinAgent(name);
      const input = {
        task: { topic: 'bees' },
        previous: { s: { n: { findings: ['Bees dance.'] } } },
      };
      const first = await agent(input, context());
      assert.deepEqual(await agent(structuredClone(input), context()), first, name);
      assert.equal(typeof (await agent({}, context())).output, 'object', name);
    }
  });

  test('the topic comes from the node input, else the task', () => {
    assert.equal(topicOf({ topic: 'a', task: { topic: 'b' } }), 'a');
    assert.equal(topicOf({ task: { prompt: 'c' } }), 'c');
    assert.equal(topicOf({}), 'the subject');
  });

  test('MESH_AGENT_DELAY is aborted with the subtask', async () => {
    const agent = builtinAgent('echo', { delayMs: 10_000 });
    await assert.rejects(agent({}, context(AbortSignal.timeout(20))), { name: 'AbortError' });
  });

  test('the planner plans research per angle, then review, then a draft, from built-in agents', async () => {
    const planner = builtinAgent('planner');
    const { output } = await planner(
      { task: { topic: 'tides', angles: ['physics', 'history', 'physics'] } },
      context(),
    );
    const stages = output.stages as {
      id: string;
      dependsOn: string[];
      nodes: { agent: string; input?: { focus?: string } }[];
    }[];
    assert.deepEqual(
      stages.map((s) => [s.id, s.dependsOn]),
      [
        ['gather', []],
        ['review', ['gather']],
        ['write', ['review']],
      ],
    );
    assert.deepEqual(
      stages[0]?.nodes.map((n) => n.input?.focus),
      ['physics', 'history'],
      'one research node per distinct angle',
    );
    for (const node of stages.flatMap((s) => s.nodes))
      assert.ok((builtinAgentNames as readonly string[]).includes(node.agent), node.agent);
    const unplanned = await planner({ task: { topic: 'tides' } }, context());
    assert.equal((unplanned.output.stages as { nodes: unknown[] }[])[0]?.nodes.length, 2);
  });

  test("the planner returns a task's own plan unchanged, valid or not", async () => {
    const plan = { stages: [{ id: 'only', nodes: [{ id: 'x', agent: 'echo' }] }] };
    const planner = builtinAgent('planner');
    assert.deepEqual((await planner({ task: { plan } }, context())).output, plan);
    assert.deepEqual((await planner({ task: { plan: 'nonsense' } }, context())).output, {
      stages: 'nonsense',
    });
  });
});
