/**
 * The consumer runtime against the real Kafka, registry and Redis.
 */
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { newEvent, toKafka, type MeshEvent } from '@mesh/envelope';
import { retryable, terminal } from '@mesh/errors';
import { blackholingRelay, onCleanup, privateRedis, waitFor } from '@mesh/testkit';
import type { HandlerContext } from '../src/index.ts';
import { assigned, committedToEnd, completion, sampleData, startRuntime } from './helpers.ts';

test('every event type round-trips through Kafka and the registry', async (t) => {
  const { runtime } = await startRuntime(t);
  const received = new Map<string, MeshEvent>();
  const handlers = Object.fromEntries(
    Object.keys(sampleData).map((type) => [
      type,
      async ({ event }: HandlerContext) => {
        received.set(event.type, event);
      },
    ]),
  );
  await runtime.consume({
    groupId: 'roundtrip',
    topics: [runtime.topics.control],
    handlers,
    loopGuards: false,
  });
  const sent = Object.entries(sampleData).map(([type, data]) =>
    newEvent({ type, source: '/test', data, correlationid: `task-${type}` }),
  );
  await runtime.publish(sent.map((event) => ({ topic: runtime.topics.control, event })));
  await waitFor(() => received.size === sent.length, {
    message: () => `received ${received.size} of ${sent.length}`,
  });
  for (const event of sent) {
    const got = received.get(event.type);
    assert.ok(got, event.type);
    assert.deepEqual(got.data, event.data, `${event.type} data`);
    for (const attr of [
      'id',
      'source',
      'type',
      'time',
      'subject',
      'correlationid',
      'hopcount',
      'traceparent',
      'partitionkey',
    ] as const) {
      assert.equal(got[attr], event[attr], `${event.type} ${attr}`);
    }
    assert.match(got.dataschema ?? '', /\/schemas\/ids\/\d+$/);
  }
});

test('intake accepts a structured-mode CloudEvent and a plain-JSON binary event', async (t) => {
  const { runtime } = await startRuntime(t);
  const received: MeshEvent[] = [];
  await runtime.consume({
    groupId: 'intake',
    topics: [runtime.topics.requests],
    intakeTopics: [runtime.topics.requests],
    handlers: { 'io.mesh.task.requested': async ({ event }) => void received.push(event) },
  });
  const structured = {
    specversion: '1.0',
    id: 'req-structured',
    source: 'kcat',
    type: 'io.mesh.task.requested',
    data: { input: { q: 1 } },
  };
  const plain = newEvent({
    type: 'io.mesh.task.requested',
    source: 'script',
    id: 'req-plain',
    data: { input: { q: 2 } },
  });
  const plainMessage = toKafka(plain, Buffer.from(JSON.stringify(plain.data)));
  await runtime.producer.send([
    {
      topic: runtime.topics.requests,
      key: null,
      value: Buffer.from(JSON.stringify(structured)),
      headers: { 'content-type': 'application/cloudevents+json' },
    },
    {
      topic: runtime.topics.requests,
      key: plainMessage.key,
      value: plainMessage.value,
      headers: plainMessage.headers,
    },
  ]);
  await waitFor(() => received.length === 2);
  const byId = new Map(received.map((e) => [e.id, e]));
  assert.deepEqual(byId.get('req-structured')?.data, { input: { q: 1 } });
  assert.equal(byId.get('req-structured')?.source, 'kcat');
  assert.deepEqual(byId.get('req-plain')?.data, { input: { q: 2 } });
});

test('same key runs in order, different keys overlap', async (t) => {
  const { runtime } = await startRuntime(t, { MESH_PARTITIONS: '1' });
  const order = new Map<string, number[]>();
  const running = new Set<string>();
  let overlap = 0;
  let sameKeyOverlap = 0;
  await runtime.consume({
    groupId: 'order',
    topics: [runtime.topics.work('echo')],
    handlers: {
      'io.mesh.subtask.assigned': async ({ event }) => {
        const key = event.correlationid ?? '';
        if (running.has(key)) sameKeyOverlap += 1;
        running.add(key);
        overlap = Math.max(overlap, running.size);
        await sleep(5 + Math.random() * 20);
        const seq = (event.data as { input: { seq: number } }).input.seq;
        order.set(key, [...(order.get(key) ?? []), seq]);
        running.delete(key);
      },
    },
  });
  const keys = ['a', 'b', 'c', 'd', 'e', 'f'];
  const events = [];
  for (let seq = 0; seq < 15; seq += 1)
    for (const key of keys) events.push(assigned('echo', { seq }, key));
  await runtime.publish(events.map((event) => ({ topic: runtime.topics.work('echo'), event })));
  await waitFor(
    () => [...order.values()].reduce((n, list) => n + list.length, 0) === events.length,
    { timeout: 30_000 },
  );
  for (const key of keys)
    assert.deepEqual(
      order.get(key),
      Array.from({ length: 15 }, (_, i) => i),
      `order of key ${key}`,
    );
  assert.equal(sameKeyOverlap, 0, 'two events of one key never ran at once');
  assert.ok(overlap > 1, `different keys of one partition ran concurrently (max ${overlap})`);
});

test('a work topic deleted and created again is consumed from its new start', async (t) => {
  const { runtime } = await startRuntime(t, { MESH_PARTITIONS: '1' });
  const topic = runtime.topics.work('echo');
  const handled: number[] = [];
  await runtime.consume({
    groupId: 'recreated',
    topics: [topic],
    handlers: {
      'io.mesh.subtask.assigned': async ({ event }) => {
        handled.push((event.data as { input: { seq: number } }).input.seq);
      },
    },
  });
  const publish = (seqs: number[]) =>
    runtime.publish(seqs.map((seq) => ({ topic, event: assigned('echo', { seq }, `k${seq}`) })));
  await publish([0, 1, 2, 3, 4]);
  await committedToEnd(runtime, runtime.groupId('recreated'), topic);

  // An operator purges the topic by deleting it and creating it again: its offsets start at 0.
  await runtime.admin.deleteTopics([topic]);
  await waitFor(async () => !(await runtime.admin.listTopics()).includes(topic), {
    message: 'the topic was not deleted',
  });
  await runtime.admin.ensureTopics([{ topic, numPartitions: 1, replicationFactor: 1 }]);
  await publish([5, 6]);
  await waitFor(() => handled.includes(5) && handled.includes(6), {
    timeout: 60_000,
    message: () => `the events of the new topic were not handled (handled ${handled.join(',')})`,
  });
  assert.deepEqual(handled.slice().sort(), [0, 1, 2, 3, 4, 5, 6]);
  await committedToEnd(runtime, runtime.groupId('recreated'), topic);
});

test('handler results are produced and a redelivered event is not run again', async (t) => {
  const { runtime, probe } = await startRuntime(t);
  let runs = 0;
  const handlers = {
    'io.mesh.subtask.assigned': async (ctx: HandlerContext) => {
      runs += 1;
      return completion(runtime, ctx, { ok: true });
    },
  };
  await runtime.consume({ groupId: 'idem', topics: [runtime.topics.work('echo')], handlers });
  const event = assigned('echo', { n: 1 }, 'task-idem');
  await runtime.publish([{ topic: runtime.topics.work('echo'), event }]);
  await waitFor(() => probe.on(runtime.topics.results).length === 1);
  // The same event again (a producer retry, a replayed offset): completed once, skipped after.
  await runtime.publish([{ topic: runtime.topics.work('echo'), event }]);
  await waitFor(async () => (await runtime.metrics.idempotentSkips.get()).values[0]?.value === 1, {
    message: 'no idempotent skip',
  });
  assert.equal(runs, 1);
  assert.equal(probe.on(runtime.topics.results).length, 1);
  const result = probe.on(runtime.topics.results)[0];
  assert.ok(result);
  assert.equal(probe.header(result, 'ce_causationid'), event.id);
  assert.equal(probe.header(result, 'ce_correlationid'), 'task-idem');
  assert.equal(probe.header(result, 'ce_hopcount'), '1');
  assert.equal(probe.header(result, 'ce_agentpath'), 'echo');
  assert.equal(result.key?.toString(), 'task-idem');
});

/** Resolves with the reason `signal` aborts with, or undefined if it has not within `ms`. */
function abortedWithin(signal: AbortSignal, ms: number): Promise<unknown> {
  if (signal.aborted) return Promise.resolve(signal.reason);
  return new Promise((resolve) => {
    const timer = setTimeout(() => resolve(undefined), ms);
    signal.addEventListener('abort', () => {
      clearTimeout(timer);
      resolve(signal.reason);
    });
  });
}

test('a handler whose lease another member takes over is told through its signal; the event ends once, by whoever holds it', async (t) => {
  const { runtime, probe } = await startRuntime(t, { MESH_LEASE_TTL: '1s' });
  const groupId = runtime.groupId('lease');
  const runs = new Map<string, number>();
  const reasons: string[] = [];
  const handlers = {
    'io.mesh.subtask.assigned': async (ctx: HandlerContext) => {
      const n = (runs.get(ctx.event.id) ?? 0) + 1;
      runs.set(ctx.event.id, n);
      if (n === 1) {
        // Another member takes the lease over (as after ours lapsed): a renewal finds it gone.
        const key = runtime.idempotency.key(groupId, ctx.event.id);
        await runtime.redis.set(key, 'lease:another-member', 'PX', 1_500);
        const reason = await abortedWithin(ctx.signal, 5_000);
        reasons.push(reason instanceof Error ? reason.message : String(reason));
        // The other member completes the second event; the first one it never finishes.
        if ((ctx.event.data as { input: { n: number } }).input.n === 2)
          await runtime.redis.set(key, 'done:ok', 'PX', 60_000);
        ctx.signal.throwIfAborted();
      }
      return completion(runtime, ctx, { ok: true, run: n });
    },
  };
  await runtime.consume({ groupId: 'lease', topics: [runtime.topics.work('echo')], handlers });
  const abandoned = assigned('echo', { n: 1 }, 'task-lease-lapses');
  const completedElsewhere = assigned('echo', { n: 2 }, 'task-lease-done');
  await runtime.publish([
    { topic: runtime.topics.work('echo'), event: abandoned },
    { topic: runtime.topics.work('echo'), event: completedElsewhere },
  ]);
  await committedToEnd(runtime, groupId, runtime.topics.work('echo'));
  assert.equal(reasons.length, 2, 'each handler was told');
  for (const reason of reasons)
    assert.match(reason, /^the lease of event \S+ was lost: lease expired and was taken over$/);
  // The first: the other member's lease lapsed without an outcome, so this member ran it again.
  assert.equal(runs.get(abandoned.id), 2);
  // The second: the other member completed it, so nothing ran again and no result is ours.
  assert.equal(runs.get(completedElsewhere.id), 1);
  const results = probe.on(runtime.topics.results);
  assert.deepEqual(
    results.map((r) => probe.header(r, 'ce_causationid')),
    [abandoned.id],
    'one result, for the event no one else finished; the handlers that gave up wrote none',
  );
  const retried = runtime.config.retryTiers.flatMap((tier) =>
    probe.on(runtime.topics.retry(tier.name)),
  );
  assert.deepEqual([retried.length, probe.on(runtime.topics.dlq).length], [0, 0]);
});

/**
 * A runtime whose Redis (a private one) is reached through a relay that a handler cuts while it runs
 * (`cut(forMs)`): the event's outcome is then written to Kafka while Redis cannot be reached, as
 * when Redis restarts or fails over at that moment.
 */
async function runtimeLosingRedis(t: TestContext, vars: Record<string, string> = {}) {
  const redis = await privateRedis(t);
  const relay = await blackholingRelay(t, redis.url);
  const harness = await startRuntime(t, { MESH_REDIS_URL: relay.url, ...vars });
  let restored: number | undefined;
  return {
    ...harness,
    cut: (forMs: number): void => {
      const restore = relay.sever();
      setTimeout(() => {
        restore();
        restored = performance.now();
      }, forMs);
    },
    restoredAgo: (): number => (restored === undefined ? NaN : performance.now() - restored),
  };
}

test('an event whose outcome is on Kafka while Redis is away is marked done once Redis is back, not run again', async (t) => {
  const { runtime, probe, cut, restoredAgo } = await runtimeLosingRedis(t);
  let runs = 0;
  const consumer = await runtime.consume({
    groupId: 'done-later',
    topics: [runtime.topics.work('echo')],
    handlers: {
      'io.mesh.subtask.assigned': async (ctx: HandlerContext) => {
        runs += 1;
        if (runs === 1) cut(1_500);
        return completion(runtime, ctx, { ok: true });
      },
    },
  });
  const event = assigned('echo', { n: 1 }, 'task-done-later');
  await runtime.publish([{ topic: runtime.topics.work('echo'), event }]);
  await committedToEnd(runtime, consumer.groupId, runtime.topics.work('echo'));
  // Before, the event was tried again from the start: its own lease (30 s) held the new claim, and
  // then the handler ran a second time.
  assert.ok(
    restoredAgo() < 10_000,
    `committed ${Math.round(restoredAgo())} ms after Redis was back`,
  );
  assert.equal(runs, 1, 'the handler ran once');
  await waitFor(() => probe.on(runtime.topics.results).length > 0, { message: 'no result' });
  assert.equal(probe.on(runtime.topics.results).length, 1, 'one result');
  assert.equal(
    await runtime.redis.get(runtime.idempotency.key(consumer.groupId, event.id)),
    'done:ok',
  );
});

test('a retry written while Redis is away is written once, and its lease given back once Redis is back', async (t) => {
  const { runtime, probe, cut, restoredAgo } = await runtimeLosingRedis(t, {
    MESH_RETRY_TIERS: '1m',
  });
  let runs = 0;
  const consumer = await runtime.consume({
    groupId: 'release-later',
    topics: [runtime.topics.work('echo')],
    handlers: {
      'io.mesh.subtask.assigned': async () => {
        runs += 1;
        if (runs === 1) cut(1_500);
        throw retryable('rate_limited', 'provider said 429');
      },
    },
  });
  const event = assigned('echo', { n: 1 }, 'task-release-later');
  await runtime.publish([{ topic: runtime.topics.work('echo'), event }]);
  await committedToEnd(runtime, consumer.groupId, runtime.topics.work('echo'));
  const key = runtime.idempotency.key(consumer.groupId, event.id);
  // The retried delivery claims the event again at once instead of waiting for the lease to lapse.
  await waitFor(async () => (await runtime.redis.exists(key)) === 0, {
    timeout: 5_000,
    message: 'the lease was not given back',
  });
  assert.ok(
    restoredAgo() < 10_000,
    `given back ${Math.round(restoredAgo())} ms after Redis was back`,
  );
  assert.equal(runs, 1, 'the handler ran once');
  await waitFor(() => probe.on(runtime.topics.retry('1m')).length > 0, { message: 'no retry' });
  assert.equal(probe.on(runtime.topics.retry('1m')).length, 1, 'one retry');
});

test('outputs Kafka refuses for a while are written again in place: the handler does not run again', async (t) => {
  const { runtime, probe } = await startRuntime(t);
  const admin = runtime.kafka.admin();
  await admin.connect();
  onCleanup(t, () => admin.disconnect());
  // The broker refuses a record written before its own clock reads (`INVALID_TIMESTAMP`, as it
  // would for a producer whose clock is behind), which the producer reports as `kafka_unavailable`;
  // the topic's default (no limit) takes them again.
  const recordsFromThePast = (value: string) =>
    admin.alterConfigs({
      validateOnly: false,
      resources: [
        {
          type: 2, // ConfigResourceTypes.TOPIC
          name: runtime.topics.results,
          configEntries: [{ name: 'message.timestamp.before.max.ms', value }],
        },
      ],
    });
  await recordsFromThePast('0');
  // A record is refused only when the broker checks it a millisecond or more after it was stamped,
  // so every record here is large (700 kB): copying and checking it takes longer than that. The
  // broker applies a topic's new setting a moment after it accepted it: a sentinel record (not the
  // event's result) is written until it is refused.
  const large = 'x'.repeat(700_000);
  await waitFor(
    () =>
      runtime.producer
        .send([
          { topic: runtime.topics.results, key: null, value: Buffer.from(large), headers: {} },
        ])
        .then(
          () => false,
          () => true,
        ),
    { message: 'the broker kept taking records from the past' },
  );
  const event = assigned('echo', { n: 1 }, 'task-write-again');
  const results = () =>
    probe.on(runtime.topics.results).filter((r) => probe.header(r, 'ce_causationid') === event.id);
  let runs = 0;
  const consumer = await runtime.consume({
    groupId: 'write-again',
    topics: [runtime.topics.work('echo')],
    handlers: {
      'io.mesh.subtask.assigned': async (ctx: HandlerContext) => {
        runs += 1;
        return completion(runtime, ctx, { large });
      },
    },
  });
  await runtime.publish([{ topic: runtime.topics.work('echo'), event }]);
  await waitFor(() => consumer.degradedSince !== undefined, {
    message: 'the refused outputs were never reported',
  });
  await recordsFromThePast(String(2n ** 63n - 1n));
  await committedToEnd(runtime, consumer.groupId, runtime.topics.work('echo'));
  // Before, the event was tried again from the start, and its handler ran again each time.
  assert.equal(runs, 1, 'the handler ran once');
  await waitFor(() => results().length > 0, { message: 'no result' });
  assert.equal(results().length, 1, 'one result');
  assert.equal(
    await runtime.redis.get(runtime.idempotency.key(consumer.groupId, event.id)),
    'done:ok',
  );
});

test('retryable failures go through the retry tiers, then to mesh.dlq when attempts run out', async (t) => {
  const { runtime, probe } = await startRuntime(t, {
    MESH_MAX_ATTEMPTS: '2',
    MESH_RETRY_TIERS: '1s,2s',
  });
  const consumer = await runtime.consume({
    groupId: 'retry',
    topics: [runtime.topics.work('echo')],
    handlers: {
      'io.mesh.subtask.assigned': async () => {
        throw retryable('rate_limited', 'provider said 429', { retryAfterMs: 1_500 });
      },
    },
  });
  const event = assigned('echo', { n: 1 }, 'task-retry');
  await runtime.publish([{ topic: runtime.topics.work('echo'), event }]);
  const retried = await waitFor(() => probe.on(runtime.topics.retry('2s'))[0], {
    message: 'nothing on the 2s tier',
  });
  assert.equal(
    probe.header(retried, 'ce_meshattempt'),
    '2',
    'Retry-After of 1.5s picks the first tier at least that long',
  );
  assert.equal(probe.header(retried, 'ce_meshfailure'), 'rate_limited');
  assert.equal(probe.header(retried, 'ce_meshorigintopic'), runtime.topics.work('echo'));
  assert.equal(probe.header(retried, 'ce_id'), event.id);
  const notBefore = Date.parse(probe.header(retried, 'ce_meshnotbefore') ?? '');
  assert.ok(
    notBefore >= Number(retried.timestamp) + 1_500,
    'meshnotbefore is the 2s tier delay after the retry was written',
  );
  // Re-dispatch it as dlq-triage would: the original value with the retry headers, on the origin topic.
  await runtime.producer.send([
    {
      topic: runtime.topics.work('echo'),
      key: retried.key?.toString() ?? null,
      value: retried.value ?? Buffer.alloc(0),
      headers: Object.fromEntries(Object.entries(retried.headers).map(([k, v]) => [k, String(v)])),
    },
  ]);
  const dead = await waitFor(() => probe.on(runtime.topics.dlq)[0], {
    message: 'nothing on mesh.dlq',
  });
  assert.equal(probe.header(dead, 'ce_meshfailure'), 'rate_limited');
  assert.match(probe.header(dead, 'ce_meshfailuredetail') ?? '', /after 2 attempts/);
  assert.equal(probe.header(dead, 'ce_meshfailedby'), `runtime-test/${consumer.groupId}`);
  assert.equal(
    consumer.groupId,
    `${runtime.config.topicPrefix}retry`,
    'group ids live under the topic prefix',
  );
  assert.deepEqual(
    dead.value,
    retried.value,
    'the dead letter is the original event, unchanged but for headers',
  );
});

test('a poison message ends on mesh.dlq and the rest of its partition is processed', async (t) => {
  const { runtime, probe } = await startRuntime(t, { MESH_PARTITIONS: '1' });
  const done: number[] = [];
  const consumer = await runtime.consume({
    groupId: 'poison',
    topics: [runtime.topics.work('echo')],
    handlers: {
      'io.mesh.subtask.assigned': async ({ event }) => {
        const n = (event.data as { input: { n: number } }).input.n;
        if (n === 3) throw terminal('handler_error', 'cannot handle this input');
        done.push(n);
      },
    },
  });
  const events = Array.from({ length: 8 }, (_, n) =>
    assigned('echo', { n }, n === 3 ? 'poisoned' : `task-${n % 2}`),
  );
  await runtime.publish(events.map((event) => ({ topic: runtime.topics.work('echo'), event })));
  await runtime.producer.send([
    {
      topic: runtime.topics.work('echo'),
      key: 'x',
      value: Buffer.from('not an event'),
      headers: {},
    },
  ]);
  await runtime.publish([
    { topic: runtime.topics.work('echo'), event: assigned('echo', { n: 9 }, 'after') },
  ]);
  await waitFor(() => done.length === 8 && probe.on(runtime.topics.dlq).length === 2, {
    message: () => `done ${done.length}, dlq ${probe.on(runtime.topics.dlq).length}`,
  });
  assert.deepEqual([...done].sort(), [0, 1, 2, 4, 5, 6, 7, 9]);
  const classes = probe
    .on(runtime.topics.dlq)
    .map((r) => probe.header(r, 'ce_meshfailure'))
    .sort();
  assert.deepEqual(classes, ['handler_error', 'malformed_event']);
  await committedToEnd(runtime, consumer.groupId, runtime.topics.work('echo'));
});

test('large outputs: a turn of them goes out in several requests; one too large for Kafka fails its event and holds up nothing', async (t) => {
  const { runtime, probe } = await startRuntime(t, { MESH_PARTITIONS: '1' });
  const topic = runtime.topics.work('echo');
  const consumer = await runtime.consume({
    groupId: 'large',
    topics: [topic],
    handlers: {
      'io.mesh.subtask.assigned': async (ctx) => {
        const { size } = (ctx.event.data as { input: { size: number } }).input;
        return completion(runtime, ctx, { text: 'x'.repeat(size) });
      },
    },
  });
  // 40 outputs of 60 kB finish in the same few turns: 2.4 MB, which Kafka refuses as one record
  // batch (message.max.bytes, 1 MB). One output of 1.2 MB is too large whatever it is sent with.
  const events = Array.from({ length: 40 }, (_, n) => assigned('echo', { size: 60_000 }, `t${n}`));
  const huge = assigned('echo', { size: 1_200_000 }, 'huge');
  await runtime.publish(
    [...events.slice(0, 20), huge, ...events.slice(20)].map((event) => ({ topic, event })),
  );
  await waitFor(
    () =>
      probe.on(runtime.topics.results).length === 40 && probe.on(runtime.topics.dlq).length === 1,
    {
      timeout: 30_000,
      message: () =>
        `results ${probe.on(runtime.topics.results).length} of 40, dead letters ${probe.on(runtime.topics.dlq).length} of 1`,
    },
  );
  const dead = probe.on(runtime.topics.dlq)[0];
  assert.ok(dead);
  assert.equal(probe.header(dead, 'ce_id'), huge.id, 'the event whose output was too large');
  assert.equal(probe.header(dead, 'ce_meshfailure'), 'invalid_output');
  assert.match(probe.header(dead, 'ce_meshfailuredetail') ?? '', /over the producer's limit/);
  assert.deepEqual(
    new Set(probe.on(runtime.topics.results).map((r) => probe.header(r, 'ce_causationid'))),
    new Set(events.map((e) => e.id)),
    'every other output was written, once',
  );
  await committedToEnd(runtime, consumer.groupId, topic);
});

test('a dead letter too large for Kafka with its failure headers keeps them and says where the event is', async (t) => {
  const { runtime, probe } = await startRuntime(t, { MESH_PARTITIONS: '1' });
  const topic = runtime.topics.work('echo');
  let handled = 0;
  const consumer = await runtime.consume({
    groupId: 'large-dlq',
    topics: [topic],
    handlers: { 'io.mesh.subtask.assigned': async () => void (handled += 1) },
  });
  // Just under the producer's record limit as it is; the failure headers would take it over.
  const value = Buffer.alloc(1_048_400, 'x');
  await runtime.producer.send([{ topic, key: 'big', value, headers: {} }]);
  await runtime.publish([{ topic, event: assigned('echo', {}, 'after') }]);
  const dead = await waitFor(() => probe.on(runtime.topics.dlq)[0], {
    message: 'no dead letter',
  });
  assert.equal(probe.header(dead, 'ce_meshfailure'), 'malformed_event');
  assert.equal(dead.value?.length ?? 0, 0, 'the value is left out');
  assert.match(
    probe.header(dead, 'ce_meshfailuredetail') ?? '',
    new RegExp(`value of ${value.length} bytes left out.*${topic} partition 0 offset 0`),
  );
  assert.equal(probe.header(dead, 'ce_meshorigintopic'), topic);
  await waitFor(() => handled === 1, { message: 'the next event did not run' });
  await committedToEnd(runtime, consumer.groupId, topic);
});

test('each malformed-input class ends on mesh.dlq with its failure class, the handler never runs', async (t) => {
  const { runtime, probe } = await startRuntime(t, { MESH_MAX_EVENT_BYTES: '2048' });
  const topic = runtime.topics.work('echo');
  let handled = 0;
  await runtime.consume({
    groupId: 'malformed',
    topics: [topic],
    handlers: { 'io.mesh.subtask.assigned': async () => void handled++ },
  });
  const good = assigned('echo', { ok: true }, 'mal');
  const { value: goodValue, headers: goodHeaders } = await runtime.codec.encode(good);
  const id = goodValue.readUInt32BE(1);
  const wire = (schemaId: number, body: Buffer): Buffer =>
    Buffer.concat([
      Buffer.from([0]),
      Buffer.from([
        schemaId >>> 24,
        (schemaId >>> 16) & 255,
        (schemaId >>> 8) & 255,
        schemaId & 255,
      ]),
      body,
    ]);
  const cases: [string, Buffer, Record<string, string>, string][] = [
    ['not a CloudEvent', Buffer.from('hello'), {}, 'malformed_event'],
    ['missing id', goodValue, { ...goodHeaders, ce_id: '' }, 'malformed_event'],
    ['bad specversion', goodValue, { ...goodHeaders, ce_specversion: '0.3' }, 'malformed_event'],
    ['negative hopcount', goodValue, { ...goodHeaders, ce_hopcount: '-1' }, 'malformed_event'],
    ['non-integer hopcount', goodValue, { ...goodHeaders, ce_hopcount: '2.5' }, 'malformed_event'],
    [
      'bad magic byte',
      Buffer.concat([Buffer.from([1]), goodValue.subarray(1)]),
      goodHeaders,
      'malformed_event',
    ],
    ['unknown schema id', wire(987_654_321, Buffer.from('{}')), goodHeaders, 'malformed_event'],
    [
      'schema violation',
      wire(id, Buffer.from(JSON.stringify({ taskId: 't' }))),
      goodHeaders,
      'schema_violation',
    ],
    [
      'oversized value',
      wire(id, Buffer.from(JSON.stringify({ ...(good.data as object), pad: 'x'.repeat(4096) }))),
      goodHeaders,
      'malformed_event',
    ],
    [
      'invalid UTF-8 JSON',
      wire(id, Buffer.from([0x7b, 0x22, 0xff, 0xfe, 0x22, 0x7d])),
      goodHeaders,
      'malformed_event',
    ],
    [
      'wrong content-type',
      goodValue,
      { ...goodHeaders, 'content-type': 'text/plain' },
      'malformed_event',
    ],
    [
      'plain JSON off the intake topic',
      Buffer.from(JSON.stringify(good.data)),
      goodHeaders,
      'malformed_event',
    ],
    [
      'unexpected type on the topic',
      (
        await runtime.codec.encode(
          newEvent({ type: 'io.mesh.task.cancel', source: '/t', data: { taskId: 't' } }),
        )
      ).value,
      { ...goodHeaders, ce_type: 'io.mesh.task.cancel' },
      'malformed_event',
    ],
  ];
  await runtime.producer.send(
    cases.map(([name, value, headers]) => ({
      topic,
      key: name,
      value,
      headers: { ...headers, 'x-case': name },
    })),
  );
  await runtime.publish([{ topic, event: good }]);
  await waitFor(() => probe.on(runtime.topics.dlq).length === cases.length && handled === 1, {
    message: () =>
      `dlq ${probe.on(runtime.topics.dlq).length} of ${cases.length}, handled ${handled}`,
  });
  for (const [name, , , failure] of cases) {
    const dead = probe.on(runtime.topics.dlq).find((r) => probe.header(r, 'x-case') === name);
    assert.ok(dead, `${name} is on mesh.dlq`);
    assert.equal(
      probe.header(dead, 'ce_meshfailure'),
      failure,
      `${name}: ${probe.header(dead, 'ce_meshfailuredetail')}`,
    );
    assert.equal(probe.header(dead, 'ce_meshorigintopic'), topic);
    assert.ok(
      (probe.header(dead, 'ce_meshfailuredetail') ?? '').length > 0,
      `${name} has a detail`,
    );
  }
  assert.equal(handled, 1, 'only the good event reached the handler');
});

test('a hop loop is stopped at the limit and a revisit cycle is detected', async (t) => {
  for (const [vars, expected] of [
    [{ MESH_MAX_HOPS: '6', MESH_MAX_REVISITS: '100' }, 'hop_limit_exceeded'],
    [{ MESH_MAX_HOPS: '100', MESH_MAX_REVISITS: '2' }, 'cycle_detected'],
  ] as const) {
    const { runtime, probe } = await startRuntime(t, vars, ['ping', 'pong']);
    let runs = 0;
    // Two agents that delegate to each other for ever.
    const delegate = (self: string, other: string) => async (ctx: HandlerContext) => {
      runs += 1;
      return {
        emit: [
          {
            topic: runtime.topics.work(other),
            event: ctx.derive({
              type: 'io.mesh.subtask.assigned',
              agent: other,
              visited: self,
              data: { ...(ctx.event.data as object), agent: other },
            }),
          },
        ],
      };
    };
    await runtime.consume({
      groupId: 'ping',
      topics: [runtime.topics.work('ping')],
      handlers: { 'io.mesh.subtask.assigned': delegate('ping', 'pong') },
    });
    await runtime.consume({
      groupId: 'pong',
      topics: [runtime.topics.work('pong')],
      handlers: { 'io.mesh.subtask.assigned': delegate('pong', 'ping') },
    });
    await runtime.publish([
      { topic: runtime.topics.work('ping'), event: assigned('ping', {}, `loop-${expected}`) },
    ]);
    const dead = await waitFor(() => probe.on(runtime.topics.dlq)[0], {
      message: `loop not stopped (${expected})`,
    });
    assert.equal(probe.header(dead, 'ce_meshfailure'), expected);
    if (expected === 'hop_limit_exceeded') {
      assert.equal(probe.header(dead, 'ce_hopcount'), '7');
      assert.equal(runs, 7, 'hops 0 to 6 ran, hop 7 was stopped');
    } else {
      assert.equal(
        probe
          .header(dead, 'ce_agentpath')
          ?.split(',')
          .filter((a) => a === probe.header(dead, 'ce_agent')).length,
        3,
      );
    }
    const counted = (await runtime.metrics.loopGuards.get()).values.find(
      (v) => v.labels.failure === expected,
    );
    assert.equal(counted?.value, 1);
  }
});

test('stop() drains running handlers and commits; a restarted member does not run them again', async (t) => {
  const { runtime } = await startRuntime(t, { MESH_PARTITIONS: '1' });
  const topic = runtime.topics.work('echo');
  let runs = 0;
  const handlers = {
    'io.mesh.subtask.assigned': async () => {
      runs += 1;
      await sleep(1_000);
    },
  };
  const first = await runtime.consume({ groupId: 'drain', topics: [topic], handlers });
  await runtime.publish(
    Array.from({ length: 5 }, (_, i) => ({ topic, event: assigned('echo', { i }, `drain-${i}`) })),
  );
  await waitFor(() => runs === 5, { message: 'handlers did not start' });
  await first.stop(10_000);
  const lag = await runtime.admin.lag(first.groupId, [topic]);
  assert.deepEqual(
    lag.map((l) => l.lag),
    [0],
    'all drained work committed',
  );
  await runtime.consume({ groupId: 'drain', topics: [topic], handlers });
  await runtime.publish([{ topic, event: assigned('echo', { i: 99 }, 'drain-after') }]);
  await waitFor(() => runs === 6);
  await sleep(500);
  assert.equal(runs, 6, 'nothing drained before the stop ran again');
});

test('handlers still running when the drain of a stop runs out are aborted: their events are not retried or dead-lettered, and the next member runs them at once', async (t) => {
  // The lease outlasts the test: a lease left held would make the next member wait it out.
  const { runtime, probe } = await startRuntime(t, { MESH_PARTITIONS: '1', MESH_LEASE_TTL: '60s' });
  const topic = runtime.topics.work('echo');
  const runs = new Map<string, number>();
  const handlers = {
    'io.mesh.subtask.assigned': async (ctx: HandlerContext) => {
      const n = (runs.get(ctx.event.id) ?? 0) + 1;
      runs.set(ctx.event.id, n);
      // An agent call longer than the drain, which gives up when its signal is aborted.
      if (n === 1) await sleep(120_000, undefined, { signal: ctx.signal });
      return completion(runtime, ctx, { run: n });
    },
  };
  const first = await runtime.consume({ groupId: 'outlasted', topics: [topic], handlers });
  const events = Array.from({ length: 3 }, (_, i) => assigned('echo', { i }, `outlasted-${i}`));
  await runtime.publish(events.map((event) => ({ topic, event })));
  await waitFor(() => runs.size === 3, { message: 'handlers did not start' });
  await first.stop(1_000);
  const stopped = Date.now();
  await runtime.consume({ groupId: 'outlasted', topics: [topic], handlers });
  await waitFor(() => probe.on(runtime.topics.results).length === 3, {
    timeout: 30_000,
    message: () =>
      `results ${probe.on(runtime.topics.results).length} of 3, retried ${runtime.config.retryTiers
        .map((tier) => probe.on(runtime.topics.retry(tier.name)).length)
        .join('/')}, dead letters ${probe.on(runtime.topics.dlq).length}`,
  });
  const waited = Date.now() - stopped;
  assert.deepEqual(
    events.map((e) => runs.get(e.id)),
    [2, 2, 2],
    'each ran again on the next member',
  );
  assert.ok(waited < 20_000, `the next member did not wait out the leases (${waited} ms)`);
  assert.deepEqual(
    probe.on(runtime.topics.results).map((r) => probe.header(r, 'ce_meshattempt') ?? '1'),
    ['1', '1', '1'],
    'a stop spends no attempt',
  );
  const retried = runtime.config.retryTiers.flatMap((tier) =>
    probe.on(runtime.topics.retry(tier.name)),
  );
  assert.equal(retried.length, 0, 'nothing went to a retry tier');
  assert.equal(probe.on(runtime.topics.dlq).length, 0, 'nothing was dead-lettered');
});

test('a partition paused because it was full keeps flowing after a rebalance', async (t) => {
  // kafkajs keeps a pause across rebalances; the runtime must not forget a partition it paused.
  const { runtime } = await startRuntime(t, {
    MESH_PARTITIONS: '1',
    MESH_PARTITION_CONCURRENCY: '2',
    MESH_LEASE_TTL: '2s',
  });
  const topic = runtime.topics.work('echo');
  let open!: () => void;
  const gate = new Promise<void>((resolve) => (open = resolve));
  const handled = new Set<string>();
  const handlers = {
    'io.mesh.subtask.assigned': async ({ event }: HandlerContext) => {
      await gate;
      handled.add(event.id);
    },
  };
  const first = await runtime.consume({ groupId: 'pause', topics: [topic], handlers });
  const events = Array.from({ length: 10 }, (_, i) => assigned('echo', { i }, `pause-${i}`));
  await runtime.publish(events.map((event) => ({ topic, event })));
  await waitFor(() => first.pending === 2, { message: 'the first member did not fill up' });
  // A second member joins (rebalance) and leaves (rebalance): the partition ends with the first.
  const second = await runtime.consume({ groupId: 'pause', topics: [topic], handlers });
  await waitFor(() => first.assignments >= 2, {
    timeout: 30_000,
    message: 'no rebalance when a member joined',
  });
  await second.stop(100);
  await waitFor(() => first.assignments >= 3, {
    timeout: 30_000,
    message: 'no rebalance when the member left',
  });
  open();
  await waitFor(() => handled.size === events.length, {
    timeout: 30_000,
    message: 'events were left unhandled after the rebalances',
  });
  assert.equal(handled.size, events.length);
});
