/**
 * The worker service: hosts the agents named in MESH_WORKER_AGENTS, each in its own consumer group
 * (`worker.<agent>` on `mesh.work.<agent>`) so lag, concurrency and failures are per agent. Agents
 * of your own (`createWorkerService({ agents })`) come first, then those named in MESH_LLM_AGENTS,
 * served by the LLM handler (sharing one rate limiter per provider), then the built-ins.
 */
import type { MeshConfig } from '@mesh/config';
import { eventTypes } from '@mesh/contracts';
import { isMeshError } from '@mesh/errors';
import { main, type ServiceContext, type ServiceDefinition } from '@mesh/service';
import { builtinAgent, isBuiltinAgent } from './agents/builtin.ts';
import { llmAgent } from './agents/llm.ts';
import type { Agent } from './agents/types.ts';
import { relayAgent, tallyAgent } from './agents/demo.ts';
import { subtaskHandler } from './handler.ts';
import { ChatClient } from './llm/chat.ts';
import { RateLimiter } from './llm/rate-limiter.ts';
import { OutputValidator } from './output-schema.ts';
import { readWorkerSettings, workerVariablesFor, type WorkerSettings } from './settings.ts';

const settingsOfConfig = new WeakMap<MeshConfig, WorkerSettings>();

/**
 * The worker settings of a loaded config (read once per config); `custom` names the agents of your
 * own the process hosts. @throws MeshError `config_invalid`.
 */
export function workerSettings(config: MeshConfig, custom: string[] = []): WorkerSettings {
  let settings = settingsOfConfig.get(config);
  if (settings === undefined) {
    settings = readWorkerSettings(config, custom);
    settingsOfConfig.set(config, settings);
  }
  return settings;
}

export interface HostedAgent {
  name: string;
  kind: 'custom' | 'builtin' | 'llm' | 'relay';
  group: string;
  topic: string;
}

export interface WorkerOptions {
  /**
   * Agents of your own, by name. The worker runs each like a built-in: its own consumer group on
   * `mesh.work.<name>`, idempotency, timeouts, output validation, the result event and failure
   * routing. When MESH_WORKER_AGENTS is unset the process hosts exactly these.
   */
  agents?: Record<string, Agent>;
}

/** The worker service with the given agents of your own (see `runWorker` for a process). */
export function createWorkerService(options: WorkerOptions = {}): ServiceDefinition {
  const custom = options.agents ?? {};
  const customNames = Object.keys(custom);
  return {
    name: 'worker',
    defaultHttpPort: 8082,
    config: { extra: workerVariablesFor(customNames) },
    // Checked before anything connects: a bad worker variable stops the process naming it.
    validate: (config) => {
      try {
        workerSettings(config, customNames);
        return [];
      } catch (error) {
        if (!isMeshError(error) || error.code !== 'config_invalid') throw error;
        return error.message.split('\n');
      }
    },
    agents: (config) => workerSettings(config, customNames).agents,
    setup: (context) => setupWorker(context, custom),
  };
}

/** The worker of `node services/worker/src/main.ts`: the built-in and LLM agents only. */
export const workerService: ServiceDefinition = createWorkerService();

async function setupWorker(
  { config, runtime, app }: ServiceContext,
  custom: Record<string, Agent>,
): Promise<void> {
  const settings = workerSettings(config, Object.keys(custom));
  const validator = new OutputValidator();
  let llm: Agent | undefined;
  if (settings.llm !== undefined) {
    const limiter = new RateLimiter(runtime.redis, settings.llm.rate, runtime.keyPrefix);
    llm = llmAgent(new ChatClient(settings.llm, limiter), settings.llm);
  }
  const hosted: HostedAgent[] = [];
  await Promise.all(
    settings.agents.map(async (name) => {
      const own = Object.hasOwn(custom, name) ? custom[name] : undefined;
      const kind =
        own !== undefined
          ? 'custom'
          : settings.llmAgents.includes(name)
            ? 'llm'
            : settings.relayAgents.includes(name)
              ? 'relay'
              : 'builtin';
      let agent: Agent;
      if (own !== undefined) agent = own;
      else if (kind === 'llm' && llm !== undefined) agent = llm;
      else if (kind === 'relay') agent = relayAgent(name);
      else if (name === 'tally')
        agent = tallyAgent(
          runtime.redis,
          (what, key) => runtime.key('tally', what, key),
          runtime.config.idempotencyTtlMs,
          settings.agentDelayMs,
        );
      else if (isBuiltinAgent(name)) agent = builtinAgent(name, { delayMs: settings.agentDelayMs });
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
}

/**
 * Runs a worker process hosting `options.agents` (and whatever MESH_WORKER_AGENTS adds): the
 * `main` of a worker of your own. A bad variable stops it with exit status 78 and one line per
 * variable; SIGTERM drains, commits and exits.
 */
export function runWorker(options: WorkerOptions = {}): void {
  main(createWorkerService(options));
}
