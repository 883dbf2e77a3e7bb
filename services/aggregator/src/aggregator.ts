/**
 * The aggregator's work: join each stage's results as they arrive on `mesh.results`, decide it by
 * the rules of `join.ts` under the store's atomic close, and publish `io.mesh.stage.completed` (and
 * for the final stage the task's outcome) — from the result handler, or from the deadline timer
 * when a stage's deadline passes first.
 *
 * Delivery: the state is in Redis, the close is atomic, and what a closed stage publishes is stored
 * with it, so a redelivered result (after a crash between closing and publishing) or the timer
 * publishes the same events again with the same deterministic ids, which consumers drop as repeats.
 */
import { deriveEvent, deterministicId, type MeshEvent } from '@mesh/envelope';
import { isMeshError, retryable, safeDetail } from '@mesh/errors';
import {
  dataBytes,
  everyRound,
  maxEventDataBytes,
  type Emit,
  type HandlerContext,
  type MeshRuntime,
  type Rounds,
} from '@mesh/runtime';
import type { Logger } from '@mesh/telemetry';
import {
  admit,
  deadlineMs,
  decide,
  singleNodeSpec,
  type Decision,
  type JoinSpec,
  type NodeOutcome,
  type Usage,
} from './join.ts';
import { eventTypes, stageEvents, type StageRef } from './outcome.ts';
import {
  causeOf,
  JoinStore,
  type CauseAttributes,
  type ClosedStage,
  type StageState,
} from './store.ts';

/** The fields of `io.mesh.subtask.completed` / `.failed` the aggregator reads. */
interface ResultData {
  taskId: string;
  stageId: string;
  nodeId: string;
  agent: string;
  output?: Record<string, unknown>;
  failure?: string;
  detail?: string;
  usage?: Usage;
  stage?: JoinSpec;
}

export interface AggregatorOptions {
  /** How often the timer looks for due stages. */
  tickMs: number;
  /**
   * How long a closed stage may stay unpublished before the timer publishes it (the closer died),
   * and how long a replica holds a due stage before another may take it over.
   */
  republishAfterMs: number;
}

/** Compare-and-set rounds before giving up on one event (it is then retried in place). */
const maxRounds = 50;
/** Due stages taken per timer round. */
const dueBatch = 100;

/** The id of a stage's `io.mesh.stage.completed`: the same whichever path and replica decides it. */
export function stageEventId(ref: StageRef): string {
  return deterministicId(ref.taskId, `stage:${ref.stageId}`);
}

/** The id of the task outcome the final stage publishes. */
export function outcomeEventId(taskId: string): string {
  return deterministicId(taskId, 'final');
}

export class Aggregator {
  readonly store: JoinStore;
  readonly #runtime: MeshRuntime;
  readonly #options: AggregatorOptions;
  readonly #log: Logger;
  readonly #source: string;
  #rounds: Rounds | undefined;

  constructor(runtime: MeshRuntime, options: AggregatorOptions) {
    this.#runtime = runtime;
    this.#options = options;
    this.#log = runtime.log;
    this.#source = `/mesh/${runtime.config.service}`;
    this.store = new JoinStore(runtime.redis, {
      prefix: runtime.keyPrefix,
      ttlMs: runtime.config.idempotencyTtlMs,
    });
  }

  /**
   * Handles one `io.mesh.subtask.completed` / `.failed`: records the node's outcome, decides and
   * publishes when the stage is decided. A result of a closed stage is ignored, but re-publishes
   * the stage when its events were never acknowledged.
   * @throws MeshError `redis_unavailable` / `kafka_unavailable` (retryable: the runtime tries the
   *   event again in place and commits nothing until then).
   */
  async handleResult(ctx: HandlerContext): Promise<void> {
    const data = ctx.event.data as ResultData & { delegate?: unknown };
    if (ctx.event.type === eventTypes.subtaskCompleted && data.delegate !== undefined) {
      // The agent handed the node on (the orchestrator dispatches the delegate): not its outcome yet.
      return;
    }
    const ref: StageRef = { taskId: data.taskId, stageId: data.stageId };
    const outcome: NodeOutcome =
      ctx.event.type === eventTypes.subtaskCompleted
        ? { ok: true, output: data.output ?? {}, ...usageOf(data) }
        : {
            ok: false,
            failure: data.failure ?? 'handler_error',
            detail: data.detail ?? '',
            ...usageOf(data),
          };
    // Made on first use: most results never log, and two child loggers per result were a visible
    // share of the aggregator's CPU.
    let child: Logger | undefined;
    const log = (): Logger =>
      (child ??= ctx.log.child({ stageId: ref.stageId, nodeId: data.nodeId }));
    for (let round = 0; round < maxRounds; round += 1) {
      const state = await this.store.load(ref);
      if (state.published) {
        log().debug('result of a stage already decided; ignored');
        return;
      }
      if (state.closed !== undefined) {
        await this.#publish(ref, state.closed, state.final, log);
        return;
      }
      const spec = state.spec ?? data.stage ?? singleNodeSpec(data.nodeId);
      const admission = admit(spec, state.outcomes, data.nodeId);
      if (admission === 'unknown_node') {
        log().warn({ nodes: spec.nodes }, 'result of a node that is not in its stage; ignored');
        return;
      }
      if (admission === 'duplicate') {
        log().debug('second outcome of a node; the first one counts');
        return;
      }
      const outcomes = { ...state.outcomes, [data.nodeId]: outcome };
      const first = state.first ?? causeOf(ctx.event);
      const closed = await this.#commit(ref, state, spec, outcomes, first, causeOf(ctx.event), {
        id: data.nodeId,
        outcome,
      });
      if (closed === 'conflict') continue;
      if (closed !== undefined) await this.#publish(ref, closed.closed, closed.final, log);
      return;
    }
    throw retryable('redis_unavailable', `join state of stage ${ref.stageId} kept changing`);
  }

  /**
   * Decides the stage from `outcomes` and commits the change: the new outcome (if any) and, when
   * decided, the close. `conflict` when the state moved since it was read; undefined when the stage
   * stays open.
   */
  async #commit(
    ref: StageRef,
    state: StageState,
    spec: JoinSpec,
    outcomes: Record<string, NodeOutcome>,
    first: CauseAttributes,
    cause: CauseAttributes,
    node?: { id: string; outcome: NodeOutcome },
  ): Promise<'conflict' | { closed: ClosedStage; final?: 'claimed' | 'taken' } | undefined> {
    const now = Date.now();
    const due = deadlineMs(spec);
    const decision = decide(spec, outcomes, due !== undefined && now >= due);
    const closed =
      decision.status === 'undecided' ? undefined : close(ref, spec, outcomes, decision, cause);
    const result = await this.store.commit(ref, state.version, {
      ...(node === undefined ? {} : { node }),
      spec,
      first,
      ...(due === undefined ? {} : { deadline: due }),
      ...(closed === undefined
        ? {}
        : {
            close: {
              closed,
              ...(closed.outcome === undefined ? {} : { finalType: closed.outcome.type }),
              republishAt: now + this.#options.republishAfterMs,
            },
          }),
    });
    if (result.state === 'conflict') return 'conflict';
    if (result.state === 'recorded' || closed === undefined) return undefined;
    const decided = {
      taskId: ref.taskId,
      stageId: ref.stageId,
      status: closed.stage.status,
      reason: closed.reason,
      final: result.final,
    };
    // Results too large to publish are a fault of the agents or the plan that an operator should see.
    if (closed.reason === 'results_too_large')
      this.#log.warn(decided, 'stage failed: its results are more than one event can carry');
    else this.#log.info(decided, 'stage decided');
    return result.final === undefined ? { closed } : { closed, final: result.final };
  }

  /**
   * Publishes a closed stage's events and marks it published. The task outcome goes out only when
   * this stage claimed the task's final marker. @throws MeshError `kafka_unavailable`,
   * `redis_unavailable` (retryable).
   */
  async #publish(
    ref: StageRef,
    closed: ClosedStage,
    final: 'claimed' | 'taken' | undefined,
    log: () => Logger,
  ): Promise<void> {
    const topics = this.#runtime.topics;
    const stageEvent = deriveEvent(closed.cause, {
      type: eventTypes.stageCompleted,
      source: this.#source,
      data: closed.stage,
      id: stageEventId(ref),
    });
    const emits: Emit[] = [{ topic: topics.stages, event: stageEvent }];
    if (closed.outcome !== undefined && final === 'claimed') {
      const outcomeEvent: MeshEvent = deriveEvent(stageEvent, {
        type: closed.outcome.type,
        source: this.#source,
        data: closed.outcome.data,
        id: outcomeEventId(ref.taskId),
      });
      emits.push({ topic: topics.outputs, event: outcomeEvent });
    } else if (closed.outcome !== undefined) {
      log().info({ taskId: ref.taskId }, 'task already ended by another path; stage result only');
    }
    await this.#runtime.publish(emits);
    await this.store.markPublished(ref);
  }

  /** Starts the deadline timer: every `tickMs`, decides the stages whose deadline passed. */
  start(): void {
    this.#rounds ??= everyRound({
      everyMs: this.#options.tickMs,
      round: () => this.tick(),
      log: this.#log,
      what: 'deadline round',
    });
  }

  /** Stops the timer and waits a while for a round in progress (see `Rounds.stop`). */
  async stop(): Promise<void> {
    await this.#rounds?.stop();
  }

  /**
   * One timer round: takes the due stages (claimed in Redis, so each is handled by one replica) and
   * settles each. A stage that fails here comes due again after `republishAfterMs`.
   */
  async tick(): Promise<void> {
    const members = await this.store.claimDue(Date.now(), this.#options.republishAfterMs, dueBatch);
    await Promise.all(
      members.map(async (member) => {
        try {
          await this.#settle(member);
        } catch (error) {
          const stage = member.replace('\u0000', '/');
          if (isMeshError(error) && !error.retryable) {
            // Trying again cannot help (e.g. the events break their contract): stop retrying.
            this.#log.error({ stage, err: safeDetail(error) }, 'cannot publish a decided stage');
            await this.store.unschedule(member).catch(() => undefined);
          } else {
            this.#log.warn({ stage, err: safeDetail(error) }, 'could not settle a due stage');
          }
        }
      }),
    );
  }

  /** Decides a stage whose deadline passed, or re-publishes a closed stage nobody published. */
  async #settle(member: string): Promise<void> {
    const ref = this.store.refOf(member);
    if (ref === undefined) {
      await this.store.unschedule(member);
      return;
    }
    const child = this.#log.child({ correlationid: ref.taskId, stageId: ref.stageId });
    const log = (): Logger => child;
    for (let round = 0; round < maxRounds; round += 1) {
      const state = await this.store.load(ref);
      if (state.published) {
        await this.store.unschedule(member);
        return;
      }
      if (state.closed !== undefined) {
        child.info('re-publishing a decided stage whose events were never acknowledged');
        await this.#publish(ref, state.closed, state.final, log);
        return;
      }
      if (state.spec === undefined || state.first === undefined) {
        // Expired (or never written): nothing left to decide.
        await this.store.unschedule(member);
        return;
      }
      const due = deadlineMs(state.spec);
      if (due === undefined) {
        await this.store.unschedule(member);
        return;
      }
      if (due > Date.now()) {
        // This replica's clock is behind the one that scheduled it.
        await this.store.schedule(member, due);
        return;
      }
      const closed = await this.#commit(
        ref,
        state,
        state.spec,
        state.outcomes,
        state.first,
        state.first,
      );
      if (closed === 'conflict') continue;
      if (closed !== undefined) await this.#publish(ref, closed.closed, closed.final, log);
      return;
    }
    throw retryable('redis_unavailable', `join state of stage ${ref.stageId} kept changing`);
  }
}

function usageOf(data: ResultData): { usage?: Usage } {
  return data.usage === undefined ? {} : { usage: data.usage };
}

/** The closed form of a decided stage: what it publishes and the event that caused it. */
function close(
  ref: StageRef,
  spec: JoinSpec,
  outcomes: Record<string, NodeOutcome>,
  decision: Exclude<Decision, { status: 'undecided' }>,
  cause: CauseAttributes,
): ClosedStage {
  const events = stageEvents(ref, spec, outcomes, decision, maxEventDataBytes, dataBytes);
  return {
    cause,
    reason: events.decision.reason,
    stage: events.stage,
    ...(events.outcome === undefined ? {} : { outcome: events.outcome }),
  };
}
