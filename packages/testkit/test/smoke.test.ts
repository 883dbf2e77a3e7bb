/**
 * The stack is real: Kafka keeps a consumer group's committed offset across restarts, the registry
 * stores JSON Schemas and refuses an incompatible change, Redis expires keys; and a missing
 * component fails the run with a message that names it.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { connect, createServer, type Socket } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { ContractRegistry } from '@mesh/contracts';
import { isMeshError } from '@mesh/errors';
import {
  GroupConsumer,
  MeshAdmin,
  MeshProducer,
  createKafka,
  resultWithin,
  type ConsumedRecord,
  type Kafka,
} from '@mesh/kafka';
import { createRedis, waitForRedis } from '@mesh/redis';
import {
  blackholingRelay,
  disposable,
  meshEnv,
  onCleanup,
  uniqueName,
  verifyEnvironment,
  waitFor,
} from '../src/index.ts';

/** A kafkajs client on the stack's broker. */
async function smokeKafka() {
  const env = await meshEnv();
  return createKafka({ brokers: env.MESH_KAFKA_BROKERS.split(','), clientId: 'smoke' });
}

/**
 * A kafkajs client on the stack's broker that `sever` cuts off, as if the broker went away: its
 * connections are closed, and every new one is refused until `restore`. `bytesRead` counts what its
 * connections have received.
 */
async function severableKafka() {
  const env = await meshEnv();
  const closed = createServer();
  await new Promise<void>((resolve) => closed.listen(0, '127.0.0.1', resolve));
  const { port: refusing } = closed.address() as { port: number };
  await new Promise((resolve) => closed.close(resolve));
  const sockets = new Set<Socket>();
  let severed = false;
  let readByClosed = 0;
  const kafka = createKafka({
    brokers: env.MESH_KAFKA_BROKERS.split(','),
    clientId: 'smoke-severed',
    socketFactory: ({ host, port, onConnect }) => {
      const socket = severed
        ? connect({ host: '127.0.0.1', port: refusing })
        : connect({ host, port }, onConnect);
      sockets.add(socket);
      socket.once('close', () => {
        readByClosed += socket.bytesRead;
        sockets.delete(socket);
      });
      return socket;
    },
  });
  const sever = (): void => {
    severed = true;
    for (const socket of sockets) socket.destroy();
  };
  const restore = (): void => {
    severed = false;
  };
  const bytesRead = (): number =>
    [...sockets].reduce((sum, socket) => sum + socket.bytesRead, readByClosed);
  return { kafka, sever, restore, bytesRead };
}

/**
 * A fresh one-partition topic (deleted after the test, unless the test deletes it itself) and a
 * connected producer.
 */
async function topicWithProducer(
  t: Parameters<typeof onCleanup>[0],
  name: string,
  options: { deletedByTest?: boolean } = {},
) {
  const kafka = await smokeKafka();
  const admin = disposable(t, new MeshAdmin(kafka), (a) => a.disconnect());
  const topic = uniqueName(name);
  await admin.ensureTopics([{ topic, numPartitions: 1, replicationFactor: 1 }]);
  if (options.deletedByTest !== true) onCleanup(t, () => admin.deleteTopics([topic]));
  const producer = disposable(t, new MeshProducer(kafka), (p) => p.disconnect());
  await producer.connect();
  return { kafka, admin, topic, producer };
}

/** The values of the first `count` records of `topic`, read by a consumer group of its own. */
async function valuesOf(kafka: Kafka, topic: string, count: number): Promise<string[]> {
  const seen: string[] = [];
  const consumer = new GroupConsumer(kafka, { groupId: `smoke-${randomUUID()}` });
  await consumer.start([topic], {
    take: (_t, _p, records) => {
      for (const r of records) seen.push(r.value?.toString() ?? '');
      return records.length;
    },
    assigned: () => undefined,
  });
  try {
    await waitFor(() => seen.length >= count, { message: 'records not consumed' });
  } finally {
    await consumer.stop();
  }
  return seen;
}

/** A fresh one-partition topic holding `count` records m0, m1, … with keys 0, 1, …. */
async function topicWithRecords(t: Parameters<typeof onCleanup>[0], name: string, count: number) {
  const fixture = await topicWithProducer(t, name);
  await fixture.producer.send(
    Array.from({ length: count }, (_, i) => ({
      topic: fixture.topic,
      key: String(i),
      value: Buffer.from(`m${i}`),
      headers: {},
    })),
  );
  return fixture;
}

test('kafka: a consumer group resumes after its committed offset', async (t) => {
  const { kafka, admin, topic, producer } = await topicWithProducer(t, 'smoke');
  await producer.send(
    Array.from({ length: 10 }, (_, i) => ({
      topic,
      key: 'k',
      value: Buffer.from(`m${i}`),
      headers: {},
    })),
  );

  const groupId = `smoke-${randomUUID()}`;
  const readFrom = async (commitAt?: number): Promise<ConsumedRecord[]> => {
    const seen: ConsumedRecord[] = [];
    const consumer = new GroupConsumer(kafka, {
      groupId,
      sessionTimeoutMs: 10_000,
      heartbeatIntervalMs: 500,
    });
    await consumer.start([topic], {
      take: (_t, _p, records) => {
        seen.push(...records);
        return records.length;
      },
      assigned: () => undefined,
    });
    try {
      await waitFor(() => seen.length > 0 && seen.at(-1)?.offset === '9', {
        message: 'records not consumed',
      });
      if (commitAt !== undefined)
        await consumer.commit([{ topic, partition: 0, offset: String(commitAt) }]);
    } finally {
      await consumer.stop();
    }
    return seen;
  };
  const first = await readFrom(6);
  assert.equal(first[0]?.offset, '0', 'a new group starts at the earliest offset');
  assert.equal(first.length, 10);
  const second = await readFrom();
  assert.equal(second[0]?.offset, '6', 'the restarted member resumes at the committed offset');
  assert.deepEqual(
    second.map((r) => r.value?.toString()),
    ['m6', 'm7', 'm8', 'm9'],
  );
  const lag = await admin.lag(groupId, [topic]);
  assert.deepEqual(
    lag.map((l) => [l.committed, l.high, l.lag]),
    [[6, 10, 4]],
  );
});

test('kafka: the sends of one event-loop turn go out in one produce request, in order', async (t) => {
  const { kafka, admin, topic, producer } = await topicWithProducer(t, 'smoke-batch');
  const before = producer.requests;
  // Fifty handlers finishing in the same turn, each sending its own record.
  await Promise.all(
    Array.from({ length: 50 }, (_, i) =>
      producer.send([{ topic, key: 'k', value: Buffer.from(`m${i}`), headers: {} }]),
    ),
  );
  assert.equal(producer.requests - before, 1, 'one request, not the first alone and then the rest');
  const [end] = await admin.endOffsets(topic);
  assert.equal(end?.high, 50);

  assert.deepEqual(
    await valuesOf(kafka, topic, 50),
    Array.from({ length: 50 }, (_, i) => `m${i}`),
  );
});

test('kafka: a resumed partition is fetched at once, not after the fetch wait', async (t) => {
  const { kafka, topic, producer } = await topicWithProducer(t, 'smoke-resume');
  await producer.send(
    ['a', 'b', 'c'].map((m) => ({ topic, key: m, value: Buffer.from(m), headers: {} })),
  );
  // A fetch wait far longer than the test may take: without the kafkajs patch (5: `resume` ends the
  // wait of a fetcher whose partitions are all paused) the rest would come about 20 s late.
  const consumer = new GroupConsumer(kafka, {
    groupId: `smoke-${randomUUID()}`,
    maxWaitTimeMs: 20_000,
  });
  const seen: string[] = [];
  let resumedAt = 0;
  let nextTakeAfterMs: number | undefined;
  await consumer.start([topic], {
    take: (_t, partition, records) => {
      if (seen.length === 0) {
        // Take one record and pause, as the runtime does when a partition is full.
        seen.push(records[0]?.value?.toString() ?? '');
        consumer.pause([{ topic, partition }]);
        return 1;
      }
      nextTakeAfterMs ??= Date.now() - resumedAt;
      for (const r of records) seen.push(r.value?.toString() ?? '');
      return records.length;
    },
    assigned: () => undefined,
  });
  try {
    await waitFor(() => seen.length === 1, { message: 'first record not consumed' });
    // Long enough for the fetcher to find every partition paused and start its wait.
    await new Promise((resolve) => setTimeout(resolve, 1_000));
    resumedAt = Date.now();
    consumer.resume([{ topic, partition: 0 }]);
    await waitFor(() => seen.length === 3, { timeout: 30_000, message: 'rest not consumed' });
  } finally {
    // A record for the fetch now waiting at the broker, so that it returns and the member can stop.
    await producer.send([{ topic, key: 'd', value: Buffer.from('d'), headers: {} }]);
    await consumer.stop();
  }
  assert.deepEqual(seen.slice(0, 3), ['a', 'b', 'c']);
  assert.ok(
    nextTakeAfterMs !== undefined && nextTakeAfterMs < 10_000,
    `the resumed partition was fetched ${nextTakeAfterMs} ms after the resume (fetch wait 20,000 ms)`,
  );
});

test('kafka: a send to a topic that does not exist is refused and holds up no other send', async (t) => {
  const { admin, topic, producer } = await topicWithProducer(t, 'smoke-missing');
  const missing = uniqueName('smoke-absent');
  const record = (to: string, i: number) => ({
    topic: to,
    key: 'k',
    value: Buffer.from(`m${i}`),
    headers: {},
  });
  // In one turn: sends to the real topic around one that also names a topic nobody created.
  const sends = [
    producer.send([record(topic, 0)]),
    producer.send([record(topic, 1), record(missing, 1)]),
    producer.send([record(topic, 2)]),
  ];
  const [first, refused, third] = await Promise.allSettled(sends);
  assert.equal(first?.status, 'fulfilled');
  assert.equal(third?.status, 'fulfilled');
  assert.equal(refused?.status, 'rejected');
  const error = refused?.status === 'rejected' ? (refused.reason as unknown) : undefined;
  assert.ok(isMeshError(error), String(error));
  assert.equal(error.code, 'not_found');
  assert.equal(error.retryable, false);
  assert.match(error.message, new RegExp(`topic ${missing} does not exist`));
  const [end] = await admin.endOffsets(topic);
  assert.equal(end?.high, 2, 'the two other sends were written, nothing of the refused one');
  assert.deepEqual(await producer.missingTopics([topic, missing]), [missing]);
  // Created later, the topic is found and written to.
  await admin.ensureTopics([{ topic: missing, numPartitions: 1, replicationFactor: 1 }]);
  onCleanup(t, () => admin.deleteTopics([missing]));
  await producer.send([record(missing, 3)]);
  const [written] = await admin.endOffsets(missing);
  assert.equal(written?.high, 1);
});

test('kafka: a topic deleted after the producer sent to it fails that send and holds up no other', async (t) => {
  const { admin, topic, producer } = await topicWithProducer(t, 'smoke-deleted', {
    deletedByTest: true,
  });
  const other = uniqueName('smoke-deleted-other');
  await admin.ensureTopics([{ topic: other, numPartitions: 1, replicationFactor: 1 }]);
  onCleanup(t, () => admin.deleteTopics([other]));
  const record = (to: string, value: string) => ({
    topic: to,
    key: 'k',
    value: Buffer.from(value),
    headers: {},
  });
  await producer.send([record(topic, 'before'), record(other, 'before')]);
  await admin.deleteTopics([topic]);
  await waitFor(async () => !(await admin.listTopics()).includes(topic), {
    message: 'topic not deleted',
  });

  // The producer still knows the topic: the send goes to Kafka, which no longer has it. It fails
  // (retryable, as a broker outage would) instead of being retried for ever.
  const started = Date.now();
  const first = await Promise.allSettled([
    producer.send([record(topic, 'lost')]),
    producer.send([record(other, 'first')]),
  ]);
  const waited = Date.now() - started;
  assert.equal(first[0].status, 'rejected');
  assert.ok(waited < 30_000, `the send failed after ${waited} ms`);
  // What a consumer then does: try again. The deleted topic is looked up and refused for good;
  // the other send, which shared its request, is written.
  const again = await Promise.allSettled([
    producer.send([record(topic, 'lost')]),
    first[1].status === 'fulfilled' ? Promise.resolve() : producer.send([record(other, 'first')]),
  ]);
  assert.equal(again[0].status, 'rejected');
  const reason = again[0].reason as unknown;
  assert.ok(
    isMeshError(reason) && reason.code === 'not_found' && !reason.retryable,
    String(reason),
  );
  assert.equal(again[1].status, 'fulfilled');
  await producer.send([record(other, 'after')]);
  const [end] = await admin.endOffsets(other);
  assert.equal(end?.high, 3, 'before, first and after are on the other topic, each once');
});

test("kafka: a listing of topics up to maxAgeMs old is shared; this admin's own changes show at once", async (t) => {
  const kafka = await smokeKafka();
  const admin = disposable(t, new MeshAdmin(kafka), (a) => a.disconnect());
  const other = disposable(t, new MeshAdmin(kafka), (a) => a.disconnect());
  const [byOther, own] = [uniqueName('smoke-list-other'), uniqueName('smoke-list-own')];
  onCleanup(t, () => other.deleteTopics([byOther]));
  const hour = { maxAgeMs: 3_600_000 };
  const before = await admin.listTopics(hour);

  await other.ensureTopics([{ topic: byOther, numPartitions: 1, replicationFactor: 1 }]);
  assert.deepEqual(await admin.listTopics(hour), before, 'the last listing is shared');
  assert.ok((await admin.listTopics()).includes(byOther), 'without maxAgeMs the cluster is read');

  await admin.ensureTopics([{ topic: own, numPartitions: 1, replicationFactor: 1 }]);
  assert.ok((await admin.listTopics(hour)).includes(own), 'a topic it created shows at once');
  await admin.deleteTopics([own]);
  await waitFor(async () => !(await admin.listTopics(hour)).includes(own), {
    message: 'a topic it deleted is still listed',
  });
});

test('kafka: a readiness probe reads as much however many topics the cluster has', async (t) => {
  const { kafka, bytesRead } = await severableKafka();
  const admin = disposable(t, new MeshAdmin(kafka), (a) => a.disconnect());
  const other = disposable(t, new MeshAdmin(await smokeKafka()), (a) => a.disconnect());
  const groups = [uniqueName('smoke-probe-group'), uniqueName('smoke-probe-group')];
  /** Bytes the client received while `ask` ran. */
  const received = async (ask: () => Promise<unknown>): Promise<number> => {
    const before = bytesRead();
    await ask();
    return bytesRead() - before;
  };
  // The first of each connects and learns the cluster; what follows is the question alone.
  await admin.probe(groups);
  await admin.listTopics();
  const probe = await received(() => admin.probe(groups));
  const listing = await received(() => admin.listTopics());

  const more = Array.from({ length: 40 }, () => uniqueName('smoke-probe-topic'));
  onCleanup(t, () => other.deleteTopics(more));
  await other.ensureTopics(
    more.map((topic) => ({ topic, numPartitions: 1, replicationFactor: 1 })),
  );
  const probeAfter = await received(() => admin.probe(groups));
  const listingAfter = await received(() => admin.listTopics());
  assert.ok(
    listingAfter - listing >= more.length * (more[0]?.length ?? 0),
    `a listing grows with the cluster: ${listing} then ${listingAfter} bytes`,
  );
  assert.ok(
    probe > 0 && Math.abs(probeAfter - probe) < 64,
    `a probe does not: ${probe} then ${probeAfter} bytes`,
  );
});

test('kafka: an admin used again after its disconnect connects again', async (t) => {
  // What every test's clean-up does: close the runtime (its admin with it), then delete the topics.
  const kafka = await smokeKafka();
  const admin = disposable(t, new MeshAdmin(kafka), (a) => a.disconnect());
  const topic = uniqueName('smoke-reconnect');
  await admin.ensureTopics([{ topic, numPartitions: 1, replicationFactor: 1 }]);
  await admin.disconnect();
  assert.ok((await admin.listTopics()).includes(topic));
  await admin.disconnect();
  await admin.deleteTopics([topic]);
  await admin.disconnect();
  await waitFor(async () => !(await admin.listTopics()).includes(topic), {
    message: 'the topic was not deleted',
  });
});

test('kafka: a topic another client deletes stops neither offset reads nor sends to other topics', async (t) => {
  // kafkajs #1622, fixed by the kafkajs patch: the deleted topic stayed in the topics a client
  // tracks, and each metadata refresh failed on it from then on, so every send and offset read of
  // that client failed. The producer refreshes after `metadataMaxAge` (5 minutes by default).
  const kafka = await smokeKafka();
  const reader = disposable(t, new MeshAdmin(kafka), (a) => a.disconnect());
  const operator = disposable(t, new MeshAdmin(kafka), (a) => a.disconnect());
  const producer = disposable(
    t,
    kafka.producer({ idempotent: true, allowAutoTopicCreation: false, metadataMaxAge: 500 }),
    (p) => p.disconnect(),
  );
  await producer.connect();
  const gone = uniqueName('smoke-gone');
  const kept = uniqueName('smoke-kept');
  await operator.ensureTopics(
    [gone, kept].map((topic) => ({ topic, numPartitions: 1, replicationFactor: 1 })),
  );
  onCleanup(t, () => operator.deleteTopics([kept]));
  const send = (topic: string) => producer.send({ topic, acks: -1, messages: [{ value: topic }] });
  await send(gone);
  await send(kept);
  assert.equal((await reader.endOffsets(gone))[0]?.high, 1);
  assert.equal((await reader.endOffsets(kept))[0]?.high, 1);

  await operator.deleteTopics([gone]);
  await waitFor(async () => !(await operator.listTopics()).includes(gone), {
    message: 'topic not deleted',
  });
  await sleep(1_000); // past the producer's metadataMaxAge: its next send refreshes first

  await send(kept);
  assert.deepEqual(
    (await reader.endOffsets(kept)).map((p) => p.high),
    [2],
    'the reader that had read the deleted topic still reads the others',
  );
  await assert.rejects(reader.endOffsets(gone), /does not host this topic-partition/);
  await send(kept);
  assert.deepEqual(
    (await reader.endOffsets(kept)).map((p) => p.high),
    [3],
  );
});

test('kafka: a consumer crash that kafkajs does not restart is restarted by the member', async (t) => {
  const { kafka, topic } = await topicWithRecords(t, 'smoke-crash', 5);
  const consumer = disposable(
    t,
    new GroupConsumer(kafka, {
      groupId: `smoke-crash-${randomUUID()}`,
      sessionTimeoutMs: 10_000,
      heartbeatIntervalMs: 500,
    }),
    (c) => c.stop(),
  );
  // A non-retriable failure in the fetch loop, as kafkajs raises "Failed to find group coordinator"
  // while a broker restarts: kafkajs then stops the consumer for good, whatever restartOnFailure says.
  const nonRetriable = Object.assign(new Error('coordinator lookup failed'), { retriable: false });
  let failures = 0;
  const crashes: number[] = [];
  const seen: string[] = [];
  let flowControlError: unknown;
  await consumer.start([topic], {
    take: (_topic, _partition, records) => {
      if (failures === 0) {
        failures += 1;
        throw nonRetriable;
      }
      seen.push(...records.map((r) => String(r.value)));
      return records.length;
    },
    assigned: () => undefined,
    crashed: (_error, restartInMs) => {
      crashes.push(restartInMs);
      // The runtime may pause or resume a partition while the consumer is down (handlers finish).
      try {
        consumer.pause([{ topic, partition: 0 }]);
        consumer.resume([{ topic, partition: 0 }]);
      } catch (error) {
        flowControlError = error;
      }
    },
  });
  await waitFor(() => seen.length >= 5, {
    timeout: 30_000,
    message: 'the records were not delivered after the crash',
  });
  assert.deepEqual(seen.slice(0, 5), ['m0', 'm1', 'm2', 'm3', 'm4']);
  assert.ok(crashes.length >= 1, 'the crash was reported');
  assert.equal(flowControlError, undefined, 'pause and resume while it was down did not throw');
  assert.equal(consumer.restarts, 1, 'the member restarted the consumer once');
  await waitFor(() => consumer.healthy, { message: 'the restarted consumer did not rejoin' });
});

test('kafka: a member out of its group longer than stuckAfterMs gets a new kafkajs consumer', async (t) => {
  const { kafka, topic } = await topicWithRecords(t, 'smoke-stuck', 5);
  // The first kafkajs consumer ignores the member's restart after its crash, as a kafkajs consumer
  // stuck after a broker outage does (#1630: it never reconnects, and says nothing more). The
  // consumers made after it are kafkajs's own.
  type Consumer = ReturnType<Kafka['consumer']>;
  const made: Consumer[] = [];
  const stuckKafka = new Proxy(kafka, {
    get(target, property, receiver) {
      if (property !== 'consumer') return Reflect.get(target, property, receiver) as unknown;
      return (config: Parameters<Kafka['consumer']>[0]): Consumer => {
        const consumer = target.consumer(config);
        made.push(consumer);
        if (made.length === 1) {
          const run = consumer.run.bind(consumer);
          let runs = 0;
          consumer.run = (options) => (++runs === 1 ? run(options) : Promise.resolve());
        }
        return consumer;
      };
    },
  });
  const consumer = disposable(
    t,
    new GroupConsumer(stuckKafka, {
      groupId: `smoke-stuck-${randomUUID()}`,
      sessionTimeoutMs: 10_000,
      heartbeatIntervalMs: 500,
      stuckAfterMs: 3_000,
    }),
    (c) => c.stop(),
  );
  const reasons: string[] = [];
  const seen: string[] = [];
  let failures = 0;
  await consumer.start([topic], {
    take: (_topic, _partition, records) => {
      if (failures === 0) {
        failures += 1;
        throw Object.assign(new Error('coordinator lookup failed'), { retriable: false });
      }
      seen.push(...records.map((r) => String(r.value)));
      return records.length;
    },
    assigned: () => undefined,
    crashed: (error) => reasons.push(error.message),
  });
  await waitFor(() => seen.length >= 5, {
    timeout: 30_000,
    message: 'the records were not delivered after the member was stuck',
  });
  assert.deepEqual(seen.slice(0, 5), ['m0', 'm1', 'm2', 'm3', 'm4']);
  assert.equal(consumer.restarts >= 1, true, 'the member first restarted the stuck consumer');
  assert.equal(consumer.replacements, 1, 'then replaced it once');
  assert.equal(made.length, 2);
  assert.ok(
    reasons.some((reason) =>
      /out of group .* for \d+ s: a new kafkajs consumer takes over/.test(reason),
    ),
    `the replacement was reported: ${reasons.join(' | ')}`,
  );
  await waitFor(() => consumer.healthy, { message: 'the new consumer did not join' });
});

test('kafka: a member stopped while Kafka cannot be reached goes within its bound, not after kafkajs gives up', async (t) => {
  const { kafka, topic } = await topicWithRecords(t, 'smoke-severed', 3);
  const member = (groupKafka: Kafka) =>
    new GroupConsumer(groupKafka, {
      groupId: `smoke-severed-${randomUUID()}`,
      sessionTimeoutMs: 10_000,
      heartbeatIntervalMs: 500,
    });
  const started = async (consumer: GroupConsumer) => {
    const seen: string[] = [];
    await consumer.start([topic], {
      take: (_topic, _partition, records) => {
        seen.push(...records.map((r) => String(r.value)));
        return records.length;
      },
      assigned: () => undefined,
    });
    await waitFor(() => seen.length >= 3 && consumer.healthy, {
      timeout: 30_000,
      message: 'the member did not join and read the records',
    });
  };

  // Kafka there: the member leaves its group, and says so.
  const reachable = member(kafka);
  await started(reachable);
  assert.equal(await reachable.stop(), true, 'a member with Kafka there leaves its group');

  const { kafka: severable, sever, restore } = await severableKafka();
  // What the stop abandoned (kafkajs still retrying to leave) can then finish, within about a
  // minute, instead of retrying against a refusing port for the rest of the run.
  onCleanup(t, restore);
  const cutOff = member(severable);
  await started(cutOff);
  sever();
  // kafkajs finds its connections closed at its next fetch (each waits up to 500 ms) and starts
  // reconnecting, which is refused from now on.
  await sleep(1_000);
  const stopping = performance.now();
  const left = await cutOff.stop(2_000);
  const took = performance.now() - stopping;
  assert.equal(left, false, 'Kafka could not take the leave');
  assert.ok(
    took >= 1_900 && took < 3_000,
    `the stop took ${Math.round(took)} ms, its bound is 2000`,
  );
});

test('kafka: a send on a connection that stopped passing anything, without closing, is made again on a new one, once', async (t) => {
  const env = await meshEnv();
  const { admin, topic } = await topicWithProducer(t, 'smoke-dead-connection');
  // Every connection of this client goes through the relay (one broker: its address is the relay's).
  const relay = await blackholingRelay(t, `kafka://${env.MESH_KAFKA_BROKERS.split(',')[0] ?? ''}`);
  const relayPort = Number(new URL(relay.url).port);
  const requestTimeoutMs = 2_000;
  const producer = disposable(
    t,
    new MeshProducer(
      createKafka({
        brokers: env.MESH_KAFKA_BROKERS.split(','),
        clientId: 'smoke-dead-connection',
        requestTimeoutMs,
        socketFactory: ({ onConnect }) =>
          connect({ host: '127.0.0.1', port: relayPort }, onConnect),
      }),
    ),
    (p) => p.disconnect(),
  );
  await producer.connect();
  const send = async (value: string): Promise<number> => {
    const started = performance.now();
    const sent = await resultWithin(
      producer.send([{ topic, key: 'k', value: Buffer.from(value), headers: {} }]).then(() => true),
      requestTimeoutMs + 10_000,
      false,
    );
    assert.ok(sent, `the send of ${value} waits on the dead connection`);
    return performance.now() - started;
  };
  await send('before');

  // Nothing reaches the broker: the request times out, the connection closes, the retry connects.
  relay.blackhole('both');
  const lostRequest = await send('lost-request');
  // The broker appends the records, its answer is lost: the retry on a new connection is the same
  // idempotent batch, which the broker does not append again.
  relay.blackhole('replies');
  const lostReply = await send('lost-reply');

  for (const took of [lostRequest, lostReply])
    assert.ok(
      took >= requestTimeoutMs - 100 && took < requestTimeoutMs + 5_000,
      `sent after ${Math.round(took)} ms, on a connection made after the ${requestTimeoutMs} ms request timeout`,
    );
  const [partition] = await admin.endOffsets(topic);
  assert.equal(partition?.high, 3, 'three records, none written twice');
});

test('kafka: a send its signal gives up answers at once: withdrawn while queued, "may still be written" once sent', async (t) => {
  const env = await meshEnv();
  const { kafka, admin, topic } = await topicWithProducer(t, 'smoke-given-up');
  const relay = await blackholingRelay(t, `kafka://${env.MESH_KAFKA_BROKERS.split(',')[0] ?? ''}`);
  const relayPort = Number(new URL(relay.url).port);
  const producer = disposable(
    t,
    new MeshProducer(
      createKafka({
        brokers: env.MESH_KAFKA_BROKERS.split(','),
        clientId: 'smoke-given-up',
        requestTimeoutMs: 2_000,
        socketFactory: ({ onConnect }) =>
          connect({ host: '127.0.0.1', port: relayPort }, onConnect),
      }),
    ),
    (p) => p.disconnect(),
  );
  await producer.connect();
  const records = (value: string) => [{ topic, key: 'k', value: Buffer.from(value), headers: {} }];
  await producer.send(records('before'));

  // The broker stops answering: the next send's request waits on the dead connection, and the one
  // after it waits in the queue (one request in flight per producer).
  relay.blackhole('both');
  const failure = (written: false | 'unknown', text: RegExp) => (error: unknown) => {
    assert.ok(isMeshError(error), String(error));
    assert.equal(error.code, 'kafka_unavailable');
    assert.equal(error.retryable, true);
    assert.equal(error.details?.written, written);
    assert.match(error.message, text);
    return true;
  };
  const started = performance.now();
  const inRequest = assert.rejects(
    producer.send(records('in-request'), { signal: AbortSignal.timeout(800) }),
    failure('unknown', /its deadline passed.*may still be written/),
  );
  const requestsBefore = producer.requests;
  await waitFor(() => producer.requests > requestsBefore, {
    interval: 5,
    message: 'the first send never went into a request',
  });
  const queued = assert.rejects(
    producer.send(records('queued'), { signal: AbortSignal.timeout(800) }),
    failure(false, /its deadline passed.*withdrawn, nothing was written/),
  );
  await Promise.all([inRequest, queued]);
  const took = performance.now() - started;
  assert.ok(took < 1_800, `answered after ${Math.round(took)} ms, at the deadline (800 ms)`);

  // The request in flight is made again on a new connection after its 2 s timeout and written; the
  // withdrawn send never is. A send after it goes out once the broker answers again.
  await producer.send(records('after'));
  assert.deepEqual(await valuesOf(kafka, topic, 3), ['before', 'in-request', 'after']);
  const [end] = await admin.endOffsets(topic);
  assert.equal(end?.high, 3, 'nothing else written');
});

test('registry: JSON Schema in the Confluent wire format, and BACKWARD refuses an incompatible change', async () => {
  const env = await meshEnv();
  const subject = `smoke.${randomUUID()}`;
  const v1 = {
    $schema: 'http://json-schema.org/draft-07/schema#',
    title: subject,
    type: 'object',
    properties: { name: { type: 'string' } },
    required: ['name'],
    additionalProperties: false,
  };
  const registry = new ContractRegistry(
    { url: env.MESH_SCHEMA_REGISTRY_URL },
    new Map([[subject, { type: subject, schema: v1 }]]),
  );
  const id = await registry.register(subject);
  assert.equal(
    await registry.register(subject),
    id,
    'registering the same schema again is a no-op',
  );

  const { value, schemaId } = await registry.encode(subject, { name: 'ada' });
  assert.equal(schemaId, id);
  assert.equal(value[0], 0, 'magic byte');
  assert.equal(value.readUInt32BE(1), id, 'big-endian schema id');
  assert.deepEqual(JSON.parse(value.subarray(5).toString()), { name: 'ada' });
  assert.deepEqual(await registry.decode(subject, value), { name: 'ada' });

  await assert.rejects(
    registry.encode(subject, { name: 42 }),
    (error) => isMeshError(error) && error.code === 'schema_violation',
  );

  // Changing the type of a required field cannot read data written with v1.
  const v2 = { ...v1, properties: { name: { type: 'integer' } } };
  const [report] = await new ContractRegistry(
    { url: env.MESH_SCHEMA_REGISTRY_URL },
    new Map([[subject, { type: subject, schema: v2 }]]),
  ).check();
  assert.equal(report?.compatible, false, 'the registry reports the change as incompatible');
  await assert.rejects(registry.register(subject, v2), (error) => {
    assert.ok(isMeshError(error));
    assert.equal(error.code, 'schema_incompatible');
    assert.equal(error.retryable, false);
    return true;
  });
  // A compatible change (a new optional field in a closed content model) is a new version.
  const v3 = { ...v1, properties: { ...v1.properties, nickname: { type: 'string' } } };
  assert.notEqual(await registry.register(subject, v3), id);
});

test('redis: SET NX PX claims once and expires', async (t) => {
  const env = await meshEnv();
  const redis = disposable(
    t,
    createRedis({ url: env.MESH_REDIS_URL }, { connectionName: 'smoke' }),
    (r) => r.disconnect(),
  );
  await waitForRedis(redis);
  const key = `smoke:${randomUUID()}`;
  assert.equal(await redis.set(key, 'a', 'PX', 300, 'NX'), 'OK');
  assert.equal(await redis.set(key, 'b', 'PX', 300, 'NX'), null, 'a second claim is refused');
  assert.equal(await redis.get(key), 'a');
  await waitFor(async () => (await redis.exists(key)) === 0, {
    timeout: 5_000,
    message: 'key did not expire',
  });
});

test('a missing component fails with a message naming it, not a skip', async () => {
  const env = await meshEnv();
  const closedPort = '127.0.0.1:1';
  await assert.rejects(
    verifyEnvironment({ ...env, MESH_REDIS_URL: `redis://:secret@${closedPort}` }, 2_000),
    (error: Error) => {
      assert.match(error.message, /^Redis is not reachable at redis:\/\/\*\*\*@127\.0\.0\.1:1/);
      assert.doesNotMatch(error.message, /secret/);
      assert.match(
        error.message,
        /MESH_KAFKA_BROKERS, MESH_SCHEMA_REGISTRY_URL and MESH_REDIS_URL/,
      );
      return true;
    },
  );
  await assert.rejects(
    verifyEnvironment({ ...env, MESH_SCHEMA_REGISTRY_URL: `http://${closedPort}` }, 2_000),
    /The schema registry is not reachable at http:\/\/127\.0\.0\.1:1/,
  );
  await assert.rejects(
    verifyEnvironment({ ...env, MESH_KAFKA_BROKERS: closedPort }, 3_000),
    /Kafka is not reachable at 127\.0\.0\.1:1/,
  );
});
