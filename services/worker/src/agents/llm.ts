/**
 * The LLM-backed agent: any agent name in MESH_LLM_AGENTS is served by one OpenAI-compatible model.
 * The subtask's flags shape the request (`truncateContext` cuts the input to
 * MESH_LLM_MAX_CONTEXT_CHARS, `strictOutput` adds JSON-only instructions and a `response_format`),
 * the reply must be one JSON object, and the provider's token usage is reported with the result.
 *
 * Model choice: the assignment's `model` when it has one (DLQ triage's choice); else MESH_LLM_MODEL,
 * and on the last attempt MESH_LLM_FALLBACK_MODEL is tried at once if the primary model fails with
 * a retryable `handler_error` or a `timeout` — the contract's "retry tiers up to MESH_MAX_ATTEMPTS,
 * then fallback model, then escalate".
 */
import { MeshError, toMeshError } from '@mesh/errors';
import type { ChatClient } from '../llm/chat.ts';
import { buildPrompt, parseOutput } from '../llm/prompt.ts';
import type { LlmSettings } from '../settings.ts';
import type { Agent, AgentUsage } from './types.ts';

/** The same error, carrying what the failed run spent (reported in `io.mesh.subtask.failed`). */
export function withUsage(error: MeshError, usage: AgentUsage): MeshError {
  return new MeshError(error.code, error.message, {
    cause: error.cause,
    retryable: error.retryable,
    ...(error.retryAfterMs === undefined ? {} : { retryAfterMs: error.retryAfterMs }),
    details: { ...error.details, usage },
  });
}

export function llmAgent(client: ChatClient, settings: LlmSettings): Agent {
  return async (input, ctx) => {
    const prompt = buildPrompt(input, {
      agent: ctx.agent,
      strictOutput: ctx.flags.strictOutput,
      ...(ctx.outputSchema === undefined ? {} : { outputSchema: ctx.outputSchema }),
      ...(ctx.flags.truncateContext ? { maxInputChars: settings.maxContextChars } : {}),
    });
    if (prompt.truncated)
      ctx.log.info(
        { agent: ctx.agent, maxChars: settings.maxContextChars },
        'input truncated for the model context',
      );
    const models =
      ctx.model !== undefined
        ? [ctx.model]
        : ctx.lastAttempt &&
            settings.fallbackModel !== undefined &&
            settings.fallbackModel !== settings.model
          ? [settings.model, settings.fallbackModel]
          : [settings.model];
    for (let i = 0; ; i += 1) {
      const model = models[i] ?? settings.model;
      try {
        const answer = await client.complete(
          {
            model,
            messages: prompt.messages,
            ...(prompt.responseFormat === undefined
              ? {}
              : { responseFormat: prompt.responseFormat }),
          },
          { signal: ctx.signal, idempotencyKey: ctx.idempotencyKey, log: ctx.log },
        );
        const usage: AgentUsage = {
          promptTokens: answer.promptTokens,
          completionTokens: answer.completionTokens,
          ...(settings.costPer1kTokens === undefined
            ? {}
            : {
                costUsd:
                  Math.round(
                    ((answer.promptTokens + answer.completionTokens) / 1000) *
                      settings.costPer1kTokens *
                      1e8,
                  ) / 1e8,
              }),
        };
        let output: Record<string, unknown>;
        try {
          output = parseOutput(answer.content);
        } catch (error) {
          throw withUsage(toMeshError(error), usage);
        }
        return { output, usage };
      } catch (error) {
        const mesh = toMeshError(error);
        const fallbackWorthy =
          (mesh.code === 'handler_error' && mesh.retryable) || mesh.code === 'timeout';
        if (i + 1 >= models.length || !fallbackWorthy || ctx.signal.aborted) throw error;
        ctx.log.warn(
          { model, fallback: models[i + 1], failure: mesh.code },
          'the model failed on the last attempt; trying the fallback model',
        );
      }
    }
  };
}
