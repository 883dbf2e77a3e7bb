/**
 * The orchestrator service: intake (mesh.requests and POST /v1/tasks), planning from workflow
 * templates, stage dispatch, approvals, cancel, budgets, deadlines and the task-state projection.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { everyRound } from '@mesh/runtime';
import type { ServiceDefinition } from '@mesh/service';
import { Orchestrator } from './orchestrator.ts';
import { registerDashboard } from './dashboard.ts';
import { registerTaskRoutes } from './routes.ts';
import { registerTaskMetrics } from './metrics.ts';
import { TaskStore } from './store.ts';
import { defaultTemplatesDir, loadTemplates } from './templates.ts';

export { Orchestrator } from './orchestrator.ts';
export { TaskStore, causalOrder, type TaskState, type EventSummary } from './store.ts';
export { loadTemplates, planStages, validatePlan, type Template } from './templates.ts';

export const orchestratorService: ServiceDefinition = {
  name: 'orchestrator',
  defaultHttpPort: 8080,
  async setup(context) {
    const { config, runtime } = context;
    // Templates are checked before anything consumes: a bad one stops the service naming the file.
    const templates = loadTemplates(
      config.env.MESH_TEMPLATES_DIR ?? defaultTemplatesDir,
      config.env.MESH_DEFAULT_TEMPLATE,
    );
    const store = new TaskStore(runtime.redis, {
      ttlMs: config.idempotencyTtlMs,
      retentionMs: config.taskRetentionMs,
      prefix: runtime.keyPrefix,
    });
    const orchestrator = new Orchestrator(runtime, store, templates);
    const { topics } = runtime;
    await runtime.consume({
      groupId: 'orchestrator',
      topics: [topics.requests, topics.stages, topics.control],
      intakeTopics: [topics.requests],
      // Loop guards belong where agents run (the workers); planned stages restart their hop count
      // from the request, and a stage event from a long delegation chain must still be applied.
      loopGuards: false,
      // No claim and done marker per event: each handler applies its event to the task state under
      // the task's lock, and an event found already applied re-publishes what is outstanding with
      // the same ids (#redrive), which the workers and the aggregator drop by id. The lock does what
      // a lease would (one holder at a time, across replicas), and the claim and the done marker
      // were two more Redis round trips on the path of every dispatch.
      idempotency: false,
      handlers: {
        'io.mesh.task.requested': orchestrator.onRequest,
        'io.mesh.stage.completed': orchestrator.onStage,
        'io.mesh.task.cancel': orchestrator.onControl,
        'io.mesh.approval.granted': orchestrator.onControl,
        'io.mesh.approval.denied': orchestrator.onControl,
      },
    });
    const observed = [
      'io.mesh.subtask.completed',
      'io.mesh.subtask.failed',
      'io.mesh.task.completed',
      'io.mesh.task.failed',
      'io.mesh.task.cancelled',
      'io.mesh.escalation.opened',
      'io.mesh.approval.requested',
    ];
    await runtime.consume({
      groupId: 'orchestrator.observe',
      topics: [topics.results, topics.outputs, topics.escalations],
      handlers: Object.fromEntries(observed.map((type) => [type, orchestrator.onObserved])),
      // These are other services' events being watched, not work: a loop guard here would dead-letter
      // the evidence of a loop a second time.
      loopGuards: false,
      // Every effect of watching is idempotent on its own: the causal chain adds an event id once
      // (SADD), a delegation is dispatched with a deterministic id its worker drops if repeated, and
      // a final state is set, not appended.
      idempotency: false,
    });
    registerTaskRoutes(context, store);
    registerTaskMetrics(runtime, store);
    const stopDashboard = registerDashboard(context);
    // Tasks an older orchestrator wrote are filed by status in the background; until then a query
    // by status scans the latest tasks as before. Retried while Redis is away.
    const indexing = new AbortController();
    void (async () => {
      while (!indexing.signal.aborted) {
        try {
          const filed = await store.indexStatuses();
          if (filed > 0) runtime.log.info({ filed }, 'earlier tasks filed by status');
          return;
        } catch (error) {
          runtime.log.warn(
            { err: String(error) },
            'filing earlier tasks by status failed; will retry',
          );
          await sleep(5_000, undefined, { signal: indexing.signal, ref: false }).catch(
            () => undefined,
          );
        }
      }
    })();
    let forgotAt = 0;
    const rounds = everyRound({
      everyMs: 500,
      round: async () => {
        const now = Date.now();
        // The index of expired tasks is trimmed once a minute: entries leave it a TTL after creation.
        const forgetting = now - forgotAt < 60_000 ? undefined : store.forgetExpired(now);
        if (forgetting !== undefined) forgotAt = now;
        await Promise.all([orchestrator.tickDeadlines(now), forgetting]);
      },
      log: runtime.log,
      what: 'deadline round',
    });
    return async () => {
      indexing.abort();
      await Promise.all([rounds.stop(), stopDashboard()]);
    };
  },
};
