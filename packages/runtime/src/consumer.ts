/**
 * The consumer runtime: the one way a service consumes.
 *
 * - Different keys of one partition run concurrently, the same key in order (the next event of a
 *   key starts once the last one's outcome is durable); at most `partitionConcurrency` events per
 *   partition and `concurrency` per process run, `finishingFactor` times as many again may be
 *   finishing (their handler returned, their outcome being written), and a full partition is paused
 *   until it drains (backpressure).
 * - Handlers never block the fetch loop, so the member keeps heartbeating while handlers take minutes.
 * - An offset is committed only when it and every earlier offset of its partition have a durable
 *   outcome: the handler's events acknowledged by Kafka (acks=all), or the event on a retry tier or
 *   on `mesh.dlq`. After a rebalance nothing is committed for partitions this member lost.
 * - Malformed input never reaches a handler and goes to `mesh.dlq`; a handler's error is routed by the
 *   error taxonomy: retryable → the next retry tier, terminal or out of attempts → `mesh.dlq`.
 * - Infrastructure faults (Kafka, Redis or the registry unreachable) dead-letter nothing: the event is
 *   tried again in place with backoff, and its partition stops moving until they are back.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { finishingFactor, type MeshConfig } from '@mesh/config';
import type { EventCodec } from '@mesh/contracts';
import {
  checkLoopGuards,
  deriveEvent,
  type DeriveInit,
  type LoopGuardLimits,
  type MeshEvent,
} from '@mesh/envelope';
import { failureClassOf, safeDetail, terminal, toMeshError, type MeshError } from '@mesh/errors';
import type { Claim, IdempotencyStore, Lease, LeaseTrouble } from '@mesh/idempotency';
import {
  crashNeedsAction,
  isRecordTooLarge,
  leaveTimeoutMs,
  resultWithin,
  type ConsumedRecord,
  type GroupConsumer,
  type MeshProducer,
  type OutgoingRecord,
  type TopicPartition,
} from '@mesh/kafka';
import { RepeatedLines, type Logger, type MeshMetrics } from '@mesh/telemetry';
import { publishEvents, type Emit, type PublishDeps } from './publish.ts';
import { PartitionTracker } from './tracker.ts';
import type { TopicNames } from './topics.ts';

export interface HandlerContext<D = unknown> {
  event: MeshEvent<D>;
  topic: string;
  partition: number;
  offset: string;
  /** Delivery attempt of this event, from 1 (`meshattempt`). */
  attempt: number;
  /** Stable across redeliveries of this event to this group: pass it to the tools the handler calls. */
  idempotencyKey: string;
  /** Aborted when the lease is lost or the process is shutting down past its drain timeout. */
  signal: AbortSignal;
  log: Logger;
  /** A child event of this one, with this service as source (see `deriveEvent`). */
  derive<T>(init: Omit<DeriveInit<T>, 'source'> & { source?: string }): MeshEvent<T>;
}

export interface HandlerResult {
  emit?: Emit[];
}

export type Handler = (ctx: HandlerContext) => Promise<HandlerResult | undefined | void>;

export interface RawContext {
  log: Logger;
  /** Aborted when the process is shutting down past its drain timeout. */
  signal: AbortSignal;
}

export type RawHandler = (record: ConsumedRecord, ctx: RawContext) => Promise<void>;

export interface ConsumeOptions {
  groupId: string;
  topics: string[];
  /** Handlers by event type; an event of another type is dead-lettered as `malformed_event`. */
  handlers: Record<string, Handler>;
  /**
   * Takes the records as they are, without decoding, guards or idempotency: for consumers of
   * `mesh.dlq` and the retry tiers, whose records may be anything and must never be dead-lettered
   * again. Any error is retried in place, so nothing is dropped.
   */
  raw?: RawHandler;
  /** Topics that also accept structured mode and plain JSON (the intake topic). */
  intakeTopics?: string[];
  /** Claim events in Redis so a completed one never runs again (default true). */
  idempotency?: boolean;
  /** Check hop and revisit limits before the handler (default true). The target agent is `event.agent`. */
  loopGuards?: boolean;
  /** Hold an event until this time (ms since epoch) before handling it: the retry tiers' `meshnotbefore`. */
  holdUntil?: (event: MeshEvent) => number | undefined;
  /** Events to publish besides the dead letter when an event fails for good (e.g. `subtask.failed`). */
  onTerminalFailure?: (ctx: HandlerContext, error: MeshError) => Emit[];
  /** Label for `mesh_inflight` and the handler histogram; defaults to `event.agent`. */
  agentLabel?: (event: MeshEvent) => string;
  sessionTimeoutMs?: number;
  heartbeatIntervalMs?: number;
  commitIntervalMs?: number;
}

export interface ConsumerDeps {
  config: MeshConfig;
  createGroupConsumer: (options: {
    groupId: string;
    sessionTimeoutMs?: number;
    heartbeatIntervalMs?: number;
  }) => GroupConsumer;
  producer: MeshProducer;
  codec: EventCodec;
  idempotency: IdempotencyStore;
  metrics: MeshMetrics;
  log: Logger;
  topics: TopicNames;
}

interface Item {
  record: ConsumedRecord;
  tracker: PartitionTracker;
  key: string;
  finishing: boolean;
}

/**
 * Faults of the mesh's own dependencies, never of the event: it is tried again in place. A setting
 * a dependency refuses mid-run (registry credentials revoked, Redis's CA rotated) is one of them.
 */
const infraCodes = new Set([
  'kafka_unavailable',
  'redis_unavailable',
  'registry_unavailable',
  'config_invalid',
]);

/** Thrown inside processing when the work must be abandoned without an outcome (shutdown, revocation). */
class Abandoned extends Error {}
/**
 * How long a stop whose drain ran out waits for the handlers it then aborted to settle (those that
 * heed their signal take a moment), before the last commit and the leave.
 */
const abortedSettleMs = 1_000;

/** Thrown inside processing when a handler failed after its lease was lost: tried again from the claim. */
class LeaseLost extends Error {}

const intakeDecoding = { intake: true };

interface ContextShared {
  log: Logger;
  /** Aborted when the process stops past its drain timeout. */
  signal: AbortSignal;
  /**
   * The contexts whose handler asked for its signal and has not finished: each is aborted with the
   * shared signal. Kept here rather than as a listener per event on the shared signal, which would
   * pile up a thousand listeners on one long-lived signal.
   */
  watching: Set<Context>;
  /** The source of derived events: this service. */
  source: string;
}

/**
 * What a handler sees of its event: one object per event whose methods live on the prototype, not
 * closures made for each event.
 */
class Context implements HandlerContext {
  readonly event: MeshEvent;
  readonly topic: string;
  readonly partition: number;
  readonly offset: string;
  readonly attempt: number;
  readonly idempotencyKey: string;
  readonly #shared: ContextShared;
  #log: Logger | undefined;
  /** Made on first use of `signal`: most handlers never look at it. */
  #own: AbortController | undefined;
  #finished = false;
  /** Why the lease of this event was lost while it ran, if it was. */
  #lost: Error | undefined;

  constructor(shared: ContextShared, item: Item, event: MeshEvent, idempotencyKey: string) {
    this.#shared = shared;
    this.event = event;
    this.topic = item.record.topic;
    this.partition = item.record.partition;
    this.offset = item.record.offset;
    this.attempt = event.meshattempt ?? 1;
    this.idempotencyKey = idempotencyKey;
  }

  /** Aborted when this event's lease is lost, or with the process's stop (`ContextShared.signal`). */
  get signal(): AbortSignal {
    if (this.#own === undefined) {
      this.#own = new AbortController();
      const shared = this.#shared.signal;
      if (this.#lost !== undefined) this.#own.abort(this.#lost);
      else if (shared.aborted) this.#own.abort(shared.reason);
      else if (!this.#finished) this.#shared.watching.add(this);
    }
    return this.#own.signal;
  }

  /** The lease was lost while the handler ran: another member may run the event too. */
  get leaseLost(): boolean {
    return this.#lost !== undefined;
  }

  /** Aborts the handler's signal: its work may be running elsewhere now, and is not ours to finish. */
  loseLease(reason: string): void {
    if (this.#lost !== undefined) return;
    this.#lost = new Error(`the lease of event ${this.event.id} was lost: ${reason}`);
    this.#own?.abort(this.#lost);
  }

  /** The process stops past its drain timeout. */
  abort(reason: unknown): void {
    this.#own?.abort(reason);
  }

  /** The handler and its outcome are done: the process's stop no longer concerns it. */
  finished(): void {
    this.#finished = true;
    this.#shared.watching.delete(this);
  }

  /** Made on first use: most handlers never log, and a child logger per event is not free. */
  get log(): Logger {
    return (this.#log ??= this.#shared.log.child({
      id: this.event.id,
      correlationid: this.event.correlationid,
      type: this.event.type,
    }));
  }

  derive<T>(init: Omit<DeriveInit<T>, 'source'> & { source?: string }): MeshEvent<T> {
    return deriveEvent(this.event, { source: this.#shared.source, ...init });
  }
}

export class MeshConsumer {
  readonly groupId: string;
  readonly #options: ConsumeOptions;
  readonly #deps: ConsumerDeps;
  readonly #consumer: GroupConsumer;
  readonly #trackers = new Map<string, PartitionTracker>();
  readonly #keyQueues = new Map<string, Item[]>();
  readonly #abort = new AbortController();
  readonly #service: string;
  /** Its infrastructure warnings: one per fault and window, not one per event and attempt. */
  readonly #faults = new RepeatedLines();
  #pending = 0;
  #finishing = 0;
  #stopping = false;
  #commitTimer: NodeJS.Timeout | undefined;
  #committing: Promise<boolean> | undefined;
  #drained: (() => void) | undefined;
  /** Since when processing fails on a dependency, and what it said the last time, while it does. */
  #degraded: { since: number; by: string } | undefined;
  /** Partitions with records fetched but not yet admitted. */
  readonly #backlogged = new Set<PartitionTracker>();
  #assignments = 0;
  /** Computed once, not per event. */
  readonly #intakeTopics: ReadonlySet<string>;
  readonly #guardLimits: LoopGuardLimits;
  /** What every handler context of this consumer shares. */
  readonly #contextShared: ContextShared;
  readonly #publishing: PublishDeps;

  constructor(deps: ConsumerDeps, options: ConsumeOptions) {
    this.#deps = deps;
    this.#options = options;
    this.groupId = options.groupId;
    this.#service = deps.config.service;
    this.#intakeTopics = new Set(options.intakeTopics ?? []);
    this.#guardLimits = { maxHops: deps.config.maxHops, maxRevisits: deps.config.maxRevisits };
    this.#publishing = {
      codec: deps.codec,
      producer: deps.producer,
      metrics: deps.metrics,
      service: deps.config.service,
    };
    this.#contextShared = {
      log: deps.log,
      signal: this.#abort.signal,
      watching: new Set(),
      source: `/mesh/${deps.config.service}`,
    };
    this.#consumer = deps.createGroupConsumer({
      groupId: options.groupId,
      ...(options.sessionTimeoutMs === undefined
        ? {}
        : { sessionTimeoutMs: options.sessionTimeoutMs }),
      ...(options.heartbeatIntervalMs === undefined
        ? {}
        : { heartbeatIntervalMs: options.heartbeatIntervalMs }),
    });
  }

  /** How many times the group assigned partitions to this member (1 when it never rebalanced). */
  get assignments(): number {
    return this.#assignments;
  }

  /** Events taken and not yet finished. */
  get pending(): number {
    return this.#pending;
  }

  /** When processing first failed on Kafka, Redis or the registry being unreachable, if it still does. */
  get degradedSince(): number | undefined {
    return this.#degraded?.since;
  }

  /**
   * Why the consumer is not healthy, undefined when it is: out of its group, or the last error of
   * the dependency its events wait on (a Redis that answers PING but refuses writes is ready by
   * every other check).
   */
  get unhealthyBecause(): string | undefined {
    if (!this.#consumer.healthy) return `${this.groupId} is out of its group`;
    if (this.#degraded !== undefined) return `${this.groupId} waits on ${this.#degraded.by}`;
    return undefined;
  }

  async start(): Promise<void> {
    await this.#consumer.start(this.#options.topics, {
      take: (topic, partition, records, end) => this.#take(topic, partition, records, end),
      assigned: (partitions) => this.#assigned(partitions),
      crashed: (error, restartInMs) => this.#crashed(error, restartInMs),
    });
    const interval = this.#options.commitIntervalMs ?? 200;
    this.#commitTimer = setInterval(() => void this.#commit(), interval);
    this.#commitTimer.unref();
  }

  /**
   * Stops fetching, waits up to `timeoutMs` for running handlers, commits what finished and leaves
   * the group. Handlers still running then are abandoned uncommitted: their events are redelivered.
   */
  async stop(timeoutMs = this.#deps.config.shutdownTimeoutMs): Promise<void> {
    if (this.#stopping) return;
    this.#stopping = true;
    // Backlogged records were never taken: they stay uncommitted and are fetched again later.
    for (const tracker of this.#trackers.values()) tracker.backlog = [];
    this.#backlogged.clear();
    this.#consumer.pause(
      [...this.#trackers.values()].map(({ topic, partition }) => ({ topic, partition })),
    );
    await this.#untilDrained(timeoutMs);
    this.#abort.abort();
    for (const ctx of this.#contextShared.watching) ctx.abort(this.#abort.signal.reason);
    // Handlers that heed their signal settle at once: their events are abandoned, and their leases
    // given back, before the last commit and the leave, so the next member runs them without
    // waiting the leases out.
    await this.#untilDrained(abortedSettleMs);
    clearInterval(this.#commitTimer);
    // Kafka gets a bounded time for the last commit and the leave: when it cannot be reached, what
    // was not committed is delivered again (the idempotency keys skip what completed) rather than
    // the process hanging.
    const leaveBy = Date.now() + leaveTimeoutMs;
    const committed = await resultWithin(this.#commitLast(), leaveTimeoutMs, false);
    const left = await this.#consumer.stop(leaveBy - Date.now());
    if (!committed)
      this.#deps.log.warn(
        { group: this.groupId },
        'stopped without the last commit: the events finished since the one before will be delivered again',
      );
    if (!left)
      this.#deps.log.warn(
        { group: this.groupId },
        `Kafka did not answer within ${leaveTimeoutMs / 1_000} s: stopped without leaving the group, which drops the member after its session timeout`,
      );
  }

  /** Resolves once no event is running, or after `timeoutMs`. */
  async #untilDrained(timeoutMs: number): Promise<void> {
    if (this.#pending === 0) return;
    const drained = new Promise<void>((resolve) => (this.#drained = resolve));
    await resultWithin(drained, timeoutMs, undefined);
  }

  /**
   * A crash of the member is told once per window: a warning while it is Kafka away or busy (the
   * member restarts and rejoins by itself, and /readyz says it is out of its group meanwhile), an
   * error when it needs someone (a refused login, an error of the mesh's own code).
   */
  #crashed(error: Error, restartInMs: number): void {
    const err = safeDetail(error);
    const fields = { group: this.groupId, err, restartInMs };
    const message = 'consumer crashed; it restarts and rejoins';
    if (crashNeedsAction(error))
      this.#faults.error(this.#deps.log, `crash\u0000${err}`, fields, message);
    else this.#faults.warn(this.#deps.log, `crash\u0000${err}`, fields, message);
  }

  #trackerKey(topic: string, partition: number): string {
    return `${topic}\u0000${partition}`;
  }

  #assigned(partitions: TopicPartition[]): void {
    this.#assignments += 1;
    const keep = new Set(partitions.map((p) => this.#trackerKey(p.topic, p.partition)));
    for (const [key, tracker] of this.#trackers) {
      if (!keep.has(key)) {
        // Lost in the rebalance: its running work finishes but is never committed by this member.
        tracker.revoked = true;
        this.#trackers.delete(key);
      }
      // After a rejoin kafkajs fetches every partition again from its committed offset, so the
      // backlog would arrive twice: drop it (`seen` drops what was already taken) and fetch afresh.
      tracker.backlog = [];
      tracker.paused = false;
    }
    this.#backlogged.clear();
    // kafkajs keeps a partition's pause across rebalances while the runtime just forgot why it
    // paused it: resume every assigned partition, or one paused before the rebalance (full, or
    // revoked while full and assigned back) would never be fetched again.
    if (this.#stopping) this.#consumer.pause(partitions);
    else this.#consumer.resume(partitions);
    this.#deps.log.info(
      { group: this.groupId, partitions: partitions.length },
      'partitions assigned',
    );
  }

  /**
   * Room for one more event: fewer than the bound are running (taken and their handler not yet
   * returned, queued behind their key included), and fewer than `finishingFactor` times the bound
   * are finishing (their handler returned; their outcome is being written). Counting the two apart
   * lets the next events' claims and handlers run while Kafka acknowledges the outputs of the last
   * ones, instead of the whole partition waiting for every acknowledgement in turn.
   */
  #hasRoom(tracker: PartitionTracker): boolean {
    const { partitionConcurrency, concurrency } = this.#deps.config;
    return (
      tracker.pending - tracker.finishing < partitionConcurrency &&
      tracker.finishing < partitionConcurrency * finishingFactor &&
      this.#pending - this.#finishing < concurrency &&
      this.#finishing < concurrency * finishingFactor
    );
  }

  /** The handler of `item` returned: its slot goes to the next event while its outcome is written. */
  #finishingStarted(item: Item): void {
    if (item.finishing) return;
    item.finishing = true;
    item.tracker.finishing += 1;
    this.#finishing += 1;
    this.#refill();
  }

  #finishingEnded(item: Item): void {
    if (!item.finishing) return;
    item.finishing = false;
    item.tracker.finishing -= 1;
    this.#finishing -= 1;
  }

  /**
   * Takes what fits under the partition and process bounds and keeps the rest of the fetched batch
   * in the partition's backlog, pausing the partition until the backlog is half drained: each record
   * is fetched and decoded once, however full the runtime is, and memory stays under about one and a
   * half fetches per partition. Resuming at half (not at empty) overlaps the next fetch with the
   * work left: kafkajs polls a paused partition again only after `maxWaitTime`, and waiting for an
   * empty backlog left the runtime idle for that long on every fetch.
   */
  #take(topic: string, partition: number, records: ConsumedRecord[], end: number): number {
    if (this.#stopping) return 0;
    const key = this.#trackerKey(topic, partition);
    const known = this.#trackers.get(key);
    let tracker = known ?? new PartitionTracker(topic, partition);
    if (known === undefined) this.#trackers.set(key, tracker);
    for (let i = 0; i < records.length; i += 1) {
      const record = records[i] as ConsumedRecord;
      const offset = Number(record.offset);
      // Below the committed offset with the log's end still past it is a redelivery (after a
      // rejoin, or a commit a restarting broker lost), which `seen` drops; with the end below it,
      // the log started again.
      if (offset < tracker.committed && end < tracker.committed)
        tracker = this.#restartPartition(tracker);
      if (tracker.seen(offset)) continue;
      if (tracker.backlog.length > 0 || !this.#hasRoom(tracker)) {
        const last = Number(tracker.backlog[tracker.backlog.length - 1]?.offset ?? -1);
        const kept = records
          .slice(i)
          .filter((r) => Number(r.offset) > last && !tracker.seen(Number(r.offset)));
        tracker.backlog.push(...kept);
        this.#backlogged.add(tracker);
        // Half of this fetch, not of the whole backlog: with the next fetch on top of what is left,
        // the backlog stays under one and a half fetches instead of creeping towards two.
        tracker.resumeAt = Math.floor(kept.length / 2);
        this.#pausePartition(tracker);
        return records.length;
      }
      this.#admit(tracker, record);
    }
    return records.length;
  }

  /**
   * The partition's end is below what this member committed: its log started again (its topic was
   * deleted and created anew), and kafkajs, its position out of range, fetches from the start. The old log's books are dropped — its running events finish but are never committed, as
   * after a revocation — or every offset the old log had reached would pass for a redelivery of
   * something already taken, and the new events would wait unhandled for ever.
   */
  #restartPartition(old: PartitionTracker): PartitionTracker {
    old.revoked = true;
    old.backlog = [];
    this.#backlogged.delete(old);
    const fresh = new PartitionTracker(old.topic, old.partition);
    this.#trackers.set(this.#trackerKey(old.topic, old.partition), fresh);
    if (old.paused) this.#consumer.resume([{ topic: old.topic, partition: old.partition }]);
    this.#deps.log.warn(
      {
        group: this.groupId,
        topic: old.topic,
        partition: old.partition,
        committed: old.committed,
      },
      'the end of a partition went back below the committed offset (its topic was deleted and created again?); consuming it from its new start',
    );
    return fresh;
  }

  #admit(tracker: PartitionTracker, record: ConsumedRecord): void {
    const offset = Number(record.offset);
    tracker.take(offset);
    this.#pending += 1;
    const itemKey = record.key === null ? `\u0000${offset}` : record.key.toString('latin1');
    const queueKey = `${this.#trackerKey(tracker.topic, tracker.partition)}\u0000${itemKey}`;
    const item: Item = { record, tracker, key: queueKey, finishing: false };
    const queue = this.#keyQueues.get(queueKey);
    if (queue === undefined) {
      this.#keyQueues.set(queueKey, [item]);
      this.#run(item);
    } else {
      queue.push(item);
    }
  }

  #pausePartition(tracker: PartitionTracker): void {
    if (tracker.paused) return;
    tracker.paused = true;
    this.#consumer.pause([{ topic: tracker.topic, partition: tracker.partition }]);
  }

  /** Admits backlogged records as room frees up; a half-drained partition is fetched from again. */
  #refill(): void {
    if (this.#stopping) return;
    for (const tracker of this.#backlogged) {
      while (tracker.backlog.length > 0 && this.#hasRoom(tracker))
        this.#admit(tracker, tracker.backlog.shift() as ConsumedRecord);
      if (tracker.paused && !tracker.revoked && tracker.backlog.length <= tracker.resumeAt) {
        tracker.paused = false;
        this.#consumer.resume([{ topic: tracker.topic, partition: tracker.partition }]);
      }
      if (tracker.backlog.length === 0) this.#backlogged.delete(tracker);
      if (this.#pending >= this.#deps.config.concurrency) return;
    }
  }

  #run(item: Item): void {
    this.#process(item).then(
      (finished) => this.#after(item, finished),
      (error: unknown) => {
        // #process handles every error itself; reaching this is a bug, and the event stays uncommitted.
        this.#deps.log.error(
          { err: safeDetail(error), group: this.groupId },
          'unexpected failure in the consumer runtime',
        );
        this.#after(item, false);
      },
    );
  }

  #after(item: Item, finished: boolean): void {
    this.#finishingEnded(item);
    if (finished) item.tracker.finish(Number(item.record.offset));
    this.#pending -= 1;
    const queue = this.#keyQueues.get(item.key);
    queue?.shift();
    const next = queue?.[0];
    if (next === undefined) this.#keyQueues.delete(item.key);
    else this.#run(next);
    this.#refill();
    if (this.#pending === 0) this.#drained?.();
  }

  /** Runs one record to a durable outcome; false when abandoned (shutdown or revocation). */
  async #process(item: Item): Promise<boolean> {
    let backoff = 200;
    for (;;) {
      if (this.#abort.signal.aborted) return false;
      try {
        await this.#processOnce(item);
        this.#degraded = undefined;
        return true;
      } catch (error) {
        if (error instanceof Abandoned) return false;
        // Tried again from the start: the handler may run again, so the event is running again.
        this.#finishingEnded(item);
        // Not a fault of a dependency: its claim waits for the member that holds the lease now.
        if (error instanceof LeaseLost) continue;
        this.#infraFault(item, toMeshError(error), 'will retry this event');
        if (item.tracker.revoked && this.#stopping) return false;
        try {
          await sleep(backoff, undefined, { signal: this.#abort.signal });
        } catch {
          return false;
        }
        backoff = Math.min(backoff * 2, 5_000);
      }
    }
  }

  /** A dependency of the mesh failed `item`'s processing: the consumer is degraded until an event succeeds. */
  #infraFault(item: Item, mesh: MeshError, next: string): void {
    const err = safeDetail(mesh);
    this.#degraded = { since: this.#degraded?.since ?? Date.now(), by: err };
    this.#faults.warn(
      this.#deps.log,
      `${next}\u0000${err}`,
      { group: this.groupId, topic: item.record.topic, offset: item.record.offset, err },
      `infrastructure unavailable; ${next}`,
    );
  }

  async #processOnce(item: Item): Promise<void> {
    const { record } = item;
    const { codec, metrics } = this.#deps;
    if (this.#options.raw !== undefined) {
      metrics.countConsumed(this.#service, record.topic, 'raw');
      try {
        await this.#options.raw(record, { log: this.#deps.log, signal: this.#abort.signal });
      } catch (error) {
        if (this.#abort.signal.aborted) throw new Abandoned();
        // Retried in place like an infrastructure fault: a raw consumer has nowhere safe to send it.
        throw toMeshError(error);
      }
      return;
    }
    let event: MeshEvent;
    try {
      // Synchronous once the registry's answers are cached, as they are for all but the first events.
      const decoding = codec.decodeNow(
        record,
        this.#intakeTopics.has(record.topic) ? intakeDecoding : undefined,
      );
      event = decoding instanceof Promise ? await decoding : decoding;
    } catch (error) {
      const mesh = toMeshError(error);
      if (infraCodes.has(mesh.code)) throw mesh;
      metrics.countConsumed(this.#service, record.topic, 'invalid');
      await this.#deadLetter(record, mesh);
      return;
    }
    metrics.countConsumed(this.#service, record.topic, event.type);
    const handler = this.#options.handlers[event.type];
    if (handler === undefined) {
      await this.#deadLetter(
        record,
        terminal('malformed_event', `event type ${event.type} is not accepted on ${record.topic}`),
      );
      return;
    }
    if (this.#options.loopGuards ?? true) {
      try {
        checkLoopGuards(event, this.#guardLimits);
      } catch (error) {
        const mesh = toMeshError(error);
        metrics.loopGuards.inc({ service: this.#service, failure: mesh.code });
        // The handler never runs, but the service may still owe a failure event (e.g. subtask.failed).
        const ctx = new Context(this.#contextShared, item, event, `${this.groupId}:${event.id}`);
        ctx.finished();
        await this.#emit(this.#options.onTerminalFailure?.(ctx, mesh) ?? []);
        await this.#deadLetter(record, mesh);
        return;
      }
    }
    const due = this.#options.holdUntil?.(event);
    if (due !== undefined && due > Date.now()) {
      try {
        await sleep(due - Date.now(), undefined, { signal: this.#abort.signal });
      } catch {
        throw new Abandoned();
      }
    }
    if (!(this.#options.idempotency ?? true)) {
      const ctx = new Context(this.#contextShared, item, event, `${this.groupId}:${event.id}`);
      try {
        await this.#handle(item, ctx, handler, undefined);
      } finally {
        ctx.finished();
      }
      return;
    }
    const claim = await this.#deps.idempotency.claim(this.groupId, event.id);
    const lease =
      claim.state === 'claimed' ? claim.lease : await this.#claimAgain(item, event, claim);
    if (lease === undefined) return;
    const ctx = new Context(this.#contextShared, item, event, lease.idempotencyKey);
    // Renewed while the handler runs and its outcome is written.
    this.#deps.idempotency.hold(lease, (trouble) => this.#leaseTrouble(ctx, trouble));
    try {
      await this.#handle(item, ctx, handler, lease);
    } finally {
      this.#deps.idempotency.unhold(lease);
      ctx.finished();
    }
  }

  /**
   * A lost lease is told for each event (it may run twice); renewals Redis does not answer, once per
   * window for all of them: every running event's fail alike.
   */
  #leaseTrouble(ctx: Context, { kind, reason }: LeaseTrouble): void {
    const fields = {
      group: this.groupId,
      id: ctx.event.id,
      reason,
      leaseTtlMs: this.#deps.idempotency.leaseTtlMs,
    };
    if (kind === 'lost') {
      this.#deps.log.warn(
        fields,
        "lease lost while the event ran: another member may run it too; the handler's signal is aborted",
      );
      ctx.loseLease(reason);
    } else
      this.#faults.warn(
        this.#deps.log,
        `${kind}\u0000${reason}`,
        fields,
        'lease not renewed while the event runs: it lapses after its TTL unless Redis answers',
      );
  }

  /**
   * After a first claim that did not take the event: undefined when it was already completed by
   * this group (an idempotent skip); when another member runs it (e.g. the owner before a
   * rebalance), waits for its outcome or for its lease to lapse, and claims again.
   */
  async #claimAgain(item: Item, event: MeshEvent, first: Claim): Promise<Lease | undefined> {
    for (let claim = first; ; claim = await this.#deps.idempotency.claim(this.groupId, event.id)) {
      if (claim.state === 'claimed') return claim.lease;
      if (claim.state === 'done') {
        this.#deps.metrics.idempotentSkips.inc({ service: this.#service });
        return undefined;
      }
      if (item.tracker.revoked || this.#stopping) throw new Abandoned();
      try {
        await sleep(Math.min(claim.retryInMs, 1_000), undefined, { signal: this.#abort.signal });
      } catch {
        throw new Abandoned();
      }
    }
  }

  async #handle(
    item: Item,
    ctx: Context,
    handler: Handler,
    lease: Lease | undefined,
  ): Promise<void> {
    const { record } = item;
    const { event } = ctx;
    const { metrics, idempotency } = this.#deps;
    const agent = this.#options.agentLabel?.(event) ?? event.agent ?? '';
    metrics.addInflight(this.#service, agent, 1);
    const started = performance.now();
    let result: HandlerResult | undefined | void;
    let failure: MeshError | undefined;
    try {
      result = await handler(ctx);
    } catch (error) {
      failure = toMeshError(error);
    } finally {
      metrics.handlerDuration.observe(
        { service: this.#service, agent },
        (performance.now() - started) / 1_000,
      );
      metrics.addInflight(this.#service, agent, -1);
    }
    this.#finishingStarted(item);
    // Its lease went to another member while it ran, and the handler gave up (it was told through
    // its signal): no outcome of ours. The event is tried again from its claim, which waits for the
    // other member's outcome, or for its lease to lapse if that member is gone too.
    if (failure !== undefined && ctx.leaseLost) throw new LeaseLost();
    // Stopped by a stop whose drain ran out, not failed by the event: no outcome (a retry would
    // spend an attempt, and on the last one dead-letter the event). Its lease is given back, its
    // offset stays uncommitted, and the next member of the group runs it at once, at this attempt.
    if (failure !== undefined && this.#abort.signal.aborted) {
      if (lease !== undefined) await idempotency.release(lease);
      throw new Abandoned();
    }
    if (failure === undefined && result?.emit !== undefined) {
      const emits = result.emit;
      try {
        await this.#untilWritten(item, () => this.#emit(emits), lease);
      } catch (error) {
        if (error instanceof Abandoned) throw error;
        const mesh = toMeshError(error);
        failure = terminal(mesh.code, `output of the handler was refused: ${mesh.message}`);
      }
    }
    if (failure === undefined) {
      if (lease !== undefined)
        await this.#untilWritten(item, () => idempotency.complete(lease, 'ok'));
      return;
    }
    if (infraCodes.has(failure.code) && failure.retryable) {
      // The handler hit an unreachable dependency of the mesh itself: try again in place.
      if (lease !== undefined) await idempotency.release(lease);
      throw failure;
    }
    const failed = failure;
    const maxAttempts = this.#deps.config.maxAttempts;
    const tiers = this.#deps.config.retryTiers;
    if (
      failed.retryable &&
      ctx.attempt < maxAttempts &&
      tiers.length > 0 &&
      (await this.#untilWritten(item, () => this.#retry(record, ctx.attempt, failed), lease))
    ) {
      // The retried delivery carries the same id and must be able to claim it again.
      if (lease !== undefined) await idempotency.release(lease);
      return;
    }
    const extra = this.#options.onTerminalFailure?.(ctx, failed) ?? [];
    const prefix =
      ctx.attempt >= maxAttempts && failed.retryable ? `after ${ctx.attempt} attempts: ` : '';
    await this.#untilWritten(
      item,
      async () => {
        await this.#emit(extra);
        await this.#deadLetter(record, failed, prefix);
      },
      lease,
    );
    if (lease !== undefined)
      await this.#untilWritten(item, () => idempotency.complete(lease, 'dlq'));
  }

  /**
   * Runs `write`, a part of the outcome of an event whose handler has run (its outputs, its retry or
   * dead letter, its done marker), until Kafka, the registry and Redis take it: their faults are
   * tried again here, not the event. Tried from the start, the event would run its handler again
   * (an LLM call paid twice), after waiting out its own lease (30 s) where it still held one. Other
   * errors are thrown. On shutdown or revocation the event is abandoned, and `giveBack`, the lease of
   * an outcome not yet written, released so that the next owner does not wait it out.
   */
  async #untilWritten<T>(item: Item, write: () => Promise<T>, giveBack?: Lease): Promise<T> {
    let backoff = 200;
    for (;;) {
      try {
        return await write();
      } catch (error) {
        const mesh = toMeshError(error);
        if (!infraCodes.has(mesh.code)) throw error;
        this.#infraFault(item, mesh, "will write this event's outcome again");
        let abandoned = item.tracker.revoked || this.#stopping;
        if (!abandoned)
          await sleep(backoff, undefined, { signal: this.#abort.signal }).catch(() => {
            abandoned = true;
          });
        if (abandoned) {
          if (giveBack !== undefined) await this.#deps.idempotency.release(giveBack);
          throw new Abandoned();
        }
        backoff = Math.min(backoff * 2, 5_000);
      }
    }
  }

  /** Publishes the events (see `publishEvents`): a refused one is thrown, not rejected. */
  #emit(emits: Emit[]): Promise<void> {
    return publishEvents(this.#publishing, emits);
  }

  #failureHeaders(
    record: ConsumedRecord,
    error: MeshError,
    prefix = '',
  ): Record<string, string | Buffer> {
    const headers: Record<string, string | Buffer> = {};
    for (const [name, value] of Object.entries(record.headers)) {
      if (value === undefined) continue;
      const one = Array.isArray(value) ? value[value.length - 1] : value;
      if (one !== undefined) headers[name] = one;
    }
    headers.ce_meshfailure = failureClassOf(error);
    headers.ce_meshfailuredetail = safeDetail(`${prefix}${error.message}`);
    headers.ce_meshfailedby = `${this.#service}/${this.groupId}`;
    headers.ce_meshorigintopic = record.topic;
    return headers;
  }

  /** Puts the record, unchanged but for headers, on `mesh.dlq`. Resolves once Kafka acknowledged it. */
  async #deadLetter(record: ConsumedRecord, error: MeshError, prefix = ''): Promise<void> {
    const headers = this.#failureHeaders(record, error, prefix);
    await sendDeadLetter(this.#deps.producer, record, {
      topic: this.#deps.topics.dlq,
      key: keyOf(record),
      value: record.value ?? Buffer.alloc(0),
      headers,
    });
    this.#deps.metrics.dlq.inc({ service: this.#service, failure: failureClassOf(error) });
    this.#deps.log.warn(
      {
        group: this.groupId,
        topic: record.topic,
        offset: record.offset,
        failure: failureClassOf(error),
        detail: headers.ce_meshfailuredetail,
      },
      'event dead-lettered',
    );
  }

  /**
   * Puts the record on the retry tier for its attempt with `meshattempt + 1` and `meshnotbefore`.
   * Each tier has one fixed delay, so a tier's events come due in the order they were written; a
   * provider's Retry-After picks the first tier at least that long. False when the record with the
   * retry headers is too large for Kafka: it cannot be retried, and fails for good instead.
   */
  async #retry(record: ConsumedRecord, attempt: number, error: MeshError): Promise<boolean> {
    const tiers = this.#deps.config.retryTiers;
    let tier = tiers[Math.min(attempt - 1, tiers.length - 1)] ?? tiers[0];
    if (tier === undefined) throw new Error('no retry tier configured');
    if (error.retryAfterMs !== undefined && error.retryAfterMs > tier.delayMs) {
      tier =
        tiers.find((t) => t.delayMs >= (error.retryAfterMs ?? 0)) ??
        tiers[tiers.length - 1] ??
        tier;
    }
    const headers = this.#failureHeaders(record, error);
    headers.ce_meshattempt = String(attempt + 1);
    headers.ce_meshnotbefore = new Date(Date.now() + tier.delayMs).toISOString();
    const topic = this.#deps.topics.retry(tier.name);
    try {
      await this.#deps.producer.send([
        { topic, key: keyOf(record), value: record.value ?? Buffer.alloc(0), headers },
      ]);
    } catch (refusal) {
      if (isRecordTooLarge(refusal)) return false;
      throw refusal;
    }
    this.#deps.metrics.retries.inc({ tier: tier.name });
    return true;
  }

  /** Commits what is committable; true when it was (or nothing was to be), false when Kafka refused. */
  async #commit(): Promise<boolean> {
    if (this.#committing !== undefined) return this.#committing;
    const offsets: (TopicPartition & { offset: string; tracker: PartitionTracker })[] = [];
    for (const tracker of this.#trackers.values()) {
      const position = tracker.commitPosition();
      if (position !== undefined)
        offsets.push({
          topic: tracker.topic,
          partition: tracker.partition,
          offset: String(position),
          tracker,
        });
    }
    if (offsets.length === 0) return true;
    this.#committing = this.#consumer
      .commit(offsets)
      .then(
        () => {
          for (const { tracker, offset } of offsets) tracker.markCommitted(Number(offset));
          return true;
        },
        (error: unknown) => {
          // A rebalance is in progress or the coordinator moved; the next tick tries again.
          this.#deps.log.debug(
            { group: this.groupId, err: safeDetail(error) },
            'commit failed; will retry',
          );
          return false;
        },
      )
      .finally(() => {
        this.#committing = undefined;
      });
    return this.#committing;
  }

  /** The commit of everything finished: after the one in flight, which took only what was then. */
  async #commitLast(): Promise<boolean> {
    await this.#committing;
    return this.#commit();
  }
}

function keyOf(record: ConsumedRecord): string | null {
  return record.key === null ? null : record.key.toString('utf8');
}

/**
 * Writes a dead letter of `record`. If it is too large for Kafka with its failure headers (its own
 * topic took it without them), it is written without its value, and its detail says where the
 * event still is (until that topic's retention): a dead letter is never retried in place for ever.
 */
export async function sendDeadLetter(
  producer: MeshProducer,
  record: ConsumedRecord,
  letter: OutgoingRecord,
): Promise<void> {
  try {
    await producer.send([letter]);
  } catch (refusal) {
    if (!isRecordTooLarge(refusal)) throw refusal;
    const detail = letter.headers.ce_meshfailuredetail;
    const headers = {
      ...letter.headers,
      ce_meshfailuredetail: safeDetail(
        `${typeof detail === 'string' ? detail : (detail?.toString() ?? '')} (value of ` +
          `${letter.value.length} bytes left out, too large for ${letter.topic}: the event is at ` +
          `${record.topic} partition ${record.partition} offset ${record.offset})`,
      ),
    };
    await producer.send([{ ...letter, value: Buffer.alloc(0), headers }]);
  }
}
