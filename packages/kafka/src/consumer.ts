/**
 * A kafkajs consumer group member that hands records over without waiting for them to be processed.
 *
 * kafkajs heartbeats from its fetch loop, so a long `eachMessage` handler starves the heartbeat and
 * the member is evicted (kafkajs issues #447, #1083). Here `eachBatch` only offers the records to the
 * runtime (which queues them) and returns at once: the loop keeps fetching and heartbeating while
 * handlers take minutes. Offsets are never auto-committed or auto-resolved: the runtime resolves what
 * it has taken (so fetching moves on) and commits only offsets whose outcome is durable.
 *
 * kafkajs restarts a crashed consumer only when the crash is retriable: a non-retriable one (e.g.
 * "Failed to find group coordinator" while the broker is restarting) leaves it stopped for good,
 * whatever `restartOnFailure` says. The member then restarts it itself, with backoff, until it
 * rejoins or is stopped: a broker outage must never stop a service from consuming.
 *
 * And a member that stays out of its group longer than any rebalance may take (`stuckAfterMs`) is
 * given a new kafkajs consumer: whatever state the old one is stuck in after an outage (kafkajs
 * #1630: a consumer that never reconnects after "Failed to find group coordinator"), a fresh one
 * connects, subscribes and joins from scratch. The old one is disconnected in the background.
 *
 * `stop` waits a bounded time for kafkajs to leave the group: with the broker unreachable, kafkajs
 * would first run its connection retries out (15–20 s), and a service would overrun its grace period.
 */
import type { Consumer, ConsumerRunConfig, IHeaders, Kafka } from 'kafkajs';
import { retryable } from '@mesh/errors';
import { connectFailure } from './client.ts';

export interface ConsumedRecord {
  topic: string;
  partition: number;
  offset: string;
  key: Buffer | null;
  value: Buffer | null;
  headers: IHeaders;
  timestamp: string;
}

export interface TopicPartition {
  topic: string;
  partition: number;
}

export interface GroupConsumerOptions {
  groupId: string;
  sessionTimeoutMs?: number;
  heartbeatIntervalMs?: number;
  rebalanceTimeoutMs?: number;
  maxBytesPerPartition?: number;
  /**
   * How long the member may stay out of its group (crashed, restarting, rejoining) before its kafkajs
   * consumer is replaced by a new one. Default: the rebalance timeout plus the session timeout, the
   * longest a rejoin waits for the group's other members.
   */
  stuckAfterMs?: number;
  /**
   * How long the broker holds a fetch that finds nothing new (default 500 ms, the Java client's
   * `fetch.max.wait.ms`). A record that arrives ends the wait at once, so this sets what an idle
   * consumer costs (one fetch per wait, each a request the broker serves), not the latency; it is
   * also how long `stop` may wait for the fetch in flight.
   */
  maxWaitTimeMs?: number;
}

export interface GroupConsumerHandlers {
  /**
   * Offers the records of one partition, in offset order, with the partition's end offset (high
   * watermark) as the fetch saw it. Returns how many of them were taken; the rest are fetched again
   * after the partition is resumed (the runtime pauses it when it is full).
   */
  take(topic: string, partition: number, records: ConsumedRecord[], end: number): number;
  /** The partitions this member owns after a (re)join, replacing any earlier assignment. */
  assigned(partitions: TopicPartition[]): void;
  /** The consumer crashed; `restartInMs` later it is restarted (by kafkajs or by the member) and rejoins. */
  crashed?(error: Error, restartInMs: number): void;
}

/** kafkajs's first retry delay, also its delay before restarting a consumer after a retriable crash. */
const kafkajsInitialRetryMs = 200;
const restartInitialMs = 500;
const restartMaxMs = 10_000;
const defaultSessionTimeoutMs = 30_000;
const defaultRebalanceTimeoutMs = 60_000;

/**
 * How long a stopping member waits for Kafka to take its leave (and the runtime, its last commit)
 * before it goes without: a broker that answers does both in milliseconds.
 */
export const leaveTimeoutMs = 5_000;

/**
 * What `promise` resolves to if it does within `ms`, else `otherwise` (the promise is then left to
 * settle on its own); its rejection is thrown.
 */
export async function resultWithin<T>(promise: Promise<T>, ms: number, otherwise: T): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const expired = new Promise<T>((resolve) => {
    timer = setTimeout(() => resolve(otherwise), Math.max(0, ms));
  });
  try {
    return await Promise.race([promise, expired]);
  } finally {
    clearTimeout(timer);
  }
}

export class GroupConsumer {
  readonly groupId: string;
  readonly #kafka: Kafka;
  readonly #options: GroupConsumerOptions;
  readonly #stuckAfterMs: number;
  #consumer: Consumer;
  /** Whether #consumer has its subscription (a replacement gets it on its first start). */
  #subscribed = false;
  #topics: string[] = [];
  #running = false;
  #stopped = false;
  /** Since when the member has been out of its group (from its start until it first joins). */
  #outSince: number | undefined;
  #handlers: GroupConsumerHandlers | undefined;
  #restartTimer: NodeJS.Timeout | undefined;
  #watchTimer: NodeJS.Timeout | undefined;
  #restartDelayMs = restartInitialMs;
  #restarts = 0;
  #replacements = 0;

  constructor(kafka: Kafka, options: GroupConsumerOptions) {
    this.groupId = options.groupId;
    this.#kafka = kafka;
    this.#options = options;
    this.#stuckAfterMs =
      options.stuckAfterMs ??
      (options.rebalanceTimeoutMs ?? defaultRebalanceTimeoutMs) +
        (options.sessionTimeoutMs ?? defaultSessionTimeoutMs);
    this.#consumer = this.#create();
  }

  /** A kafkajs consumer whose events update this member only while it is the current one. */
  #create(): Consumer {
    const options = this.#options;
    const consumer = this.#kafka.consumer({
      groupId: options.groupId,
      sessionTimeout: options.sessionTimeoutMs ?? defaultSessionTimeoutMs,
      heartbeatInterval: options.heartbeatIntervalMs ?? 3_000,
      rebalanceTimeout: options.rebalanceTimeoutMs ?? defaultRebalanceTimeoutMs,
      maxBytesPerPartition: options.maxBytesPerPartition ?? 1_048_576,
      maxWaitTimeInMs: options.maxWaitTimeMs ?? 500,
      allowAutoTopicCreation: false,
      // Never give up: a retriable crash (broker gone) restarts the member, which rejoins.
      retry: {
        retries: Number.MAX_SAFE_INTEGER,
        initialRetryTime: kafkajsInitialRetryMs,
        maxRetryTime: 5_000,
        restartOnFailure: () => Promise.resolve(true),
      },
    });
    const current = (): boolean => consumer === this.#consumer;
    consumer.on(consumer.events.GROUP_JOIN, (event) => {
      if (!current()) return;
      this.#outSince = undefined;
      this.#restartDelayMs = restartInitialMs;
      const partitions: TopicPartition[] = [];
      for (const [topic, ids] of Object.entries(event.payload.memberAssignment)) {
        for (const partition of ids) partitions.push({ topic, partition });
      }
      this.#handlers?.assigned(partitions);
    });
    consumer.on(consumer.events.CRASH, (event) => {
      // After `stop`, a consumer still retrying to leave crashes in the end: that is no news.
      if (!current() || this.#stopped) return;
      this.#left();
      const { error, restart } = event.payload;
      if (restart) {
        this.#handlers?.crashed?.(
          error,
          (error as { retryTime?: number }).retryTime ?? kafkajsInitialRetryMs,
        );
        return;
      }
      this.#handlers?.crashed?.(error, this.#scheduleRestart());
    });
    consumer.on(consumer.events.REBALANCING, () => {
      if (current()) this.#left();
    });
    return consumer;
  }

  #left(): void {
    this.#outSince ??= Date.now();
  }

  /** True while the member is started and in its group. */
  get healthy(): boolean {
    return this.#running && this.#outSince === undefined;
  }

  /** Joins the group and starts fetching. @throws MeshError `kafka_unavailable`. */
  async start(topics: string[], handlers: GroupConsumerHandlers): Promise<void> {
    const consumer = this.#consumer;
    this.#handlers = handlers;
    this.#topics = topics;
    this.#outSince = Date.now();
    try {
      await consumer.connect();
    } catch (error) {
      throw connectFailure(`consumer ${this.groupId}`, error);
    }
    try {
      await this.#subscribe(consumer);
      await consumer.run(this.#runConfig(consumer));
      this.#running = true;
      this.#watchTimer = setInterval(
        () => this.#watch(),
        Math.min(5_000, Math.max(100, this.#stuckAfterMs / 4)),
      );
      this.#watchTimer.unref();
    } catch (error) {
      throw retryable(
        'kafka_unavailable',
        `consumer ${this.groupId} could not start: ${(error as Error).message}`,
        { cause: error },
      );
    }
  }

  /** Times the member restarted a consumer that kafkajs left stopped after a crash. */
  get restarts(): number {
    return this.#restarts;
  }

  /** Times the member replaced a kafkajs consumer that stayed out of the group too long. */
  get replacements(): number {
    return this.#replacements;
  }

  /**
   * How `consumer` runs: it offers each batch to the handlers and resolves what they took. A consumer
   * replaced while it still fetched offers nothing more: only the current one feeds the handlers.
   */
  #runConfig(consumer: Consumer): ConsumerRunConfig {
    return {
      autoCommit: false,
      eachBatchAutoResolve: false,
      partitionsConsumedConcurrently: 1,
      eachBatch: async (payload) => {
        const { batch } = payload;
        const handlers = this.#handlers;
        if (
          consumer !== this.#consumer ||
          handlers === undefined ||
          !payload.isRunning() ||
          payload.isStale() ||
          batch.messages.length === 0
        )
          return;
        const records: ConsumedRecord[] = batch.messages.map((message) => ({
          topic: batch.topic,
          partition: batch.partition,
          offset: message.offset,
          key: message.key ?? null,
          value: message.value ?? null,
          headers: message.headers ?? {},
          timestamp: message.timestamp,
        }));
        const taken = handlers.take(
          batch.topic,
          batch.partition,
          records,
          Number(batch.highWatermark),
        );
        const last = records[taken - 1];
        if (last !== undefined) payload.resolveOffset(last.offset);
        await payload.heartbeat();
      },
    };
  }

  async #subscribe(consumer: Consumer): Promise<void> {
    // A group with no committed offset starts at the earliest one (docs/contract.md).
    await consumer.subscribe({ topics: this.#topics, fromBeginning: true });
    if (consumer === this.#consumer) this.#subscribed = true;
  }

  /** Replaces the kafkajs consumer when the member has been out of its group too long. */
  #watch(): void {
    const since = this.#outSince;
    if (!this.#running || since === undefined || Date.now() - since < this.#stuckAfterMs) return;
    const stuck = this.#consumer;
    this.#replacements += 1;
    this.#consumer = this.#create();
    this.#subscribed = false;
    this.#outSince = Date.now();
    // Its own timers and sockets go with it; whatever it still waits on is no longer listened to.
    void stuck.disconnect().catch(() => undefined);
    clearTimeout(this.#restartTimer);
    this.#restartTimer = undefined;
    this.#restartDelayMs = restartInitialMs;
    this.#handlers?.crashed?.(
      new Error(
        `out of group ${this.groupId} for ${Math.round((Date.now() - since) / 1000)} s: ` +
          'a new kafkajs consumer takes over',
      ),
      0,
    );
    void this.#restart();
  }

  /** Restarts the stopped consumer after a backoff; returns the delay. */
  #scheduleRestart(): number {
    const delay = this.#restartDelayMs;
    if (!this.#running || this.#restartTimer !== undefined) return delay;
    this.#restartDelayMs = Math.min(delay * 2, restartMaxMs);
    this.#restartTimer = setTimeout(() => {
      this.#restartTimer = undefined;
      void this.#restart();
    }, delay);
    return delay;
  }

  async #restart(): Promise<void> {
    const consumer = this.#consumer;
    if (!this.#running) return;
    this.#restarts += 1;
    try {
      // The crash disconnected it; the subscription is kept. A join that fails again crashes again.
      await consumer.connect();
      if (!this.#subscribed) await this.#subscribe(consumer);
      // Replaced while connecting: the replacement has its own start.
      if (consumer === this.#consumer && this.#running)
        await consumer.run(this.#runConfig(consumer));
    } catch (error) {
      if (consumer === this.#consumer)
        this.#handlers?.crashed?.(error as Error, this.#scheduleRestart());
    }
  }

  pause(partitions: TopicPartition[]): void {
    if (!this.#running || partitions.length === 0) return;
    this.#whileJoined(() => this.#consumer.pause(groupByTopic(partitions)));
  }

  resume(partitions: TopicPartition[]): void {
    if (!this.#running || partitions.length === 0) return;
    this.#whileJoined(() => this.#consumer.resume(groupByTopic(partitions)));
  }

  /**
   * kafkajs throws on pause and resume between a crash and the restart (it has no group then). That
   * window is no fault of the caller, and nothing is lost by skipping the call: the next join reports
   * the assignment (`assigned`) and the runtime resumes or pauses every partition afresh.
   */
  #whileJoined(call: () => void): void {
    try {
      call();
    } catch (error) {
      if (this.#outSince === undefined) throw error;
    }
  }

  /**
   * Commits `offset` (the next offset to read) for each partition.
   * @throws the kafkajs error when the group is rebalancing; the caller tries again after the rejoin.
   */
  async commit(offsets: (TopicPartition & { offset: string })[]): Promise<void> {
    if (offsets.length === 0) return;
    await this.#consumer.commitOffsets(
      offsets.map(({ topic, partition, offset }) => ({ topic, partition, offset })),
    );
  }

  /**
   * Stops fetching and leaves the group. Resolves true once kafkajs has left it, false when Kafka did
   * not answer within `timeoutMs`: the kafkajs consumer is then abandoned to its retries, and the
   * group drops the member after its session timeout.
   */
  async stop(timeoutMs = leaveTimeoutMs): Promise<boolean> {
    this.#running = false;
    this.#stopped = true;
    clearTimeout(this.#restartTimer);
    this.#restartTimer = undefined;
    clearInterval(this.#watchTimer);
    this.#watchTimer = undefined;
    return resultWithin(
      this.#consumer.disconnect().then(() => true),
      timeoutMs,
      false,
    );
  }
}

function groupByTopic(partitions: TopicPartition[]): { topic: string; partitions: number[] }[] {
  const byTopic = new Map<string, number[]>();
  for (const { topic, partition } of partitions) {
    const list = byTopic.get(topic);
    if (list === undefined) byTopic.set(topic, [partition]);
    else list.push(partition);
  }
  return [...byTopic].map(([topic, ids]) => ({ topic, partitions: ids }));
}
