/**
 * The mesh's producer: idempotent, `acks=all`, and batching. Sends from many concurrent handlers are
 * queued and written by one `sendBatch` at a time, which batches under load (throughput) and keeps
 * one request in flight per producer, so the idempotent producer's sequence numbers stay in order.
 *
 * A request stays under Kafka's record batch limit however many sends it gathers, and a record too
 * large for Kafka is refused (`invalid_output`, terminal) instead of written: the broker would refuse
 * the whole request, and every send gathered with it would fail each time it was tried again.
 *
 * A send to a topic the cluster does not have is refused (`not_found`) instead of written: kafkajs
 * would retry it for as long as the producer retries (forever here), and with one request in flight
 * every other send of the process would wait behind it. A topic deleted after it was first seen
 * fails its send after 5 s (the kafkajs patch) and is looked up again before the next one.
 */
import type { Kafka, Producer } from 'kafkajs';
import { isMeshError, retryable, terminal } from '@mesh/errors';
import { MeshAdmin } from './admin.ts';
import { connectFailure } from './client.ts';
import { meshPartitioner } from './partitioner.ts';

export interface OutgoingRecord {
  topic: string;
  key: string | null;
  value: Buffer;
  headers: Record<string, string | Buffer>;
}

interface Pending {
  records: OutgoingRecord[];
  /** The records' size as `recordBytes` estimates it. */
  bytes: number;
  resolve: () => void;
  reject: (error: Error) => void;
}

export interface SendOptions {
  /**
   * Gives the send up when it aborts: a send still queued is withdrawn (nothing of it is written);
   * one already in a produce request cannot be, and may yet be written. Either way the send rejects
   * with `kafka_unavailable` (retryable), `details.written` false or `'unknown'`. For a caller that
   * must answer in time (an HTTP request); the runtime's own sends wait for the broker instead.
   */
  signal?: AbortSignal;
}

const recentlyMissingMs = 10_000;

/**
 * Kafka refuses a partition's record batch over `message.max.bytes` (topic: `max.message.bytes`),
 * 1,048,588 bytes by default, and kafkajs writes all of a request's records for one partition as
 * one batch. So a request is kept under `maxRequestBytes` (as `recordBytes` estimates them), and a
 * record larger than `maxRecordBytes` (exactly, with the batch's own 61 bytes to spare) is never
 * sent. Both assume topics keep Kafka's default limit; a topic with a lower one refuses the
 * records, and a send alone in its request then fails for good (`invalid_output`).
 */
export const defaultMaxRequestBytes = 1_000_000;
export const defaultMaxRecordBytes = 1_048_500;

const utf8Bound = (text: string): number => text.length * 3;

/**
 * An upper bound of the bytes a record takes in a record batch: its value, its key and headers, and
 * the varints and attributes around them. Strings count 3 bytes per UTF-16 unit (the most UTF-8
 * needs) unless `textBytes` says otherwise: cheap, as it is computed for every record sent.
 */
export function recordBytes(record: OutgoingRecord, textBytes = utf8Bound): number {
  let bytes = 32 + record.value.length + (record.key === null ? 0 : textBytes(record.key));
  for (const name in record.headers) {
    const value = record.headers[name];
    if (value === undefined) continue;
    bytes += 10 + textBytes(name) + (typeof value === 'string' ? textBytes(value) : value.length);
  }
  return bytes;
}

/** Broker answers about the records themselves: sending them again cannot succeed. */
const refusedRecordErrors = new Set([
  'MESSAGE_TOO_LARGE',
  'RECORD_LIST_TOO_LARGE',
  'INVALID_RECORD',
]);

export interface ProducerOptions {
  /** Most records written by one request. */
  maxBatchRecords?: number;
  /** Most bytes written by one request, as `recordBytes` estimates them (see `defaultMaxRequestBytes`). */
  maxRequestBytes?: number;
  /** Most bytes one record may take; a larger one is refused (`invalid_output`) and not sent. */
  maxRecordBytes?: number;
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
  readonly #maxRequestBytes: number;
  readonly #maxRecordBytes: number;
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
    this.#maxRequestBytes = options.maxRequestBytes ?? defaultMaxRequestBytes;
    this.#maxRecordBytes = options.maxRecordBytes ?? defaultMaxRecordBytes;
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
      throw connectFailure('producer', error);
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
   * @throws MeshError `kafka_unavailable` (retryable): nothing may be assumed written, unless
   *   `details.written` is false (a send `options.signal` withdrew before it was sent).
   */
  send(records: OutgoingRecord[], options: SendOptions = {}): Promise<void> {
    if (records.length === 0) return Promise.resolve();
    const { signal } = options;
    if (signal?.aborted === true) return Promise.reject(givenUp(signal, false));
    let bytes = 0;
    for (const record of records) {
      const size = recordBytes(record);
      if (size > this.#maxRecordBytes) {
        const exact = recordBytes(record, (text) => Buffer.byteLength(text));
        if (exact > this.#maxRecordBytes)
          return Promise.reject(
            terminal(
              'invalid_output',
              `a record of ${exact} bytes for ${record.topic} is over the producer's limit of ` +
                `${this.#maxRecordBytes} (Kafka's message.max.bytes); nothing of this send was written`,
              { details: { tooLarge: true, bytes: exact, limit: this.#maxRecordBytes } },
            ),
          );
      }
      bytes += size;
    }
    return new Promise<void>((resolve, reject) => {
      const pending: Pending = { records, bytes, resolve, reject };
      if (signal !== undefined) {
        const abandon = (): void => {
          const queued = this.#queue.indexOf(pending);
          if (queued >= 0) this.#queue.splice(queued, 1);
          reject(givenUp(signal, queued >= 0 ? false : 'unknown'));
        };
        signal.addEventListener('abort', abandon, { once: true });
        pending.resolve = () => {
          signal.removeEventListener('abort', abandon);
          resolve();
        };
        pending.reject = (error) => {
          signal.removeEventListener('abort', abandon);
          reject(error);
        };
      }
      this.#queue.push(pending);
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
        let bytes = 0;
        for (;;) {
          const next = this.#queue[0];
          if (next === undefined) break;
          // The first send always goes: one larger than a request is a request of its own (each of
          // its records is under the record limit, checked in `send`).
          if (
            batch.length > 0 &&
            (count + next.records.length > this.#maxBatchRecords ||
              bytes + next.bytes > this.#maxRequestBytes)
          )
            break;
          this.#queue.shift();
          batch.push(next);
          count += next.records.length;
          bytes += next.bytes;
        }
        const sending = await this.#withoutMissingTopics(batch);
        if (sending.length === 0) continue;
        // The records are kafkajs messages as they are (it ignores their `topic`): no copy of each.
        const byTopic = new Map<string, OutgoingRecord[]>();
        for (const pending of sending) {
          for (const record of pending.records) {
            let messages = byTopic.get(record.topic);
            if (messages === undefined) byTopic.set(record.topic, (messages = []));
            messages.push(record);
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
          const chain = [...causes(error)];
          // A topic deleted since it was first seen (the kafkajs patch gives its send up): looked
          // up again before the next send, which is then refused (`not_found`). Not on other
          // failures: a broker outage would otherwise cost every retry a metadata lookup first.
          if (
            chain.some(
              (e) => e.type === 'UNKNOWN_TOPIC_OR_PARTITION' || /MetadataNotLoaded$/.test(e.name),
            )
          )
            for (const topic of byTopic.keys()) this.#known.delete(topic);
          const type = chain.find((e) => e.type !== undefined)?.type;
          const failure =
            type !== undefined && refusedRecordErrors.has(type) && sending.length === 1
              ? // The broker refused the records of this one send (e.g. a topic's max.message.bytes
                // below this producer's limit): sending them again would fail again.
                terminal(
                  'invalid_output',
                  `Kafka refused the records: ${(error as Error).message}`,
                  {
                    cause: error,
                    details: { kafkaError: type, tooLarge: type !== 'INVALID_RECORD' },
                  },
                )
              : retryable('kafka_unavailable', `produce failed: ${(error as Error).message}`, {
                  cause: error,
                });
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

/** The error of a send its signal gave up: `written` false when it was withdrawn from the queue. */
function givenUp(signal: AbortSignal, written: false | 'unknown'): Error {
  const why =
    (signal.reason as { name?: unknown } | undefined)?.name === 'TimeoutError'
      ? 'its deadline passed'
      : 'the send was given up';
  return retryable(
    'kafka_unavailable',
    written === false
      ? `Kafka did not take the records in time (${why}); they were withdrawn, nothing was written`
      : `Kafka did not acknowledge the records in time (${why}); they may still be written`,
    { details: { written } },
  );
}

/** True when a send was refused because a record is too large for Kafka (and would be again). */
export function isRecordTooLarge(error: unknown): boolean {
  return isMeshError(error) && error.details?.tooLarge === true;
}

/** A kafkajs error and its causes, outermost first: their names and broker error types. */
function* causes(error: unknown): Generator<{ name: string; type: string | undefined }> {
  type Cause = { name?: unknown; type?: unknown; cause?: unknown; originalError?: unknown };
  let e = error as Cause | null | undefined;
  for (let depth = 0; e !== null && e !== undefined && depth < 5; depth += 1) {
    yield {
      name: typeof e.name === 'string' ? e.name : '',
      type: typeof e.type === 'string' ? e.type : undefined,
    };
    e = (e.originalError ?? e.cause) as Cause | null | undefined;
  }
}
