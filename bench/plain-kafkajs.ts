/**
 * The baselines: what a plain kafkajs consumer does with the same work.
 *
 * This is the one file of the repository outside `@mesh/kafka` that imports kafkajs, and that is
 * deliberate: a baseline that went through the mesh's own packages would measure the mesh against
 * itself. The mesh side of every benchmark goes through `@mesh/runtime`.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { Kafka, logLevel, type Consumer, type Producer } from 'kafkajs';

/** When the first message reached user code, and when the last one was done (performance.now()). */
export interface Timing {
  first: number;
  last: number;
  /** The consumer group that did the work, to check its committed offsets afterwards. */
  groupId: string;
}

export class PlainKafka {
  readonly #kafka: Kafka;
  readonly #prefix: string;
  #rounds = 0;

  constructor(brokers: string[], groupPrefix: string) {
    this.#kafka = new Kafka({ clientId: 'bench-plain', brokers, logLevel: logLevel.ERROR });
    this.#prefix = groupPrefix;
  }

  #consumer(name: string): { consumer: Consumer; groupId: string } {
    this.#rounds += 1;
    const groupId = `${this.#prefix}plain-${name}-${this.#rounds}`;
    const consumer = this.#kafka.consumer({
      groupId,
      // The same fetch settings as @mesh/kafka's GroupConsumer, so only the processing differs.
      maxBytesPerPartition: 1_048_576,
      maxWaitTimeInMs: 100,
      allowAutoTopicCreation: false,
    });
    return { consumer, groupId };
  }

  /**
   * An `eachMessage` consumer that sleeps `sleepMs` per message, one message at a time (kafkajs runs
   * the messages of a partition in order), with kafkajs's auto-commit. Resolves after `count`.
   */
  async slow(topic: string, count: number, sleepMs: number): Promise<Timing> {
    const { consumer, groupId } = this.#consumer('slow');
    let first: number | undefined;
    let done = 0;
    let finished: ((last: number) => void) | undefined;
    const allDone = new Promise<number>((resolve) => (finished = resolve));
    try {
      await consumer.connect();
      await consumer.subscribe({ topics: [topic], fromBeginning: true });
      await consumer.run({
        eachMessage: async () => {
          if (done >= count) return;
          first ??= performance.now();
          await sleep(sleepMs);
          done += 1;
          if (done === count) finished?.(performance.now());
        },
      });
      const last = await allDone;
      return { first: first ?? last, last, groupId };
    } finally {
      await consumer.disconnect();
    }
  }

  /**
   * A consume → produce relay: each fetched batch is produced to `output` in one request by an
   * idempotent producer with acks=-1 (the same durability the mesh's producer has), then its offsets
   * are committed (kafkajs commits the resolved offsets after each batch). With `perMessage`, it is
   * an `eachMessage` relay instead: one awaited send per message.
   * Resolves when the output topic's end offset reaches `targetEnd` (see `endOffset`).
   */
  async relay(
    input: string,
    output: string,
    options: {
      perMessage?: boolean;
      waitForEnd: (started: () => number | undefined) => Promise<number>;
    },
  ): Promise<Timing> {
    const producer: Producer = this.#kafka.producer({
      idempotent: true,
      allowAutoTopicCreation: false,
    });
    const { consumer, groupId } = this.#consumer(
      options.perMessage === true ? 'each-message' : 'batch',
    );
    let first: number | undefined;
    try {
      await producer.connect();
      await consumer.connect();
      await consumer.subscribe({ topics: [input], fromBeginning: true });
      if (options.perMessage === true) {
        await consumer.run({
          eachMessage: async ({ message }) => {
            first ??= performance.now();
            await producer.send({
              topic: output,
              acks: -1,
              messages: [{ key: message.key, value: message.value, headers: message.headers }],
            });
          },
        });
      } else {
        await consumer.run({
          eachBatch: async (payload) => {
            const { batch } = payload;
            if (!payload.isRunning() || payload.isStale() || batch.messages.length === 0) return;
            first ??= performance.now();
            await producer.send({
              topic: output,
              acks: -1,
              messages: batch.messages.map((m) => ({
                key: m.key,
                value: m.value,
                headers: m.headers,
              })),
            });
            payload.resolveOffset(batch.lastOffset());
            await payload.heartbeat();
          },
        });
      }
      const last = await options.waitForEnd(() => first);
      return { first: first ?? last, last, groupId };
    } finally {
      await consumer.disconnect();
      await producer.disconnect();
    }
  }
}
