import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { isMeshError } from '@mesh/errors';
import { loadConfig } from '@mesh/config';
import { readWorkerSettings, workerVariablesFor } from './settings.ts';

const stackEnv = {
  MESH_KAFKA_BROKERS: '127.0.0.1:9092',
  MESH_SCHEMA_REGISTRY_URL: 'http://127.0.0.1:8081',
  MESH_REDIS_URL: 'redis://127.0.0.1:6379',
};

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

  test('agents of your own: hosted alone by default, mixed in by name, served by their own code', () => {
    const own = ['word-stats', 'research'];
    const config = loadConfig(
      { ...stackEnv },
      { service: 'worker', defaultHttpPort: 8082, extra: workerVariablesFor(own) },
    );
    assert.deepEqual(readWorkerSettings(config, own).agents, own);
    assert.deepEqual(
      readWorkerSettings(loadConfig({ ...stackEnv }, { service: 'worker', defaultHttpPort: 8082 }))
        .agents,
      ['echo', 'research', 'summarize', 'fact-check', 'draft', 'planner'],
      'without agents of its own, the built-ins',
    );
    const mixed = readWorkerSettings(
      {
        env: {
          MESH_WORKER_AGENTS: 'echo,word-stats,research',
          MESH_LLM_AGENTS: 'research',
          MESH_RELAY_AGENTS: 'word-stats',
        },
      },
      own,
    );
    assert.deepEqual(mixed.agents, ['echo', 'word-stats', 'research']);
    assert.deepEqual(mixed.llmAgents, [], 'an agent of your own is never the LLM handler');
    assert.deepEqual(mixed.relayAgents, [], 'nor a relay');
    assert.equal(mixed.llm, undefined, 'so no LLM variables are required');
    assert.throws(
      () => readWorkerSettings({ env: { MESH_WORKER_AGENTS: 'word-stats,nosuch' } }, own),
      (error) =>
        isMeshError(error) &&
        error.code === 'config_invalid' &&
        /^MESH_WORKER_AGENTS names agents without a handler: nosuch \(this worker's own: word-stats, research; built-in: echo/.test(
          error.message,
        ),
    );
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
