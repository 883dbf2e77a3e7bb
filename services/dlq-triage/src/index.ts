/**
 * The dlq-triage service: consumes mesh.dlq and the retry tiers, classifies and remediates every
 * dead letter, re-dispatches retried events when due, escalates, and serves replay and discard.
 */
import type { ServiceDefinition } from '@mesh/service';
import { loadRules } from './rules.ts';
import { registerDlqRoutes } from './routes.ts';
import { DeadLetterStore } from './store.ts';
import { Triage, createTriageMetrics } from './triage.ts';

export { decide, compileRules, defaultActions, type Decision, type Rule } from './rules.ts';
export { DeadLetterStore, type DeadLetter, type Escalation } from './store.ts';
export { Triage } from './triage.ts';

export const dlqTriageService: ServiceDefinition = {
  name: 'dlq-triage',
  defaultHttpPort: 8084,
  async setup(context) {
    const { config, runtime } = context;
    const rules = loadRules(config.env.MESH_TRIAGE_RULES);
    const store = new DeadLetterStore(runtime.redis, {
      ttlMs: Math.max(config.idempotencyTtlMs, 30 * 86_400_000),
      prefix: runtime.keyPrefix,
    });
    const metrics = createTriageMetrics(runtime);
    const triage = new Triage(
      runtime,
      store,
      {
        rules,
        maxRemediations: Number(config.env.MESH_TRIAGE_MAX_REMEDIATIONS ?? '2'),
        ...(config.env.MESH_FALLBACK_MODEL === undefined
          ? {}
          : { fallbackModel: config.env.MESH_FALLBACK_MODEL }),
      },
      metrics,
    );
    await triage.refreshParked().catch(() => undefined);
    await runtime.consume({
      groupId: 'dlq-triage',
      topics: [runtime.topics.dlq],
      handlers: {},
      raw: triage.onDeadLetter,
    });
    if (config.retryTiers.length > 0) {
      await runtime.consume({
        groupId: 'dlq-triage.retry',
        topics: config.retryTiers.map((tier) => runtime.topics.retry(tier.name)),
        handlers: {},
        raw: triage.onRetry,
      });
    }
    registerDlqRoutes(context, store, triage);
  },
};
