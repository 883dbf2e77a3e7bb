/**
 * The baselines: what a plain kafkajs consumer does with the same work.
 *
 * This is the one file of the repository outside `@mesh/kafka` that imports kafkajs, and that is
 * deliberate: a baseline that went through the mesh's own packages would measure the mesh against
 * itself. The mesh side of every benchmark goes through `@mesh/runtime`.
 *
 * Two copies of kafkajs 2.2.4 can serve a baseline. `patched` is the mesh's own (`kafkajs`, which
 * the root `postinstall` patches, see `packages/kafka/patches/kafkajs.mjs`): the baselines of the
 * ratio targets use it, so that a ratio measures the mesh's own work and not the patch. `stock` is
 * kafkajs as published (`kafkajs-stock`, an npm alias the patch never touches): what a consumer
 * written with `npm install kafkajs` gets, reported beside the targets for context.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { Kafka, logLevel, type Consumer, type Message, type Producer } from 'kafkajs';
import { Kafka as StockKafka } from 'kafkajs-stock';

export const kafkajsCopies = ['patched', 'stock'] as const;
export type KafkajsCopy = (typeof kafkajsCopies)[number];

const kafkaOf = (copy: KafkajsCopy): typeof Kafka => (copy === 'stock' ? StockKafka : Kafka);

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

  constructor(brokers: string[], groupPrefix: string, copy: KafkajsCopy = 'patched') {
    this.#kafka = new (kafkaOf(copy))({
      clientId: `bench-plain-${copy}`,
      brokers,
      logLevel: logLevel.ERROR,
    });
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

/**
 * The raw pipeline of the e2e, slow-agents and lag-recovery benchmarks: the mesh's fan-out task done
 * with nothing but kafkajs — no envelope, registry, Redis or metrics — with the same topics, hops and
 * message counts (request → 3 subtasks → 3 results → 1 output). Its three roles run as separate
 * processes (`bench/raw-pipeline.ts`), as the orchestrator, worker and aggregator do.
 */
export const rawAgents = ['research', 'summarize', 'fact-check'] as const;

export interface RawTopics {
  requests: string;
  results: string;
  outputs: string;
  work(agent: string): string;
  /** Every topic of the pipeline, to create and delete. */
  all: string[];
}

export function rawTopics(prefix: string): RawTopics {
  const work = (agent: string): string => `${prefix}raw.work.${agent}`;
  const topics = {
    requests: `${prefix}raw.requests`,
    results: `${prefix}raw.results`,
    outputs: `${prefix}raw.outputs`,
  };
  return { ...topics, work, all: [...Object.values(topics), ...rawAgents.map(work)] };
}

export const rawRoles = ['planner', 'agents', 'joiner', 'relay'] as const;
export type RawRole = (typeof rawRoles)[number];
export const rawModes = ['batch', 'each', 'slow'] as const;
export type RawMode = (typeof rawModes)[number];

export interface RawRoleOptions {
  brokers: string[];
  prefix: string;
  /**
   * `batch`: every role is an eachBatch relay (each fetched batch produced in one send, then
   * committed). `each`: every role is an `eachMessage` relay (one awaited send per message). `slow`:
   * as `batch`, but the agents are `eachMessage` consumers that call the fake LLM for each message,
   * one at a time, as a plain consumer would.
   */
  mode: RawMode;
  /** The fake LLM's base URL (`…/v1`), for `slow`. */
  llmUrl?: string;
  /** relay: the topic drained and the topic written, and the group (lag recovery). */
  relay?: { input: string; output: string; groupId: string };
  /** Which kafkajs (default `patched`, the mesh's own). */
  kafkajs?: KafkajsCopy;
}

interface RawMessage {
  key: Buffer | null;
  value: Buffer | null;
}

/**
 * Starts one role of the raw pipeline and resolves once each of its consumers joined its group.
 * Returns a function that stops it.
 */
export async function startRawRole(
  role: RawRole,
  options: RawRoleOptions,
): Promise<() => Promise<void>> {
  const kafka = new (kafkaOf(options.kafkajs ?? 'patched'))({
    clientId: `bench-raw-${role}`,
    brokers: options.brokers,
    logLevel: logLevel.ERROR,
  });
  const topics = rawTopics(options.prefix);
  const consumers: Consumer[] = [];
  const producers: Producer[] = [];
  // One producer per consumer: the sends of an idempotent producer must not interleave.
  const newProducer = async (): Promise<Producer> => {
    const producer = kafka.producer({ idempotent: true, allowAutoTopicCreation: false });
    producers.push(producer);
    await producer.connect();
    return producer;
  };
  /** A producer and a consumer of `topic` in `groupId`, subscribed; `joined` when it has partitions. */
  const member = async (
    groupId: string,
    topic: string,
  ): Promise<{ producer: Producer; consumer: Consumer; joined: Promise<void> }> => {
    const producer = await newProducer();
    const consumer = kafka.consumer({
      groupId,
      maxBytesPerPartition: 1_048_576,
      maxWaitTimeInMs: 100,
      allowAutoTopicCreation: false,
    });
    consumers.push(consumer);
    const joined = new Promise<void>((resolve) =>
      consumer.on(consumer.events.GROUP_JOIN, () => resolve()),
    );
    await consumer.connect();
    await consumer.subscribe({ topics: [topic], fromBeginning: true });
    return { producer, consumer, joined };
  };
  const consume = async (
    groupId: string,
    topic: string,
    relay: (messages: RawMessage[]) => { topic: string; messages: RawMessage[] }[],
  ): Promise<void> => {
    const { producer, consumer, joined } = await member(groupId, topic);
    if (options.mode === 'each') {
      await consumer.run({
        eachMessage: async ({ message }) => {
          const topicMessages = relay([message]).filter((t) => t.messages.length > 0);
          if (topicMessages.length > 0) await producer.sendBatch({ acks: -1, topicMessages });
        },
      });
      await joined;
      return;
    }
    await consumer.run({
      eachBatch: async (payload) => {
        const { batch } = payload;
        if (!payload.isRunning() || payload.isStale() || batch.messages.length === 0) return;
        const topicMessages = relay(batch.messages).filter((t) => t.messages.length > 0);
        if (topicMessages.length > 0) await producer.sendBatch({ acks: -1, topicMessages });
        payload.resolveOffset(batch.lastOffset());
        await payload.heartbeat();
      },
    });
    await joined;
  };
  const consumeEach = async (
    groupId: string,
    topic: string,
    each: (message: RawMessage, producer: Producer) => Promise<void>,
  ): Promise<void> => {
    const { producer, consumer, joined } = await member(groupId, topic);
    await consumer.run({ eachMessage: ({ message }) => each(message, producer) });
    await joined;
  };
  const group = (name: string): string => `${options.prefix}raw.${name}`;
  switch (role) {
    case 'planner':
      await consume(group('planner'), topics.requests, (messages) =>
        rawAgents.map((agent) => ({
          topic: topics.work(agent),
          messages: messages.map((m) => ({ key: m.key, value: m.value })),
        })),
      );
      break;
    case 'agents': {
      const result = (agent: string, m: RawMessage, output: unknown): RawMessage => ({
        key: m.key,
        value: Buffer.from(JSON.stringify({ taskId: m.key?.toString(), agent, output })),
      });
      await Promise.all(
        rawAgents.map((agent) =>
          options.mode !== 'slow'
            ? consume(group(`agent.${agent}`), topics.work(agent), (messages) => [
                { topic: topics.results, messages: messages.map((m) => result(agent, m, {})) },
              ])
            : consumeEach(group(`agent.${agent}`), topics.work(agent), async (m, producer) => {
                const output = await complete(options.llmUrl ?? '', agent, m.value);
                await producer.send({
                  topic: topics.results,
                  acks: -1,
                  messages: [result(agent, m, output)],
                });
              }),
        ),
      );
      break;
    }
    case 'joiner': {
      // Results per task, in memory: the raw pipeline keeps no state anywhere else.
      const seen = new Map<string, number>();
      await consume(group('joiner'), topics.results, (messages) => {
        const outputs: RawMessage[] = [];
        for (const m of messages) {
          const { taskId } = JSON.parse(m.value?.toString() ?? '{}') as { taskId?: string };
          if (taskId === undefined) continue;
          const count = (seen.get(taskId) ?? 0) + 1;
          if (count < rawAgents.length) {
            seen.set(taskId, count);
            continue;
          }
          seen.delete(taskId);
          outputs.push({ key: m.key, value: Buffer.from(JSON.stringify({ taskId, done: true })) });
        }
        return [{ topic: topics.outputs, messages: outputs }];
      });
      break;
    }
    case 'relay': {
      const relay = options.relay;
      if (relay === undefined) throw new Error('the relay role needs its topics');
      await consume(relay.groupId, relay.input, (messages) => [
        {
          topic: relay.output,
          messages: messages.map((m) => ({ key: m.key, value: m.value })),
        },
      ]);
      break;
    }
  }
  return async () => {
    await Promise.all(consumers.map((c) => c.disconnect()));
    await Promise.all(producers.map((p) => p.disconnect()));
  };
}

/** One chat completion from the fake LLM: what a plain consumer's agent does with a message. */
async function complete(baseUrl: string, agent: string, value: Buffer | null): Promise<unknown> {
  const response = await fetch(`${baseUrl}/chat/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({
      model: 'fake',
      messages: [
        { role: 'system', content: `You are the ${agent} agent. Answer with one JSON object.` },
        { role: 'user', content: value?.toString() ?? '' },
      ],
    }),
  });
  if (!response.ok) throw new Error(`fake LLM answered ${response.status}`);
  const body = (await response.json()) as { choices?: { message?: { content?: string } }[] };
  return JSON.parse(body.choices?.[0]?.message?.content ?? '{}') as unknown;
}

/**
 * A plain producer for the raw pipeline's requests (idempotent, acks=-1). Sends are queued and
 * written one request at a time, as the mesh's producer does: an idempotent kafkajs producer must
 * not have two requests to one partition in flight.
 */
export class RawProducer {
  readonly #producer: Producer;
  #queue: { topic: string; messages: Message[]; done: () => void; fail: (e: Error) => void }[] = [];
  #flushing = false;

  constructor(brokers: string[]) {
    const kafka = new Kafka({ clientId: 'bench-raw-client', brokers, logLevel: logLevel.ERROR });
    this.#producer = kafka.producer({ idempotent: true, allowAutoTopicCreation: false });
  }

  connect(): Promise<void> {
    return this.#producer.connect();
  }

  send(topic: string, messages: { key: string; value: string | Buffer }[]): Promise<void> {
    return new Promise<void>((done, fail) => {
      this.#queue.push({ topic, messages, done, fail });
      if (!this.#flushing) void this.#flush();
    });
  }

  /** Publishes one fan-out request per task id, keyed by the task id. */
  publisher(topic: string): (taskIds: string[]) => Promise<void> {
    return (ids) =>
      this.send(
        topic,
        ids.map((id) => ({
          key: id,
          value: JSON.stringify({
            taskId: id,
            template: 'fan-out',
            input: { topic: `benchmark task ${id}` },
          }),
        })),
      );
  }

  async #flush(): Promise<void> {
    this.#flushing = true;
    try {
      while (this.#queue.length > 0) {
        const batch = this.#queue.splice(0, this.#queue.length);
        const byTopic = new Map<string, Message[]>();
        for (const { topic, messages } of batch)
          byTopic.set(topic, [...(byTopic.get(topic) ?? []), ...messages]);
        try {
          await this.#producer.sendBatch({
            acks: -1,
            topicMessages: [...byTopic].map(([topic, messages]) => ({ topic, messages })),
          });
          for (const pending of batch) pending.done();
        } catch (error) {
          for (const pending of batch) pending.fail(error as Error);
        }
      }
    } finally {
      this.#flushing = false;
    }
  }

  disconnect(): Promise<void> {
    return this.#producer.disconnect();
  }
}

/** The task of a raw pipeline output: its key. */
export function rawOutcome(record: {
  key: Buffer | null;
}): { taskId: string; ok: boolean } | undefined {
  return record.key === null ? undefined : { taskId: record.key.toString(), ok: true };
}

export interface RecordTime {
  topic: string;
  key: string;
  /** The record's CreateTime: when its producer built it (ms since the epoch). */
  ts: number;
}

/**
 * The keys and CreateTime timestamps of the records of `topics` written since `sinceMs`, read after
 * a run by a group of its own that seeks to that time: a latency can then be split by hop without a
 * reader competing with the pipeline while it is measured. (Not `admin.setOffsets`, whose consumer
 * always waits out a 5 s fetch.)
 * @throws Error when the records are not all read within `timeoutMs`.
 */
export async function recordTimes(
  brokers: string[],
  topics: string[],
  sinceMs: number,
  timeoutMs = 60_000,
): Promise<RecordTime[]> {
  const kafka = new Kafka({ clientId: 'bench-hops', brokers, logLevel: logLevel.ERROR });
  const groupId = `bench-hops-${Date.now()}-${Math.random().toString(36).slice(2, 8)}`;
  const admin = kafka.admin();
  /** Per topic:partition, the first offset to read and the end (exclusive). */
  const ranges = new Map<string, { topic: string; partition: number; from: number; end: number }>();
  await admin.connect();
  try {
    for (const topic of topics) {
      const from = await admin.fetchTopicOffsetsByTimestamp(topic, sinceMs);
      const high = await admin.fetchTopicOffsets(topic);
      for (const { partition, offset } of from) {
        const end = Number(high.find((h) => h.partition === partition)?.high ?? offset);
        if (end > Number(offset))
          ranges.set(`${topic}:${partition}`, { topic, partition, from: Number(offset), end });
      }
    }
  } finally {
    await admin.disconnect();
  }
  const records: RecordTime[] = [];
  if (ranges.size === 0) return records;
  const left = new Set(ranges.keys());
  const consumer = kafka.consumer({ groupId, maxWaitTimeInMs: 100 });
  let done: (() => void) | undefined;
  let fail: ((error: Error) => void) | undefined;
  const allRead = new Promise<void>((resolve, reject) => {
    done = resolve;
    fail = reject;
  });
  const timer = setTimeout(
    () =>
      fail?.(new Error(`record timestamps: ${left.size} partitions unread after ${timeoutMs} ms`)),
    timeoutMs,
  );
  try {
    await consumer.connect();
    await consumer.subscribe({ topics, fromBeginning: false });
    await consumer.run({
      autoCommit: false,
      eachBatch: async ({ batch }) => {
        const key = `${batch.topic}:${batch.partition}`;
        const range = ranges.get(key);
        if (range === undefined) return;
        for (const m of batch.messages) {
          const offset = Number(m.offset);
          if (offset < range.from || offset >= range.end) continue;
          records.push({
            topic: batch.topic,
            key: m.key?.toString() ?? '',
            ts: Number(m.timestamp),
          });
        }
        if (Number(batch.lastOffset()) + 1 >= range.end) left.delete(key);
        if (left.size === 0) done?.();
      },
    });
    for (const { topic, partition, from } of ranges.values())
      consumer.seek({ topic, partition, offset: String(from) });
    await allRead;
    return records;
  } finally {
    clearTimeout(timer);
    await consumer.disconnect();
  }
}
