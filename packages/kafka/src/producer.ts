/**
 * The mesh's producer: idempotent, `acks=all`, and batching. Sends from many concurrent handlers are
 * queued and written by one `sendBatch` at a time, which batches under load (throughput) and keeps
 * one request in flight per producer, so the idempotent producer's sequence numbers stay in order.
 */
import type { Kafka, Producer } from 'kafkajs';
import { retryable } from '@mesh/errors';
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

export interface ProducerOptions {
  /** Most records written by one request. */
  maxBatchRecords?: number;
}

export class MeshProducer {
  readonly #producer: Producer;
  readonly #maxBatchRecords: number;
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
        const byTopic = new Map<
          string,
          { key: string | null; value: Buffer; headers: Record<string, string | Buffer> }[]
        >();
        for (const pending of batch) {
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
          for (const pending of batch) pending.resolve();
        } catch (error) {
          const failure = retryable(
            'kafka_unavailable',
            `produce failed: ${(error as Error).message}`,
            { cause: error },
          );
          for (const pending of batch) pending.reject(failure);
        }
      }
    } finally {
      this.#flushing = false;
    }
  }
}
