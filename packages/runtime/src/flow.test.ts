/**
 * The runtime's flow control, driven fetch by fetch: what it admits, when it pauses and resumes a
 * partition, and how much it keeps fetched but not yet admitted. A unit test: the group member is a
 * scripted stand-in for `@mesh/kafka`'s GroupConsumer (the boundary the runtime consumes through),
 * so fetches arrive exactly when the test says. The real broker is exercised by
 * packages/runtime/test.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { finishingFactor, loadConfig } from '@mesh/config';
import type { EventCodec } from '@mesh/contracts';
import { newEvent, type MeshEvent } from '@mesh/envelope';
import { MeshError } from '@mesh/errors';
import type { IdempotencyStore } from '@mesh/idempotency';
import {
  leaveTimeoutMs,
  type ConsumedRecord,
  type GroupConsumer,
  type GroupConsumerHandlers,
  type MeshProducer,
  type OutgoingRecord,
  type TopicPartition,
} from '@mesh/kafka';
import { createMetrics, silentLogger, type Logger } from '@mesh/telemetry';
import { MeshConsumer, type ConsumerDeps } from './consumer.ts';
import { topicNames } from './topics.ts';

const topic = 'flow.in';

/** The member's side of the group, scripted: the test calls `fetch`, the runtime pauses/resumes. */
class ScriptedMember {
  handlers: GroupConsumerHandlers | undefined;
  paused = false;
  pauses = 0;
  resumes = 0;
  /** The offsets committed, in order. */
  commits: number[] = [];
  /** Kafka cannot be reached: commits never answer, and a stop gives up after its timeout. */
  unreachable = false;
  /** The timeout of each stop. */
  stops: number[] = [];
  /** How long a commit takes, and how many were asked for. */
  commitMs = 0;
  commitsAsked = 0;
  #next = 0;

  asGroupConsumer(): GroupConsumer {
    const member = {
      groupId: 'flow',
      healthy: true,
      start: async (_topics: string[], handlers: GroupConsumerHandlers) => {
        this.handlers = handlers;
        handlers.assigned([{ topic, partition: 0 }]);
      },
      pause: (partitions: TopicPartition[]) => {
        if (partitions.length === 0) return;
        this.paused = true;
        this.pauses += 1;
      },
      resume: (partitions: TopicPartition[]) => {
        if (partitions.length === 0) return;
        this.paused = false;
        this.resumes += 1;
      },
      commit: async (offsets: { offset: string }[]) => {
        this.commitsAsked += 1;
        if (this.unreachable) await new Promise(() => undefined);
        if (this.commitMs > 0) await new Promise((resolve) => setTimeout(resolve, this.commitMs));
        for (const { offset } of offsets) this.commits.push(Number(offset));
      },
      // Like GroupConsumer: true once it left, false when Kafka did not answer within the timeout.
      stop: async (timeoutMs: number) => {
        this.stops.push(timeoutMs);
        if (!this.unreachable) return true;
        await new Promise((resolve) => setTimeout(resolve, timeoutMs));
        return false;
      },
    };
    return member as unknown as GroupConsumer;
  }

  /** One fetch of `count` new records (what kafkajs hands over after a resume). */
  fetch(count: number): number {
    const taken = this.fetchFrom(this.#next, count, this.#next + count);
    this.#next += count;
    return taken;
  }

  /** One fetch of `count` records from `first` on, the partition's end at `end`. */
  fetchFrom(first: number, count: number, end: number): number {
    const records: ConsumedRecord[] = [];
    for (let offset = first; offset < first + count; offset += 1) {
      records.push({
        topic,
        partition: 0,
        offset: String(offset),
        // No key: every record may run at once, so only the partition bound limits them.
        key: null,
        value: Buffer.from(String(offset)),
        headers: {},
        timestamp: '0',
      });
    }
    return this.handlers?.take(topic, 0, records, end) ?? 0;
  }
}

/** A logger that keeps the messages of its warnings and drops the rest. */
function warningLogger(): { log: Logger; warnings: string[] } {
  const warnings: string[] = [];
  const log = silentLogger();
  log.warn = ((_fields: unknown, message: string) => {
    warnings.push(message);
  }) as unknown as Logger['warn'];
  return { log, warnings };
}

/** The runtime's dependencies for a flow test: the scripted member, and no broker, registry or Redis. */
function flowDeps(
  partitionConcurrency: number,
  member: ScriptedMember,
  overrides: Partial<ConsumerDeps> = {},
): ConsumerDeps {
  const config = loadConfig(
    {
      MESH_KAFKA_BROKERS: '127.0.0.1:9',
      MESH_SCHEMA_REGISTRY_URL: 'http://127.0.0.1:9',
      MESH_REDIS_URL: 'redis://127.0.0.1:9',
      MESH_PARTITION_CONCURRENCY: String(partitionConcurrency),
    },
    { service: 'flow-test', defaultHttpPort: 0 },
  );
  return {
    config,
    createGroupConsumer: () => member.asGroupConsumer(),
    producer: undefined as unknown as MeshProducer,
    codec: undefined as unknown as EventCodec,
    idempotency: undefined as unknown as IdempotencyStore,
    metrics: createMetrics({ defaultMetrics: false }),
    log: silentLogger(),
    topics: topicNames('flow.'),
    ...overrides,
  };
}

test('a full partition pauses, resumes at half of its last fetch, and never holds more than one and a half fetches', async () => {
  const partitionConcurrency = 10;
  const fetchSize = 100;
  const member = new ScriptedMember();
  const running: { offset: number; done: () => void }[] = [];
  const handled: number[] = [];
  const consumer = new MeshConsumer(
    // Raw mode decodes nothing, claims nothing and produces nothing: only the flow is tested.
    flowDeps(partitionConcurrency, member),
    {
      groupId: 'flow',
      topics: [topic],
      handlers: {},
      raw: (record) =>
        new Promise<void>((resolve) => {
          running.push({ offset: Number(record.offset), done: resolve });
        }),
    },
  );
  await consumer.start();
  const settle = () => new Promise((resolve) => setImmediate(resolve));
  /** Lets `count` running handlers finish, oldest first. */
  const finish = async (count: number): Promise<void> => {
    for (const entry of running.splice(0, count)) {
      handled.push(entry.offset);
      entry.done();
    }
    await settle();
  };

  // The first fetch fills the partition: 10 run, 90 wait, fetching stops.
  assert.equal(member.fetch(fetchSize), fetchSize, 'the whole fetch is taken (run or kept)');
  await settle();
  assert.equal(running.length, partitionConcurrency);
  assert.equal(consumer.pending, partitionConcurrency);
  assert.equal(member.paused, true);

  // Room frees up 10 at a time; fetching resumes once half of the 90 kept are admitted, not at 0.
  let resumedAt: number | undefined;
  let fetches = 1;
  let mostWaiting = 0;
  const waiting = () => fetches * fetchSize - handled.length - running.length;
  for (let round = 0; round < 200 && fetches < 20; round += 1) {
    await finish(partitionConcurrency);
    mostWaiting = Math.max(mostWaiting, waiting());
    if (!member.paused) {
      resumedAt ??= waiting();
      // kafkajs fetches again: the new records queue behind the ones still waiting.
      member.fetch(fetchSize);
      fetches += 1;
      await settle();
      mostWaiting = Math.max(mostWaiting, waiting());
      assert.equal(member.paused, true, 'a fetch on top of a backlog pauses the partition again');
    }
  }
  assert.ok(resumedAt !== undefined && resumedAt <= 45 && resumedAt > 0, `resumed at ${resumedAt}`);
  assert.ok(
    mostWaiting <= 1.5 * fetchSize,
    `at most ${1.5 * fetchSize} records fetched and not admitted, saw ${mostWaiting}`,
  );
  assert.equal(fetches, 20);
  assert.ok(member.resumes >= 19 && member.pauses >= 20);

  // Drain: everything fetched runs exactly once, each offset once, and the partition reopens.
  while (running.length > 0) await finish(partitionConcurrency);
  assert.equal(handled.length, fetches * fetchSize);
  assert.deepEqual(
    [...handled].sort((a, b) => a - b),
    Array.from({ length: fetches * fetchSize }, (_, i) => i),
  );
  assert.equal(member.paused, false);
  assert.equal(consumer.pending, 0);
  await consumer.stop(0);
});

test('while the outputs of a full partition are written, the next events run; in flight stays under the running and finishing bounds', async () => {
  const partitionConcurrency = 10;
  const member = new ScriptedMember();
  /** Sends not yet acknowledged: the broker is as slow as the test says. */
  const sends: { records: OutgoingRecord[]; ack: () => void }[] = [];
  let handled = 0;
  let mostInFlight = 0;
  const consumer = new MeshConsumer(
    flowDeps(partitionConcurrency, member, {
      producer: {
        send: (records: OutgoingRecord[]) =>
          new Promise<void>((resolve) => sends.push({ records, ack: resolve })),
      } as unknown as MeshProducer,
      // Every record is the same event but for its offset: only the flow is tested.
      codec: {
        decodeNow: (record: ConsumedRecord) =>
          Promise.resolve(
            newEvent({
              type: 'io.mesh.test',
              source: '/flow',
              id: `e${record.offset}`,
              data: {},
            }),
          ),
        encodeNow: (event: MeshEvent) =>
          Promise.resolve({ key: null, value: Buffer.from(event.id), headers: {} }),
      } as unknown as EventCodec,
    }),
    {
      groupId: 'flow',
      topics: [topic],
      idempotency: false,
      loopGuards: false,
      handlers: {
        'io.mesh.test': (ctx) => {
          handled += 1;
          mostInFlight = Math.max(mostInFlight, consumer.pending);
          return Promise.resolve({
            emit: [{ topic: 'flow.out', event: ctx.derive({ type: 'io.mesh.test', data: {} }) }],
          });
        },
      },
    },
  );
  await consumer.start();
  const settle = async (): Promise<void> => {
    for (let i = 0; i < 5; i += 1) await new Promise((resolve) => setImmediate(resolve));
  };

  member.fetch(100);
  await settle();
  // No output is acknowledged yet, and more than the first ten handlers ran: the slots of the
  // events whose outputs are being written went to the next ones.
  assert.equal(sends.length > 0, true);
  assert.ok(handled > partitionConcurrency, `${handled} handlers ran before any acknowledgement`);
  // Every slot taken: the running ones and `finishingFactor` times as many finishing, and never
  // as many as both bounds together.
  const mostAllowed = (1 + finishingFactor) * partitionConcurrency;
  assert.ok(
    handled >= finishingFactor * partitionConcurrency,
    `${handled} handlers ran, the finishing room is ${finishingFactor * partitionConcurrency}`,
  );
  assert.ok(
    consumer.pending < mostAllowed,
    `${consumer.pending} in flight, bound ${partitionConcurrency} running + ${finishingFactor}× finishing`,
  );
  const before = handled;
  await settle();
  assert.equal(handled, before, 'with every slot finishing, nothing more runs until Kafka answers');

  // Acknowledge as outputs come: everything runs exactly once and in-flight stays under the bound.
  while (handled < 100 || sends.length > 0) {
    for (const send of sends.splice(0)) send.ack();
    await settle();
  }
  assert.equal(handled, 100);
  assert.ok(mostInFlight < mostAllowed, `most in flight ${mostInFlight}`);
  assert.equal(consumer.pending, 0);
  await consumer.stop(0);
});

test('a setting a dependency refuses mid-run (registry credentials revoked) holds the event, never dead-letters it', async () => {
  const member = new ScriptedMember();
  const sent: OutgoingRecord[] = [];
  let refusals = 1;
  let handled = 0;
  const consumer = new MeshConsumer(
    flowDeps(10, member, {
      producer: {
        send: (records: OutgoingRecord[]) => {
          sent.push(...records);
          return Promise.resolve();
        },
      } as unknown as MeshProducer,
      codec: {
        decodeNow: (record: ConsumedRecord) => {
          if (refusals > 0) {
            refusals -= 1;
            return Promise.reject(
              new MeshError('config_invalid', 'MESH_SCHEMA_REGISTRY_PASSWORD is refused (401)'),
            );
          }
          return Promise.resolve(
            newEvent({ type: 'io.mesh.test', source: '/flow', id: `e${record.offset}`, data: {} }),
          );
        },
      } as unknown as EventCodec,
    }),
    {
      groupId: 'flow',
      topics: [topic],
      idempotency: false,
      loopGuards: false,
      handlers: {
        'io.mesh.test': () => {
          handled += 1;
          return Promise.resolve(undefined);
        },
      },
    },
  );
  await consumer.start();
  member.fetch(1);
  // Tried again after the runtime's first backoff (200 ms), as for an unreachable registry.
  const deadline = Date.now() + 5_000;
  while (handled === 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
  assert.equal(handled, 1);
  assert.deepEqual(
    sent.map((record) => record.topic),
    [],
    'nothing was dead-lettered',
  );
  await consumer.stop(0);
});

test('offsets below the committed one are a redelivery while the end is past it, a new log once the end is below it', async () => {
  const member = new ScriptedMember();
  const handled: number[] = [];
  const consumer = new MeshConsumer(flowDeps(100, member), {
    groupId: 'flow',
    topics: [topic],
    handlers: {},
    commitIntervalMs: 5,
    raw: (record) => {
      handled.push(Number(record.offset));
      return Promise.resolve();
    },
  });
  await consumer.start();
  const committedTo = async (offset: number): Promise<void> => {
    const deadline = Date.now() + 5_000;
    while (!member.commits.includes(offset) && Date.now() < deadline)
      await new Promise((resolve) => setTimeout(resolve, 5));
    assert.ok(member.commits.includes(offset), `committed ${member.commits.join(',')}`);
  };

  member.fetchFrom(0, 20, 20);
  await committedTo(20);
  // A rejoin, or a broker that lost the last commits in a restart: kafkajs fetches again from an
  // older committed offset. The log still reaches past 20, so 10–19 are not run again.
  member.fetchFrom(10, 15, 25);
  await committedTo(25);
  assert.deepEqual(
    handled,
    Array.from({ length: 25 }, (_, i) => i),
  );

  // The topic deleted and created again: a new log, ending at 3, below the committed 25.
  member.fetchFrom(0, 3, 3);
  await committedTo(3);
  assert.deepEqual(handled.slice(25), [0, 1, 2]);
  await consumer.stop(0);
});

test('a stop Kafka does not answer ends within the leave bound, and says what it left undone', async () => {
  const member = new ScriptedMember();
  member.unreachable = true;
  const { log, warnings } = warningLogger();
  const handled: number[] = [];
  const consumer = new MeshConsumer(flowDeps(10, member, { log }), {
    groupId: 'flow',
    topics: [topic],
    handlers: {},
    raw: (record) => {
      handled.push(Number(record.offset));
      return Promise.resolve();
    },
  });
  await consumer.start();
  member.fetch(5);
  while (consumer.pending > 0) await new Promise((resolve) => setImmediate(resolve));
  assert.deepEqual(handled, [0, 1, 2, 3, 4]);
  // A periodic commit is now waiting for Kafka for ever; the stop's own commit queues behind it.
  await new Promise((resolve) => setTimeout(resolve, 300));

  const started = performance.now();
  await consumer.stop(0);
  const took = performance.now() - started;
  assert.ok(
    took >= leaveTimeoutMs - 50 && took < leaveTimeoutMs + 1_000,
    `the stop took ${Math.round(took)} ms, the bound is ${leaveTimeoutMs} ms`,
  );
  assert.deepEqual(member.commits, [], 'nothing could be committed');
  assert.equal(member.stops.length, 1);
  assert.ok(
    (member.stops[0] ?? Infinity) <= 50,
    `the leave got what the commit left of the bound: ${member.stops[0]} ms`,
  );
  assert.equal(warnings.length, 2, warnings.join(' | '));
  assert.match(warnings[0] ?? '', /without the last commit/);
  assert.match(warnings[1] ?? '', /did not answer within 5 s: stopped without leaving the group/);
});

test('a stop Kafka answers commits everything finished, after the commit in flight, and leaves in silence', async () => {
  const member = new ScriptedMember();
  const { log, warnings } = warningLogger();
  const consumer = new MeshConsumer(flowDeps(10, member, { log }), {
    groupId: 'flow',
    topics: [topic],
    handlers: {},
    raw: () => Promise.resolve(),
  });
  await consumer.start();
  const drained = async (): Promise<void> => {
    while (consumer.pending > 0) await new Promise((resolve) => setImmediate(resolve));
  };
  member.commitMs = 300;
  member.fetch(5);
  await drained();
  // The periodic commit of offsets 0–4 is under way when 5–9 finish and the stop comes.
  while (member.commitsAsked === 0) await new Promise((resolve) => setTimeout(resolve, 5));
  member.fetch(5);
  await drained();
  await consumer.stop(0);
  assert.deepEqual(
    member.commits,
    [5, 10],
    'the stop committed what finished after the commit in flight',
  );
  assert.equal(member.stops.length, 1);
  assert.deepEqual(warnings, []);
});
