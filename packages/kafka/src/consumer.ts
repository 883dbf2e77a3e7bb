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

export class GroupConsumer {
  readonly groupId: string;
  readonly #consumer: Consumer;
  #running = false;
  #lastHeartbeat = 0;
  #joined = false;
  #run: ConsumerRunConfig | undefined;
  #handlers: GroupConsumerHandlers | undefined;
  #restartTimer: NodeJS.Timeout | undefined;
  #restartDelayMs = restartInitialMs;
  #restarts = 0;

  constructor(kafka: Kafka, options: GroupConsumerOptions) {
    this.groupId = options.groupId;
    this.#consumer = kafka.consumer({
      groupId: options.groupId,
      sessionTimeout: options.sessionTimeoutMs ?? 30_000,
      heartbeatInterval: options.heartbeatIntervalMs ?? 3_000,
      rebalanceTimeout: options.rebalanceTimeoutMs ?? 60_000,
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
    this.#consumer.on(this.#consumer.events.HEARTBEAT, () => {
      this.#lastHeartbeat = Date.now();
    });
  }

  /** True once the member has joined its group and its fetch loop has run recently. */
  get healthy(): boolean {
    return this.#running && this.#joined;
  }

  get lastHeartbeat(): number {
    return this.#lastHeartbeat;
  }

  /** Joins the group and starts fetching. @throws MeshError `kafka_unavailable`. */
  async start(topics: string[], handlers: GroupConsumerHandlers): Promise<void> {
    const consumer = this.#consumer;
    this.#handlers = handlers;
    consumer.on(consumer.events.GROUP_JOIN, (event) => {
      this.#joined = true;
      this.#restartDelayMs = restartInitialMs;
      const partitions: TopicPartition[] = [];
      for (const [topic, ids] of Object.entries(event.payload.memberAssignment)) {
        for (const partition of ids) partitions.push({ topic, partition });
      }
      handlers.assigned(partitions);
    });
    consumer.on(consumer.events.CRASH, (event) => {
      this.#joined = false;
      const { error, restart } = event.payload;
      if (restart) {
        handlers.crashed?.(
          error,
          (error as { retryTime?: number }).retryTime ?? kafkajsInitialRetryMs,
        );
        return;
      }
      handlers.crashed?.(error, this.#scheduleRestart());
    });
    consumer.on(consumer.events.REBALANCING, () => {
      this.#joined = false;
    });
    try {
      await consumer.connect();
    } catch (error) {
      throw connectFailure(`consumer ${this.groupId}`, error);
    }
    try {
      // A group with no committed offset starts at the earliest one (docs/contract.md).
      await consumer.subscribe({ topics, fromBeginning: true });
      this.#run = {
        autoCommit: false,
        eachBatchAutoResolve: false,
        partitionsConsumedConcurrently: 1,
        eachBatch: async (payload) => {
          const { batch } = payload;
          if (!payload.isRunning() || payload.isStale() || batch.messages.length === 0) return;
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
      await consumer.run(this.#run);
      this.#running = true;
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
    if (!this.#running || this.#run === undefined) return;
    this.#restarts += 1;
    try {
      // The crash disconnected it; the subscription is kept. A join that fails again crashes again.
      await this.#consumer.connect();
      await this.#consumer.run(this.#run);
    } catch (error) {
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
      if (this.#joined) throw error;
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

  async stop(): Promise<void> {
    this.#running = false;
    clearTimeout(this.#restartTimer);
    this.#restartTimer = undefined;
    await this.#consumer.disconnect();
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
