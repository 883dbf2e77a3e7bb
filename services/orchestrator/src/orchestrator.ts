/**
 * The orchestrator's role: turn a request into a plan, dispatch each stage when its dependencies are
 * done, hold approval gates, enforce budgets and deadlines, and keep the task-state projection.
 *
 * Every handler applies one event to one task under the task's lock, writes the new state, then
 * publishes what follows from it (acks=all). Writing first means a result can never arrive before
 * the state that expects it (a subtask finishes in milliseconds). A crash between write and publish
 * is repaired when the event is redelivered: it finds its effect saved and re-publishes everything
 * the state says is outstanding (#redrive), with the same deterministic ids — consumers drop repeats.
 */
import {
  childTraceparent,
  deriveEvent,
  deterministicId,
  type MeshEvent,
  type MeshEventAttributes,
} from '@mesh/envelope';
import { safeDetail } from '@mesh/errors';
import {
  dataBytes,
  formatBytes,
  maxEventDataBytes,
  type Emit,
  type HandlerContext,
  type HandlerResult,
  type MeshRuntime,
} from '@mesh/runtime';
import {
  finalTypes,
  terminalStatuses,
  type EventSummary,
  type StageState,
  type TaskState,
  type TaskStore,
  type Usage,
} from './store.ts';
import { planStages, validatePlan, type PlannedStage, type TemplateSet } from './templates.ts';

export const source = '/mesh/orchestrator';

interface RequestData {
  input: Record<string, unknown>;
  template?: string;
  budget?: TaskState['budget'];
  timeoutMs?: number;
  idempotencyKey?: string;
  metadata?: Record<string, string>;
}

interface StageCompletedData {
  taskId: string;
  stageId: string;
  status: 'completed' | 'partial' | 'failed';
  results: Record<string, Record<string, unknown>>;
  failures?: Record<string, { failure: string; detail?: string }>;
  usage?: Partial<Usage>;
  final?: boolean;
}

interface ResultData {
  taskId: string;
  stageId: string;
  nodeId: string;
  agent: string;
  output?: Record<string, unknown>;
  delegate?: { agent: string; input: Record<string, unknown> };
  stage?: Record<string, unknown>;
  failure?: string;
}

export type FailureReason =
  | 'budget_exceeded'
  | 'stage_failed'
  | 'deadline_exceeded'
  | 'approval_denied'
  | 'invalid_plan'
  | 'invalid_output'
  | 'unknown_template'
  | 'hop_limit_exceeded'
  | 'cycle_detected';

export const emptyUsage = (): Usage => ({
  promptTokens: 0,
  completionTokens: 0,
  costUsd: 0,
  steps: 0,
});

function attributesOf(event: MeshEvent): Omit<MeshEventAttributes, 'extensions'> {
  const { data: _data, extensions: _extensions, ...attributes } = event;
  return attributes;
}

/** Summarises an event for the task's causal chain. */
export function summarise(event: MeshEvent, topic: string): EventSummary {
  const data = (event.data ?? {}) as Record<string, unknown>;
  const parts = [
    data.stageId,
    data.nodeId,
    data.status,
    data.failure ?? data.reason,
    data.gateId,
  ].filter((p) => typeof p === 'string');
  return {
    id: event.id,
    type: event.type,
    source: event.source,
    topic,
    ...(event.time === undefined ? {} : { time: event.time }),
    ...(event.causationid === undefined ? {} : { causationid: event.causationid }),
    ...(event.hopcount === undefined ? {} : { hopcount: event.hopcount }),
    ...(event.agent === undefined ? {} : { agent: event.agent }),
    ...(event.agentpath === undefined || event.agentpath === ''
      ? {}
      : { agentpath: event.agentpath }),
    ...(event.meshattempt === undefined ? {} : { meshattempt: event.meshattempt }),
    ...(parts.length === 0 ? {} : { detail: parts.join(' ') }),
  };
}

export class Orchestrator {
  readonly #runtime: MeshRuntime;
  readonly #store: TaskStore;
  readonly #templates: TemplateSet;

  constructor(runtime: MeshRuntime, store: TaskStore, templates: TemplateSet) {
    this.#runtime = runtime;
    this.#store = store;
    this.#templates = templates;
  }

  get store(): TaskStore {
    return this.#store;
  }

  /** The task id of an event: its correlationid (a request without one is its own task). */
  static taskIdOf(event: MeshEvent): string {
    return event.correlationid ?? event.id;
  }

  async #publish(taskId: string, emits: Emit[]): Promise<void> {
    if (emits.length === 0) return;
    // The chain is appended while Kafka acknowledges, in one pipelined round trip for all of them
    // (it is put in causal order when read). If the publish fails, the cause is tried again and
    // publishes the same events with the same ids, which the chain then already lists once.
    await Promise.all([
      this.#runtime.publish(emits),
      ...emits.map(({ topic, event }) => this.#store.record(taskId, summarise(event, topic))),
    ]);
  }

  // ── intake ────────────────────────────────────────────────────────────────────────────────────

  /** `io.mesh.task.requested`: plan the task and dispatch what can start. */
  onRequest = async (ctx: HandlerContext): Promise<HandlerResult> => {
    const request = ctx.event as MeshEvent<RequestData>;
    const taskId = Orchestrator.taskIdOf(request);
    // The causal chain is appended while the request is applied: round trips at once, not in turn.
    await Promise.all([
      this.#store.record(taskId, summarise(request, ctx.topic)),
      this.#applyRequest(ctx, request, taskId),
    ]);
    return {};
  };

  async #applyRequest(
    ctx: HandlerContext,
    request: MeshEvent<RequestData>,
    taskId: string,
  ): Promise<void> {
    if (request.data.idempotencyKey !== undefined) {
      const bound = await this.#store.bindIdempotencyKey(request.data.idempotencyKey, taskId);
      if (bound !== taskId) {
        ctx.log.info(
          { taskId, bound },
          'request repeats an idempotency key: it is the earlier task',
        );
        return;
      }
    }
    await this.#store.withLock(taskId, async (existing, ended) => {
      if (existing === undefined && ended !== undefined) {
        // A redelivery of a task that ended so long ago that its state is gone: planning it again
        // would dispatch work its workers skip as done, and leave a task that never ends.
        ctx.log.info(
          { taskId, ended },
          'request of a task that ended and is no longer kept (MESH_TASK_RETENTION); ignored',
        );
        return;
      }
      if (existing !== undefined && existing.status !== 'accepted') {
        await this.#redrive(existing, request);
        return;
      }
      const now = new Date();
      const templateName = request.data.template ?? this.#templates.defaultName;
      const template = this.#templates.templates.get(templateName);
      const state: TaskState = {
        id: taskId,
        status: 'running',
        template: templateName,
        createdAt: existing?.createdAt ?? request.time ?? now.toISOString(),
        updatedAt: now.toISOString(),
        input: request.data.input,
        budget: { ...template?.budget, ...request.data.budget },
        usage: emptyUsage(),
        stages: {},
        request: { ...attributesOf(request), correlationid: taskId },
      };
      if (template?.synthesis !== undefined) state.synthesis = template.synthesis;
      const timeoutMs = request.data.timeoutMs ?? template?.timeoutMs;
      if (timeoutMs !== undefined)
        state.deadline = new Date(Date.parse(state.createdAt) + timeoutMs).toISOString();
      if (template === undefined) {
        await this.#fail(state, request, 'unknown_template', `no template named ${templateName}`);
        return;
      }
      if (template.planner !== undefined) {
        state.planner = template.planner;
        state.plan = [
          {
            id: 'plan',
            dependsOn: [],
            final: false,
            nodes: [
              {
                id: 'plan',
                agent: template.planner.agent,
                // What a planner may choose from: an LLM planner sees this in its prompt.
                input: {
                  templates: [...this.#templates.templates.keys()],
                  agents: await this.#agentNames(),
                },
              },
            ],
          },
        ];
      } else {
        state.plan = planStages(template.stages ?? []);
      }
      const unserved = await this.#unserved(state.plan);
      if (unserved !== undefined) {
        await this.#fail(state, request, 'invalid_plan', `template ${templateName}: ${unserved}`);
        return;
      }
      for (const stage of state.plan) state.stages[stage.id] = { status: 'pending' };
      if (state.deadline !== undefined)
        await this.#store.addDeadline(taskId, Date.parse(state.deadline));
      await this.#advance(state, request);
    });
  }

  // ── stages ────────────────────────────────────────────────────────────────────────────────────

  /** `io.mesh.stage.completed`: record the stage, check the budget, dispatch what it unblocked. */
  onStage = async (ctx: HandlerContext): Promise<HandlerResult> => {
    const event = ctx.event as MeshEvent<StageCompletedData>;
    const { taskId, stageId } = event.data;
    // The causal chain is appended while the event is applied: two round trips at once, not in turn.
    await Promise.all([
      this.#store.record(taskId, summarise(event, ctx.topic)),
      this.#store.withLock(taskId, async (state) => {
        if (state === undefined) return;
        const stage = state.stages[stageId];
        if (stage === undefined) return;
        if (['completed', 'partial', 'failed'].includes(stage.status)) {
          // Already applied: what it led to may not have been published before a crash.
          await this.#redrive(state, event);
          return;
        }
        stage.status = event.data.status;
        stage.results = event.data.results;
        if (event.data.failures !== undefined) stage.failures = event.data.failures;
        stage.endedAt = new Date().toISOString();
        addUsage(state.usage, event.data.usage);
        if (terminalStatuses.includes(state.status)) {
          // The task's final event (observed on another topic) can overtake its last stage, and a
          // cancelled task's running stage still spent tokens: record the stage and what it cost.
          await this.#store.put(state);
          return;
        }

        if (state.planner !== undefined && stageId === 'plan' && state.plan?.length === 1) {
          if (event.data.status === 'failed') {
            await this.#fail(state, event, 'invalid_plan', 'the planner agent failed');
            return;
          }
          let planned: PlannedStage[];
          try {
            planned = validatePlan(event.data.results.plan);
          } catch (error) {
            await this.#fail(state, event, 'invalid_plan', safeDetail((error as Error).message));
            return;
          }
          const unserved = await this.#unserved(planned);
          if (unserved !== undefined) {
            await this.#fail(state, event, 'invalid_plan', `the planner's plan: ${unserved}`);
            return;
          }
          state.plan = [
            { ...(state.plan[0] as PlannedStage) },
            ...planned.map((s) => ({
              ...s,
              dependsOn: s.dependsOn.length === 0 ? ['plan'] : s.dependsOn,
            })),
          ];
          for (const s of planned) state.stages[s.id] = { status: 'pending' };
          await this.#advance(state, event);
          return;
        }

        const planned = state.plan?.find((s) => s.id === stageId);
        if (planned?.final === true) {
          // The aggregator published the task's outcome with the final stage; the observer records it.
          state.status = event.data.status === 'failed' ? 'failed' : 'completed';
          if (event.data.status === 'failed')
            state.failure = { reason: 'stage_failed', detail: describeFailures(event.data) };
          await this.#dropDeadline(state);
          await this.#store.put(state);
          return;
        }
        if (event.data.status === 'failed') {
          await this.#fail(
            state,
            event,
            'stage_failed',
            `stage ${stageId} failed: ${describeFailures(event.data)}`,
          );
          return;
        }
        const overBudget = budgetExceeded(state);
        if (overBudget !== undefined) {
          await this.#fail(state, event, 'budget_exceeded', overBudget);
          return;
        }
        await this.#advance(state, event);
      }),
    ]);
    return {};
  };

  // ── control ───────────────────────────────────────────────────────────────────────────────────

  /** `io.mesh.task.cancel`, `io.mesh.approval.granted`, `io.mesh.approval.denied`. */
  onControl = async (ctx: HandlerContext): Promise<HandlerResult> => {
    const event = ctx.event as MeshEvent<{
      taskId: string;
      gateId?: string;
      by?: string;
      comment?: string;
      reason?: string;
    }>;
    const { taskId } = event.data;
    // The causal chain is appended while the event is applied: two round trips at once, not in turn.
    await Promise.all([
      this.#store.record(taskId, summarise(event, ctx.topic)),
      this.#store.withLock(taskId, async (state) => {
        if (state === undefined || terminalStatuses.includes(state.status)) return;
        if (event.type === 'io.mesh.task.cancel') {
          await this.#end(state, event, 'io.mesh.task.cancelled', {
            taskId,
            ...(event.data.reason === undefined ? {} : { reason: event.data.reason }),
            ...(event.data.by === undefined ? {} : { by: event.data.by }),
          });
          return;
        }
        const gate = state.plan?.find(
          (s) =>
            s.gate?.id === event.data.gateId && state.stages[s.id]?.status === 'awaiting_approval',
        );
        if (gate === undefined) {
          if (state.plan?.some((s) => s.gate?.id === event.data.gateId) === true) {
            // Already decided: this is a redelivery, and what it led to may not have been published.
            await this.#redrive(state, event);
            return;
          }
          ctx.log.warn(
            { taskId, gateId: event.data.gateId },
            'approval for a gate that is not waiting; ignored',
          );
          return;
        }
        if (event.type === 'io.mesh.approval.denied') {
          await this.#fail(
            state,
            event,
            'approval_denied',
            `gate ${gate.gate?.id ?? gate.id} denied${event.data.by === undefined ? '' : ` by ${event.data.by}`}${event.data.comment === undefined ? '' : `: ${event.data.comment}`}`,
          );
          return;
        }
        state.stages[gate.id] = {
          ...state.stages[gate.id],
          status: 'completed',
          results: {
            [gate.gate?.id ?? gate.id]: {
              approved: true,
              ...(event.data.by === undefined ? {} : { by: event.data.by }),
              ...(event.data.comment === undefined ? {} : { comment: event.data.comment }),
            },
          },
          endedAt: new Date().toISOString(),
        };
        await this.#advance(state, event);
      }),
    ]);
    return {};
  };

  // ── what others publish about the task ────────────────────────────────────────────────────────

  /** Results, outputs and escalations: the causal chain, delegation, and the task's final state. */
  onObserved = async (ctx: HandlerContext): Promise<HandlerResult> => {
    const event = ctx.event;
    const data = (event.data ?? {}) as Record<string, unknown>;
    const taskId = typeof data.taskId === 'string' ? data.taskId : Orchestrator.taskIdOf(event);
    await this.#store.record(taskId, summarise(event, ctx.topic));
    if (
      event.type === 'io.mesh.subtask.completed' &&
      (data as unknown as ResultData).delegate !== undefined
    ) {
      await this.#delegate(ctx.event as MeshEvent<ResultData>);
      return {};
    }
    if ((finalTypes as readonly string[]).includes(event.type)) {
      await this.#store.withLock(taskId, async (state) => {
        if (state === undefined) return;
        if (event.type === 'io.mesh.task.completed') {
          state.status = 'completed';
          state.output = data.output as Record<string, unknown>;
        } else if (event.type === 'io.mesh.task.failed') {
          state.status = 'failed';
          state.failure = {
            reason: String(data.reason),
            detail: typeof data.detail === 'string' ? data.detail : '',
          };
        } else {
          state.status = 'cancelled';
        }
        await this.#dropDeadline(state);
        await this.#store.put(state);
      });
    }
    return {};
  };

  /** A worker handed its subtask on to another agent: dispatch it there, continuing the causal chain. */
  async #delegate(result: MeshEvent<ResultData>): Promise<void> {
    const { taskId, stageId, nodeId, delegate, stage } = result.data;
    if (delegate === undefined) return;
    const final = await this.#store.finalOf(taskId);
    if (final !== undefined) return;
    const topic = this.#runtime.topics.work(delegate.agent);
    const node = {
      taskId,
      stageId,
      nodeId,
      agent: delegate.agent,
      ...(stage === undefined ? {} : { stage }),
    };
    const discriminator = `delegate:${delegate.agent}`;
    if ((await this.#runtime.producer.missingTopics([topic])).length > 0) {
      // Nothing would ever run it: the node fails now, and the aggregator joins its stage without it.
      const failed = deriveEvent(result, {
        type: 'io.mesh.subtask.failed',
        source,
        discriminator,
        data: {
          ...node,
          failure: 'handler_error',
          detail: `${result.data.agent} delegated to agent ${delegate.agent}, ${unservedWhy(delegate.agent, topic)}`,
        },
      });
      await this.#publish(taskId, [{ topic: this.#runtime.topics.results, event: failed }]);
      return;
    }
    const assigned = deriveEvent(result, {
      type: 'io.mesh.subtask.assigned',
      source,
      agent: delegate.agent,
      discriminator,
      data: { ...node, input: delegate.input },
    });
    await this.#publish(taskId, [{ topic, event: assigned }]);
  }

  /**
   * The agents that have a work topic, sorted. @throws MeshError `kafka_unavailable` (the event is
   * tried again in place).
   */
  async #agentNames(): Promise<string[]> {
    return (await this.#runtime.admin.listTopics())
      .map((topic) => this.#runtime.topics.agentOf(topic))
      .filter((agent) => agent !== undefined)
      .sort();
  }

  /**
   * Why `stages` cannot run, when a node names an agent without a work topic: its assignment could
   * not be written, and no worker would ever take it. Checked when a plan is accepted, before
   * anything of it is dispatched. @throws MeshError `kafka_unavailable` (the event is tried again).
   */
  async #unserved(stages: PlannedStage[]): Promise<string | undefined> {
    const nodes = stages.flatMap((stage) =>
      (stage.nodes ?? []).map((node) => ({
        stage: stage.id,
        agent: node.agent,
        topic: this.#runtime.topics.work(node.agent),
      })),
    );
    if (nodes.length === 0) return undefined;
    const missing = new Set(await this.#runtime.producer.missingTopics(nodes.map((n) => n.topic)));
    const first = nodes.find((node) => missing.has(node.topic));
    if (first === undefined) return undefined;
    return `stage ${first.stage} names agent ${first.agent}, ${unservedWhy(first.agent, first.topic)}`;
  }

  // ── deadlines ─────────────────────────────────────────────────────────────────────────────────

  /** Fails every task whose deadline has passed. Called on a timer; safe with several replicas. */
  async tickDeadlines(now = Date.now()): Promise<void> {
    for (const taskId of await this.#store.dueDeadlines(now)) {
      await this.#store.withLock(taskId, async (state) => {
        if (
          state !== undefined &&
          !terminalStatuses.includes(state.status) &&
          state.request !== undefined
        ) {
          const cause = { ...state.request, data: undefined } as MeshEvent;
          await this.#fail(
            state,
            cause,
            'deadline_exceeded',
            `task did not finish by its deadline ${state.deadline ?? ''}`,
          );
        }
        // Only once the failure is published: a tick that fails (Kafka away) retries on the next one.
        await this.#store.removeDeadline(taskId);
      });
    }
  }

  // ── shared steps ──────────────────────────────────────────────────────────────────────────────

  /**
   * Dispatches every pending stage whose dependencies are done, then saves the state.
   *
   * Planned stages count their hops from the request, not from the stage event that unblocked them:
   * the hop limit bounds delegation chains between agents, not the length of a workflow (see
   * docs/contract.md, "Extensions").
   */
  async #advance(state: TaskState, cause: MeshEvent): Promise<void> {
    const emits: Emit[] = [];
    const done = (id: string): boolean =>
      ['completed', 'partial'].includes(state.stages[id]?.status ?? '');
    for (const stage of state.plan ?? []) {
      const current = state.stages[stage.id] as StageState;
      if (current.status !== 'pending' || !stage.dependsOn.every(done)) continue;
      current.startedAt = new Date().toISOString();
      if (stage.gate !== undefined) {
        current.status = 'awaiting_approval';
        if (!(await this.#dispatchable(state, stage, cause, emits))) return;
        continue;
      }
      const nodes = stage.nodes ?? [];
      if (
        state.budget.maxSteps !== undefined &&
        state.usage.steps + nodes.length > state.budget.maxSteps
      ) {
        await this.#store.put(state);
        await this.#publish(state.id, emits);
        await this.#fail(
          state,
          cause,
          'budget_exceeded',
          `step budget of ${state.budget.maxSteps} spent: ${state.usage.steps} steps run, stage ${stage.id} needs ${nodes.length} more`,
        );
        return;
      }
      state.usage.steps += nodes.length;
      current.status = 'dispatched';
      if (stage.timeoutMs !== undefined)
        current.deadline = new Date(Date.now() + stage.timeoutMs).toISOString();
      if (!(await this.#dispatchable(state, stage, cause, emits))) return;
    }
    state.status = Object.values(state.stages).some((s) => s.status === 'awaiting_approval')
      ? 'awaiting_approval'
      : 'running';
    // Saved before it is published: a stage result can then never arrive before the state that
    // expects it. A crash in between is repaired by #redrive when the cause is redelivered.
    await this.#store.put(state);
    await this.#publish(state.id, emits);
  }

  /**
   * Publishes again what the saved state says is outstanding — the assignments of dispatched
   * stages and the approval requests of waiting gates — with their original ids. Called when a
   * redelivered event finds its effect already saved: the state is written before its events are
   * published, so a crash in between left them unpublished; copies that did go out are dropped by
   * id by their consumers.
   */
  async #redrive(state: TaskState, cause: MeshEvent): Promise<void> {
    if (terminalStatuses.includes(state.status)) return;
    const emits: Emit[] = [];
    for (const stage of state.plan ?? []) {
      const status = state.stages[stage.id]?.status;
      if (status === 'dispatched' || status === 'awaiting_approval')
        emits.push(...this.#stageEvents(state, stage, cause));
    }
    await this.#publish(state.id, emits);
  }

  /**
   * Adds the events that start `stage` to `emits`. False when one of them is more than one event
   * can carry (the task input and the earlier results it passes on are too large): the task fails
   * with `invalid_output` and nothing of it is published, instead of an assignment that Kafka
   * refuses every time, which would leave the task running for good.
   */
  async #dispatchable(
    state: TaskState,
    stage: PlannedStage,
    cause: MeshEvent,
    emits: Emit[],
  ): Promise<boolean> {
    const events = this.#stageEvents(state, stage, cause);
    for (const { event } of events) {
      const bytes = dataBytes(event.data);
      if (bytes <= maxEventDataBytes) continue;
      const passed = Object.entries(state.stages)
        .filter(([, other]) => other.results !== undefined)
        .map(([id, other]) => `stage ${id} (${formatBytes(dataBytes(other.results))})`);
      const status = state.stages[stage.id];
      if (status !== undefined) status.status = 'failed';
      const detail =
        `stage ${stage.id} cannot start: its ${event.type} would carry ${formatBytes(bytes)} of ` +
        `data, more than the ${formatBytes(maxEventDataBytes)} one event can carry (Kafka's record ` +
        `limit): it passes on the task input (${formatBytes(dataBytes(state.input))})` +
        (passed.length === 0 ? '' : ` and the results of ${passed.join(', ')}`);
      this.#runtime.log.warn(
        { taskId: state.id, stageId: stage.id, bytes, limit: maxEventDataBytes },
        'task failed: what a stage passes on is more than one event can carry',
      );
      await this.#fail(state, cause, 'invalid_output', detail);
      return false;
    }
    emits.push(...events);
    return true;
  }

  /** The events that start `stage`: one assignment per node, or the gate's approval request. */
  #stageEvents(state: TaskState, stage: PlannedStage, cause: MeshEvent): Emit[] {
    const previous: Record<string, Record<string, unknown>> = {};
    for (const [id, other] of Object.entries(state.stages))
      if (['completed', 'partial'].includes(other.status) && other.results !== undefined)
        previous[id] = other.results;
    const request = { ...(state.request ?? attributesOf(cause)), data: undefined } as MeshEvent;
    if (stage.gate !== undefined) {
      return [
        {
          topic: this.#runtime.topics.escalations,
          event: this.#planned(request, cause, {
            type: 'io.mesh.approval.requested',
            discriminator: `gate:${stage.id}`,
            data: {
              taskId: state.id,
              gateId: stage.gate.id,
              stageId: stage.id,
              ...(stage.gate.prompt === undefined ? {} : { prompt: stage.gate.prompt }),
              context: { previous },
            },
          }),
        },
      ];
    }
    const deadline = state.stages[stage.id]?.deadline;
    const nodes = stage.nodes ?? [];
    const join = {
      nodes: nodes.map((n) => n.id),
      join: stage.join ?? 'all',
      ...(stage.quorum === undefined ? {} : { quorum: stage.quorum }),
      ...(deadline === undefined ? {} : { deadline }),
      onTimeout: stage.onTimeout ?? 'fail',
      final: stage.final,
      template: state.template,
      ...(state.synthesis === undefined ? {} : { synthesis: state.synthesis }),
    };
    return nodes.map((node) => {
      const assigned = this.#planned(request, cause, {
        type: 'io.mesh.subtask.assigned',
        agent: node.agent,
        discriminator: `assign:${stage.id}/${node.id}`,
        data: {
          taskId: state.id,
          stageId: stage.id,
          nodeId: node.id,
          agent: node.agent,
          input: { task: state.input, previous, ...node.input },
          stage: join,
          ...(node.outputSchema === undefined ? {} : { outputSchema: node.outputSchema }),
          ...(node.timeoutMs === undefined ? {} : { timeoutMs: node.timeoutMs }),
          ...(node.model === undefined ? {} : { model: node.model }),
        },
      });
      // Keyed by task and node, not task alone: the nodes of a fan-out to one agent run in parallel.
      assigned.partitionkey = `${state.id}/${node.id}`;
      return { topic: this.#runtime.topics.work(node.agent), event: assigned };
    });
  }

  /** An event of the plan: lineage (hops, agent path, task id) from the request, causation from `cause`. */
  #planned<D>(
    request: MeshEvent,
    cause: MeshEvent,
    init: { type: string; discriminator: string; agent?: string; data: D },
  ): MeshEvent<D> {
    const event = deriveEvent(request, {
      source,
      type: init.type,
      data: init.data,
      id: deterministicId(
        request.correlationid ?? request.id,
        `${init.type}\u0000${init.discriminator}`,
      ),
      ...(init.agent === undefined ? {} : { agent: init.agent }),
    });
    event.causationid = cause.id;
    event.traceparent = childTraceparent(cause.traceparent);
    return event;
  }

  /** Removes the task from the deadline set: only a task with a deadline was ever added to it. */
  async #dropDeadline(state: TaskState): Promise<void> {
    if (state.deadline !== undefined) await this.#store.removeDeadline(state.id);
  }

  async #fail(
    state: TaskState,
    cause: MeshEvent,
    reason: FailureReason,
    detail: string,
  ): Promise<void> {
    await this.#end(state, cause, 'io.mesh.task.failed', {
      taskId: state.id,
      reason,
      detail: detail.slice(0, 2000),
      usage: state.usage,
    });
    state.failure = { reason, detail };
    await this.#store.put(state);
  }

  /** Claims the task's final state and publishes it; when another path ended the task first, adopts that. */
  async #end(
    state: TaskState,
    cause: MeshEvent,
    type: (typeof finalTypes)[number],
    data: Record<string, unknown>,
  ): Promise<void> {
    await this.#dropDeadline(state);
    const request = { ...(state.request ?? attributesOf(cause)), data: undefined } as MeshEvent;
    const event = this.#planned(request, cause, { type, discriminator: 'final', data });
    // The claimant is this final event and its cause: a retry of this path publishes, another path does not.
    if (await this.#store.claimFinal(state.id, type, `${event.id} ${cause.id}`)) {
      await this.#publish(state.id, [{ topic: this.#runtime.topics.outputs, event }]);
      state.status =
        type === 'io.mesh.task.failed'
          ? 'failed'
          : type === 'io.mesh.task.cancelled'
            ? 'cancelled'
            : 'completed';
    } else {
      const final = await this.#store.finalOf(state.id);
      state.status =
        final === 'io.mesh.task.completed'
          ? 'completed'
          : final === 'io.mesh.task.cancelled'
            ? 'cancelled'
            : 'failed';
    }
    await this.#store.put(state);
  }
}

function unservedWhy(agent: string, topic: string): string {
  return `which has no work topic ${topic}: no worker runs it (\`mesh topics init --agents ${agent}\` creates the topic; a worker must host the agent)`;
}

function addUsage(total: Usage, usage: Partial<Usage> | undefined): void {
  if (usage === undefined) return;
  total.promptTokens += usage.promptTokens ?? 0;
  total.completionTokens += usage.completionTokens ?? 0;
  total.costUsd += usage.costUsd ?? 0;
}

/** Which budget the task has overspent, if any (steps are checked before dispatch). */
export function budgetExceeded(state: TaskState): string | undefined {
  const tokens = state.usage.promptTokens + state.usage.completionTokens;
  if (state.budget.maxTokens !== undefined && tokens > state.budget.maxTokens)
    return `token budget of ${state.budget.maxTokens} spent: ${tokens} tokens used`;
  if (state.budget.maxCostUsd !== undefined && state.usage.costUsd > state.budget.maxCostUsd) {
    return `cost budget of $${state.budget.maxCostUsd} spent: $${state.usage.costUsd.toFixed(4)} used`;
  }
  return undefined;
}

function describeFailures(data: StageCompletedData): string {
  const failures = Object.entries(data.failures ?? {}).map(
    ([node, f]) => `${node}: ${f.failure}${f.detail === undefined ? '' : ` (${f.detail})`}`,
  );
  return failures.length === 0 ? `stage ${data.stageId} ${data.status}` : failures.join('; ');
}
