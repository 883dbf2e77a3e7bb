/**
 * The worker service: hosts the agents named in MESH_WORKER_AGENTS, each in its own consumer group
 * (`worker.<agent>` on `mesh.work.<agent>`) so lag, concurrency and failures are per agent. Agents
 * named in MESH_LLM_AGENTS are served by the LLM handler (sharing one rate limiter per provider),
 * the others by the built-ins.
 */
import type { MeshConfig } from '@mesh/config';
import { eventTypes } from '@mesh/contracts';
import type { ServiceDefinition } from '@mesh/service';
import { builtinAgent, isBuiltinAgent } from './agents/builtin.ts';
import { llmAgent } from './agents/llm.ts';
import type { Agent } from './agents/types.ts';
import { relayAgent, tallyAgent } from './agents/demo.ts';
import { subtaskHandler } from './handler.ts';
import { ChatClient } from './llm/chat.ts';
import { RateLimiter } from './llm/rate-limiter.ts';
import { OutputValidator } from './output-schema.ts';
import { readWorkerSettings, workerVariables, type WorkerSettings } from './settings.ts';

const settingsOfConfig = new WeakMap<MeshConfig, WorkerSettings>();

/** The worker settings of a loaded config (read once per config). @throws MeshError `config_invalid`. */
export function workerSettings(config: MeshConfig): WorkerSettings {
  let settings = settingsOfConfig.get(config);
  if (settings === undefined) {
    settings = readWorkerSettings(config);
    settingsOfConfig.set(config, settings);
  }
  return settings;
}

export interface HostedAgent {
  name: string;
  kind: 'builtin' | 'llm' | 'relay';
  group: string;
  topic: string;
}

export const workerService: ServiceDefinition = {
  name: 'worker',
  defaultHttpPort: 8082,
  config: { extra: workerVariables },
  agents: (config) => workerSettings(config).agents,
  async setup({ config, runtime, app }) {
    const settings = workerSettings(config);
    const validator = new OutputValidator();
    let llm: Agent | undefined;
    if (settings.llm !== undefined) {
      const limiter = new RateLimiter(runtime.redis, settings.llm.rate, runtime.keyPrefix);
      llm = llmAgent(new ChatClient(settings.llm, limiter), settings.llm);
    }
    const hosted: HostedAgent[] = [];
    await Promise.all(
      settings.agents.map(async (name) => {
        const kind = settings.llmAgents.includes(name)
          ? 'llm'
          : settings.relayAgents.includes(name)
            ? 'relay'
            : 'builtin';
        let agent: Agent;
        if (kind === 'llm' && llm !== undefined) agent = llm;
        else if (kind === 'relay') agent = relayAgent(name);
        else if (name === 'tally')
          agent = tallyAgent(
            runtime.redis,
            (what, key) => runtime.key('tally', what, key),
            settings.agentDelayMs,
          );
        else if (isBuiltinAgent(name))
          agent = builtinAgent(name, { delayMs: settings.agentDelayMs });
        else throw new Error(`agent ${name} has no handler`);
        const { handler, onTerminalFailure } = subtaskHandler({
          runtime,
          agentName: name,
          agent,
          validator,
        });
        const consumer = await runtime.consume({
          groupId: `worker.${name}`,
          topics: [runtime.topics.work(name)],
          handlers: { [eventTypes.subtaskAssigned]: handler },
          onTerminalFailure,
          agentLabel: () => name,
          // Defence in depth: a retried subtask re-dispatched early still waits for its meshnotbefore.
          holdUntil: (event) =>
            event.meshnotbefore === undefined ? undefined : Date.parse(event.meshnotbefore),
        });
        hosted.push({ name, kind, group: consumer.groupId, topic: runtime.topics.work(name) });
      }),
    );
    hosted.sort((a, b) => settings.agents.indexOf(a.name) - settings.agents.indexOf(b.name));
    app.get('/v1/agents', async () => ({ agents: hosted }));
    runtime.log.info(
      {
        agents: settings.agents,
        llmAgents: settings.llmAgents,
        ...(settings.llm === undefined
          ? {}
          : { model: settings.llm.model, provider: settings.llm.rate.provider }),
      },
      'worker agents running',
    );
  },
};
