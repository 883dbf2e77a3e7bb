/**
 * The mesh's producer: idempotent, `acks=all`, and batching. Sends from many concurrent handlers are
 * queued and written by one `sendBatch` at a time, which batches under load (throughput) and keeps
 * one request in flight per producer, so the idempotent producer's sequence numbers stay in order.
 *
 * A send to a topic the cluster does not have is refused (`not_found`) instead of written: kafkajs
 * would retry it for as long as the producer retries (forever here), and with one request in flight
 * every other send of the process would wait behind it. A topic deleted after it was first seen
 * fails its send after 5 s (the kafkajs patch) and is looked up again before the next one.
 */
import type { Kafka, Producer } from 'kafkajs';
import { retryable, terminal } from '@mesh/errors';
import { MeshAdmin } from './admin.ts';
import { meshPartitioner } from './partitioner.ts';

export interface OutgoingRecord {
  topic: string;
  key: string | null;
  value: Buffer;
  headers: Record<string, string | Buffer>;
}

interface Pending {
  records: OutgoingRecord[];
  resolve: () => void;
  reject: (error: Error) => void;
}

const recentlyMissingMs = 10_000;

export interface ProducerOptions {
  /** Most records written by one request. */
  maxBatchRecords?: number;
  /** Where topics are looked up (the runtime shares its own); by default one of the producer's. */
  admin?: MeshAdmin;
  /**
   * A topic missing from the cluster's metadata is looked up once more after this long before a
   * send to it is refused: a broker may not list a topic for a moment after it was created.
   */
  missingTopicRecheckMs?: number;
}

export class MeshProducer {
  readonly #producer: Producer;
  readonly #maxBatchRecords: number;
  readonly #admin: MeshAdmin;
  readonly #ownAdmin: boolean;
  readonly #recheckMs: number;
  /** Topics seen in the cluster's metadata; a topic is looked up once, before its first send. */
  readonly #known = new Set<string>();
  /** When each topic was last found missing (entries older than 10 s are dropped). */
  readonly #missingAt = new Map<string, number>();
  #queue: Pending[] = [];
  #flushing = false;
  #connected = false;
  #requests = 0;

  constructor(kafka: Kafka, options: ProducerOptions = {}) {
    this.#producer = kafka.producer({
      idempotent: true,
      allowAutoTopicCreation: false,
      createPartitioner: meshPartitioner,
      // The idempotent producer retries until the broker answers; the runtime does not commit
      // the consumed offset until then, so a long broker outage delays work but loses nothing.
      retry: { retries: Number.MAX_SAFE_INTEGER, initialRetryTime: 100, maxRetryTime: 2_000 },
    });
    this.#maxBatchRecords = options.maxBatchRecords ?? 1_000;
    this.#ownAdmin = options.admin === undefined;
    this.#admin = options.admin ?? new MeshAdmin(kafka);
    this.#recheckMs = options.missingTopicRecheckMs ?? 500;
    this.#producer.on(this.#producer.events.DISCONNECT, () => {
      this.#connected = false;
    });
    this.#producer.on(this.#producer.events.CONNECT, () => {
      this.#connected = true;
    });
  }

  get connected(): boolean {
    return this.#connected;
  }

  /** Produce requests written so far (one `sendBatch` each). */
  get requests(): number {
    return this.#requests;
  }

  async connect(): Promise<void> {
    try {
      await this.#producer.connect();
    } catch (error) {
      throw retryable(
        'kafka_unavailable',
        `producer could not connect: ${(error as Error).message}`,
        { cause: error },
      );
    }
  }

  async disconnect(): Promise<void> {
    await this.#producer.disconnect();
    if (this.#ownAdmin) await this.#admin.disconnect();
  }

  /**
   * The topics of `topics` that the cluster does not have. A topic not listed is looked up again
   * `missingTopicRecheckMs` later, unless it was found missing in the last 10 s: a stream of sends
   * to one missing topic must not hold every other send of the process that long each time. Topics
   * found once are remembered, so a send to a known topic costs no lookup.
   * @throws MeshError `kafka_unavailable` (retryable) when the metadata cannot be read.
   */
  async missingTopics(topics: Iterable<string>): Promise<string[]> {
    let unknown = [...new Set(topics)].filter((topic) => !this.#known.has(topic));
    for (let lookup = 0; unknown.length > 0 && lookup < 2; lookup += 1) {
      if (lookup > 0) {
        const now = Date.now();
        for (const [topic, at] of this.#missingAt)
          if (now - at > recentlyMissingMs) this.#missingAt.delete(topic);
        if (unknown.every((topic) => this.#missingAt.has(topic))) break;
        await new Promise((resolve) => setTimeout(resolve, this.#recheckMs));
      }
      for (const topic of await this.#admin.listTopics()) this.#known.add(topic);
      unknown = unknown.filter((topic) => !this.#known.has(topic));
    }
    const now = Date.now();
    for (const topic of unknown) this.#missingAt.set(topic, now);
    return unknown;
  }

  /**
   * Resolves once every record is acknowledged by all in-sync replicas.
   * @throws MeshError `kafka_unavailable` (retryable): nothing may be assumed written.
   */
  send(records: OutgoingRecord[]): Promise<void> {
    if (records.length === 0) return Promise.resolve();
    return new Promise<void>((resolve, reject) => {
      this.#queue.push({ records, resolve, reject });
      if (!this.#flushing) {
        // An idle producer waits for the end of this turn of the event loop before it writes, so
        // that the sends of every handler this turn finished go out in one request, not the first
        // alone and the rest after its acknowledgement. On a loaded host each request is a write
        // and a wake-up on both sides, which costs more than the records in it.
        this.#flushing = true;
        setImmediate(() => void this.#flush());
      }
    });
  }

  async #flush(): Promise<void> {
    try {
      while (this.#queue.length > 0) {
        const batch: Pending[] = [];
        let count = 0;
        while (
          this.#queue.length > 0 &&
          (count === 0 || count + (this.#queue[0]?.records.length ?? 0) <= this.#maxBatchRecords)
        ) {
          const next = this.#queue.shift();
          if (next === undefined) break;
          batch.push(next);
          count += next.records.length;
        }
        const sending = await this.#withoutMissingTopics(batch);
        if (sending.length === 0) continue;
        const byTopic = new Map<
          string,
          { key: string | null; value: Buffer; headers: Record<string, string | Buffer> }[]
        >();
        for (const pending of sending) {
          for (const record of pending.records) {
            let messages = byTopic.get(record.topic);
            if (messages === undefined) byTopic.set(record.topic, (messages = []));
            messages.push({ key: record.key, value: record.value, headers: record.headers });
          }
        }
        try {
          this.#requests += 1;
          await this.#producer.sendBatch({
            acks: -1,
            topicMessages: [...byTopic].map(([topic, messages]) => ({ topic, messages })),
          });
          for (const pending of sending) pending.resolve();
        } catch (error) {
          // Looked up again before their next send: a topic deleted since it was first seen is
          // then refused (`not_found`) instead of failing again.
          for (const topic of byTopic.keys()) this.#known.delete(topic);
          const failure = retryable(
            'kafka_unavailable',
            `produce failed: ${(error as Error).message}`,
            { cause: error },
          );
          for (const pending of sending) pending.reject(failure);
        }
      }
    } finally {
      this.#flushing = false;
    }
  }

  /**
   * The sends of `batch` to write: those naming a topic the cluster does not have are rejected
   * (`not_found`) and left out, so the rest is written. Topics already seen cost no lookup. When
   * the metadata cannot be read (the broker is away) nothing is left out: the request then waits
   * for the broker like any other.
   */
  async #withoutMissingTopics(batch: Pending[]): Promise<Pending[]> {
    const topics = new Set<string>();
    for (const pending of batch)
      for (const record of pending.records)
        if (!this.#known.has(record.topic)) topics.add(record.topic);
    if (topics.size === 0) return batch;
    let missing: Set<string>;
    try {
      missing = new Set(await this.missingTopics(topics));
    } catch {
      return batch;
    }
    if (missing.size === 0) return batch;
    return batch.filter((pending) => {
      const absent = pending.records.find((record) => missing.has(record.topic))?.topic;
      if (absent === undefined) return true;
      pending.reject(
        terminal('not_found', `topic ${absent} does not exist; nothing of this send was written`),
      );
      return false;
    });
  }
}
