import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { isMeshError } from '@mesh/errors';
import { readWorkerSettings } from './settings.ts';

const read = (env: Record<string, string>) => readWorkerSettings({ env });

describe('readWorkerSettings', () => {
  test('defaults: the five built-ins, no LLM, no delay', () => {
    assert.deepEqual(read({}), {
      agents: ['echo', 'research', 'summarize', 'fact-check', 'draft', 'planner'],
      llmAgents: [],
      relayAgents: [],
      agentDelayMs: 0,
    });
  });

  test('relay agents and tally are hosted without a model', () => {
    const settings = read({
      MESH_WORKER_AGENTS: 'tally,ping,pong',
      MESH_RELAY_AGENTS: 'ping,pong',
    });
    assert.deepEqual(settings.agents, ['tally', 'ping', 'pong']);
    assert.deepEqual(settings.relayAgents, ['ping', 'pong']);
    assert.deepEqual(settings.llmAgents, []);
  });

  test('an LLM agent takes the LLM variables; the provider defaults to the host', () => {
    const settings = read({
      MESH_WORKER_AGENTS: 'echo,research,writer',
      MESH_LLM_AGENTS: 'research,writer',
      MESH_LLM_BASE_URL: 'https://api.example.com:8443/v1/',
      MESH_LLM_MODEL: 'gpt-x',
      MESH_LLM_COST_PER_1K_TOKENS: '0.002',
      MESH_LLM_RPM: '60',
    });
    assert.deepEqual(
      settings.llmAgents,
      ['research', 'writer'],
      'an LLM agent may shadow a built-in',
    );
    assert.equal(settings.llm?.baseUrl, 'https://api.example.com:8443/v1');
    assert.equal(settings.llm?.costPer1kTokens, 0.002);
    assert.deepEqual(settings.llm?.rate, {
      provider: 'api.example.com:8443',
      requestsPerWindow: 60,
      tokensPerWindow: 0,
      windowMs: 60_000,
    });
    assert.equal(settings.llm?.timeoutMs, 60_000);
  });

  test('every problem is one line naming its variable', () => {
    assert.throws(
      () =>
        read({
          MESH_WORKER_AGENTS: 'echo,llm,ghost',
          MESH_LLM_RPM: '-3',
          MESH_LLM_RATE_WINDOW: '0ms',
        }),
      (error: unknown) => {
        assert.ok(isMeshError(error) && error.code === 'config_invalid');
        const lines = error.message.split('\n');
        assert.deepEqual(
          lines.map((line) => line.split(' ')[0]),
          [
            'MESH_WORKER_AGENTS',
            'MESH_LLM_RPM',
            'MESH_LLM_RATE_WINDOW',
            'MESH_LLM_BASE_URL',
            'MESH_LLM_MODEL',
          ],
        );
        assert.match(lines[0] ?? '', /without a handler: ghost/);
        assert.match(lines[1] ?? '', /from 0 to 10000000, got "-3"/);
        return true;
      },
    );
  });
});
