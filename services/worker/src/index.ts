/**
 * The worker service (`workerService`, or `createWorkerService` / `runWorker` with agents of your
 * own) and what its tests and other tools use: the agent interface, the built-in agents, the LLM
 * client pieces and the fake LLM server.
 */
export {
  createWorkerService,
  runWorker,
  workerService,
  workerSettings,
  type HostedAgent,
  type WorkerOptions,
} from './service.ts';
export {
  readWorkerSettings,
  workerVariables,
  type LlmSettings,
  type RateSettings,
  type WorkerSettings,
} from './settings.ts';
export type { Agent, AgentContext, AgentFlags, AgentResult, AgentUsage } from './agents/types.ts';
export { builtinAgent, builtinAgentNames, isBuiltinAgent, topicOf } from './agents/builtin.ts';
export { llmAgent } from './agents/llm.ts';
export {
  flagsOf,
  subtaskHandler,
  type SubtaskAssigned,
  type SubtaskCompleted,
  type SubtaskFailed,
} from './handler.ts';
export { OutputValidator } from './output-schema.ts';
export { ChatClient, parseRetryAfter, unlimited, type Limiter } from './llm/chat.ts';
export { buildPrompt, parseOutput, truncateJson, schemaMarker } from './llm/prompt.ts';
export { RateLimiter } from './llm/rate-limiter.ts';
export { createFakeLlm, type FakeLlmBehaviour, type FakeLlmStats } from './fake-llm.ts';
