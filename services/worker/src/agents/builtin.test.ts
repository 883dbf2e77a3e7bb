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
});
