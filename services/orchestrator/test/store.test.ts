/**
 * The task store against the real Redis: the final-state claim that lets a retried path publish
 * and refuses every other path, the task lock, and the causal chain.
 */
import { test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import assert from 'node:assert/strict';
import { isMeshError } from '@mesh/errors';
import { createRedis, waitForRedis } from '@mesh/redis';
import { meshEnv, onCleanup, redisBehindRelay, testRedis, waitFor } from '@mesh/testkit';
import { TaskStore, type EventSummary, type TaskState } from '../src/index.ts';

/**
 * `count` task stores sharing one key prefix, each on its own connection (a replica each); their
 * keys are deleted after the test. `redis` is the first store's connection. They keep tasks for
 * `ttlMs` (60 s unless given) and ended ones for `retentionMs` (the TTL unless given). Unless
 * `indexed` is false, the first store has filed the (no) earlier tasks by status, as the
 * orchestrator does at start.
 */
async function taskStores(
  t: Parameters<typeof onCleanup>[0],
  options: { count?: number; indexed?: boolean; ttlMs?: number; retentionMs?: number } = {},
) {
  const { count = 1, indexed = true, ttlMs = 60_000, retentionMs } = options;
  const { redis, prefix } = await testRedis(t, 'tasks');
  const settings = { prefix, ttlMs, ...(retentionMs === undefined ? {} : { retentionMs }) };
  const stores = [new TaskStore(redis, settings)];
  const env = await meshEnv();
  for (let i = 1; i < count; i += 1) {
    const client = createRedis(
      { url: env.MESH_REDIS_URL },
      { connectionName: 'orchestrator-test' },
    );
    onCleanup(t, () => client.disconnect());
    await waitForRedis(client);
    stores.push(new TaskStore(client, settings));
  }
  if (indexed) assert.equal(await (stores[0] as TaskStore).indexStatuses(), 0);
  return { redis, prefix, stores: stores as [TaskStore, ...TaskStore[]] };
}

test('the final claim: the claimant may claim again (a retry publishes), another path may not', async (t) => {
  const {
    redis,
    prefix,
    stores: [store],
  } = await taskStores(t);

  assert.equal(await store.claimFinal('t1', 'io.mesh.task.failed', 'final-1 cause-1'), true);
  assert.equal(
    await store.claimFinal('t1', 'io.mesh.task.failed', 'final-1 cause-1'),
    true,
    'the same path, retried after a lost reply or a crash, still owns the claim',
  );
  assert.equal(
    await store.claimFinal('t1', 'io.mesh.task.cancelled', 'final-2 cause-2'),
    false,
    'another path is refused',
  );
  assert.equal(
    await store.claimFinal('t1', 'io.mesh.task.failed', 'final-1 cause-3'),
    false,
    'the same final type from another cause is refused',
  );
  assert.equal(await store.finalOf('t1'), 'io.mesh.task.failed');
  assert.ok((await redis.pttl(`${prefix}final:t1`)) > 0, 'the marker expires');

  // A marker the aggregator set (no claimant recorded) is never the orchestrator's.
  await redis.set(`${prefix}final:t2`, 'io.mesh.task.completed', 'PX', 60_000);
  assert.equal(await store.claimFinal('t2', 'io.mesh.task.failed', 'final-1 cause-1'), false);
  assert.equal(await store.finalOf('t2'), 'io.mesh.task.completed');
});

test('the task lock: one holder at a time per task, in arrival order; other tasks and replicas wait or run freely', async (t) => {
  // The second store, on its own connection, stands for another replica.
  const { redis, prefix, stores } = await taskStores(t, { count: 2 });
  const [store, replica] = stores as [TaskStore, TaskStore];

  const log: string[] = [];
  let holders = 0;
  let most = 0;
  const hold = (name: string, ms: number) => async (): Promise<string> => {
    holders += 1;
    most = Math.max(most, holders);
    log.push(`${name} in`);
    await new Promise((resolve) => setTimeout(resolve, ms));
    log.push(`${name} out`);
    holders -= 1;
    return name;
  };
  const failing = store.withLock('t1', async () => {
    await hold('fails', 5)();
    throw new Error('handler failed');
  });
  const results = await Promise.allSettled([
    failing,
    store.withLock('t1', hold('a', 30)),
    store.withLock('t1', hold('b', 5)),
    replica.withLock('t1', hold('replica', 5)),
  ]);
  assert.equal(results[0]?.status, 'rejected', 'the failure reaches its caller');
  assert.deepEqual(
    results.slice(1).map((r) => (r.status === 'fulfilled' ? r.value : 'rejected')),
    ['a', 'b', 'replica'],
  );
  assert.equal(most, 1, `never two holders of one task's lock at once: ${log.join(', ')}`);
  assert.deepEqual(
    log.filter((l) => l.endsWith(' in') && !l.startsWith('replica')),
    ['fails in', 'a in', 'b in'],
    'this process takes the lock in arrival order, and a failed holder does not block the next',
  );

  // The holder gets the task's state as read under the lock, in the same round trip.
  assert.equal(await store.withLock('t1', async (state) => state), undefined, 'no state yet');
  const saved: TaskState = {
    id: 't1',
    status: 'running',
    template: 'fan-out',
    createdAt: new Date().toISOString(),
    updatedAt: new Date().toISOString(),
    input: { question: 'q' },
    budget: {},
    usage: { promptTokens: 0, completionTokens: 0, costUsd: 0, steps: 3 },
    stages: { gather: { status: 'dispatched' } },
  };
  await store.put(saved);
  const read = await replica.withLock('t1', async (state) => state);
  assert.deepEqual(read, { ...saved, updatedAt: read?.updatedAt });

  // Another task's lock is independent: both run at once.
  let overlapping = 0;
  let overlapMost = 0;
  const overlap = async (): Promise<void> => {
    overlapping += 1;
    overlapMost = Math.max(overlapMost, overlapping);
    await new Promise((resolve) => setTimeout(resolve, 30));
    overlapping -= 1;
  };
  await Promise.all([store.withLock('t2', overlap), store.withLock('t3', overlap)]);
  assert.equal(overlapMost, 2);
  // The release is sent without waiting for its reply: it lands at once, not necessarily before
  // this check on another connection.
  const deadline = Date.now() + 2_000;
  while ((await redis.exists(`${prefix}lock:task:t1`)) === 1 && Date.now() < deadline)
    await new Promise((resolve) => setTimeout(resolve, 20));
  assert.equal(await redis.exists(`${prefix}lock:task:t1`), 0, 'the Redis lock is released');
});

test('the causal chain: what one turn records, for any tasks, is one script call, and an event is listed once', async (t) => {
  const { redis, prefix, stores } = await taskStores(t);
  const [store] = stores;
  // MONITOR on its own connection: every script call that touches this test's chains.
  const monitor = await redis.monitor();
  onCleanup(t, () => monitor.disconnect());
  const calls: string[][] = [];
  monitor.on('monitor', (_time: string, args: string[]) => {
    // MONITOR also lists the commands a script runs; only the calls from the client count here.
    const command = args[0]?.toLowerCase() ?? '';
    if (!['eval', 'evalsha'].includes(command)) return;
    if (args.some((arg) => arg.startsWith(prefix) && arg.endsWith(':seen'))) calls.push(args);
  });
  const summary = (id: string): EventSummary => ({
    id,
    type: 'io.mesh.subtask.completed',
    source: '/test',
    topic: 'mesh.results',
  });

  await Promise.all([
    store.record('a', summary('e1')),
    store.record('b', summary('e2')),
    store.record('a', summary('e3')),
    store.record('a', summary('e1')),
  ]);
  await waitFor(() => calls.length >= 1, { message: 'MONITOR saw no script call' });
  await sleep(200);
  assert.equal(calls.length, 1, 'four records of two tasks in one turn: one script call');
  assert.deepEqual((await store.events('a')).map((e) => e.id).sort(), ['e1', 'e3']);
  assert.deepEqual(
    (await store.events('b')).map((e) => e.id),
    ['e2'],
  );
  assert.ok((await redis.pttl(`${prefix}task:a:events`)) > 0, 'the chain expires');
  assert.ok((await redis.pttl(`${prefix}task:a:seen`)) > 0, 'the seen-set expires');

  await store.record('a', summary('e3'));
  assert.equal((await store.events('a')).length, 2, 'a redelivered event is not listed again');
});

/** A task document created `ageMs` before `now`. */
function taskAged(id: string, status: TaskState['status'], ageMs: number, now: number): TaskState {
  return {
    id,
    status,
    template: 'fan-out',
    createdAt: new Date(now - ageMs).toISOString(),
    updatedAt: new Date(now).toISOString(),
    input: {},
    budget: {},
    usage: { promptTokens: 0, completionTokens: 0, costUsd: 0, steps: 0 },
    stages: {},
  };
}

test('the task index forgets tasks created more than the TTL ago; their documents expire alone', async (t) => {
  const {
    redis,
    prefix,
    stores: [store],
  } = await taskStores(t);
  const now = Date.now();
  // The stores of this file keep tasks for 60 s.
  for (const [id, age] of [
    ['old', 120_000],
    ['just-expired', 60_001],
    ['recent', 59_000],
    ['new', 0],
  ] as const)
    await store.put(taskAged(id, 'completed', age, now));
  assert.equal(await redis.zcard(`${prefix}tasks`), 4);

  assert.equal(await store.forgetExpired(now), 2);
  assert.deepEqual(await redis.zrange(`${prefix}tasks`, 0, -1), ['recent', 'new']);
  assert.deepEqual(
    await redis.zrange(`${prefix}tasks:by-status:completed`, 0, -1),
    ['recent', 'new'],
    'the status index is trimmed too',
  );
  assert.deepEqual(
    (await store.list({ limit: 10 })).map((s) => s.id),
    ['new', 'recent'],
  );
  // Only the index entry goes: a task still read by id stays readable until its document expires.
  assert.equal((await store.get('old'))?.id, 'old');
  assert.equal(await store.forgetExpired(now), 0, 'nothing left to forget');
});

test('an ended task and its chain are kept for the retention, an unfinished one for the TTL', async (t) => {
  const {
    redis,
    prefix,
    stores: [store],
  } = await taskStores(t, { ttlMs: 600_000, retentionMs: 5_000 });
  const now = Date.now();
  const summary = (id: string): EventSummary => ({ id, type: 't', source: '/test', topic: 'x' });
  const ttl = async (key: string) => redis.pttl(`${prefix}${key}`);

  const task = taskAged('t1', 'running', 0, now);
  await store.put(task);
  await store.record('t1', summary('e1'));
  for (const key of ['task:t1', 'task:t1:events', 'task:t1:seen'])
    assert.ok((await ttl(key)) > 500_000, `${key} of a running task: the TTL`);

  // It ends: its state and chain now go the retention after their last change, and an event
  // recorded after its final marker was set does not bring the TTL back.
  assert.equal(await store.claimFinal('t1', 'io.mesh.task.completed', 'final-1 cause-1'), true);
  task.status = 'completed';
  await store.put(task);
  await store.record('t1', summary('e2'));
  for (const key of ['task:t1', 'task:t1:events', 'task:t1:seen']) {
    const left = await ttl(key);
    assert.ok(left > 0 && left <= 5_000, `${key} of an ended task: the retention (${left} ms)`);
  }
  assert.ok((await ttl('final:t1')) > 500_000, 'the final marker keeps the TTL');
  assert.equal((await store.events('t1')).length, 2);

  // Once its state is gone, the lock says how it ended.
  await redis.del(`${prefix}task:t1`);
  const seen = await store.withLock('t1', async (state, ended) => ({ state, ended }));
  assert.deepEqual(seen, { state: undefined, ended: 'io.mesh.task.completed' });
  assert.deepEqual(await store.withLock('never', async (state, ended) => ({ state, ended })), {
    state: undefined,
    ended: undefined,
  });

  // The indexes forget ended tasks created more than the retention ago, others after the TTL.
  await store.put(taskAged('old-running', 'running', 60_000, now));
  await store.put(taskAged('old-done', 'completed', 60_000, now));
  await store.forgetExpired(now);
  assert.deepEqual(await redis.zrange(`${prefix}tasks:by-status:running`, 0, -1), ['old-running']);
  assert.deepEqual(await redis.zrange(`${prefix}tasks:by-status:completed`, 0, -1), ['t1']);
  assert.deepEqual((await redis.zrange(`${prefix}tasks`, 0, -1)).sort(), [
    'old-done',
    'old-running',
    't1',
  ]);
});

test('listing tasks: newest first, by status and age', async (t) => {
  const {
    prefix,
    redis,
    stores: [store],
  } = await taskStores(t);
  const now = Date.now();
  const put = (id: string, status: TaskState['status'], ageMs: number) =>
    store.put(taskAged(id, status, ageMs, now));
  await put('stuck', 'running', 30_000);
  await put('gate', 'awaiting_approval', 20_000);
  await put('done', 'completed', 10_000);
  await put('fresh', 'running', 1_000);
  await redis.zadd(`${prefix}tasks`, now - 5_000, 'expired'); // its document is gone

  const ids = async (filter: Parameters<TaskStore['list']>[0]) =>
    (await store.list(filter)).map((s) => s.id);
  assert.deepEqual(await ids({ limit: 10 }), ['fresh', 'done', 'gate', 'stuck']);
  assert.deepEqual(await ids({ limit: 2 }), ['fresh', 'done']);
  assert.deepEqual(await ids({ limit: 10, status: ['running', 'awaiting_approval'] }), [
    'fresh',
    'gate',
    'stuck',
  ]);
  assert.deepEqual(
    await ids({ limit: 10, status: ['running'], createdBefore: now - 15_000 }),
    ['stuck'],
    'running and created more than 15 s ago',
  );
  assert.deepEqual(await ids({ limit: 10, createdBefore: now - 60_000 }), []);

  // A task is listed under the status it has now, and only under that one.
  await put('fresh', 'completed', 1_000);
  assert.deepEqual(await ids({ limit: 10, status: ['running'] }), ['stuck']);
  assert.deepEqual(await ids({ limit: 10, status: ['completed'] }), ['fresh', 'done']);
  assert.equal(await redis.zscore(`${prefix}tasks:by-status:running`, 'fresh'), null);
  // A state read under the lock leaves the index of the status it was read with.
  await store.withLock('gate', async (state) => {
    assert.ok(state !== undefined);
    state.status = 'running';
    await store.put(state);
  });
  assert.deepEqual(await ids({ limit: 10, status: ['running'] }), ['gate', 'stuck']);
  assert.equal(await redis.zcard(`${prefix}tasks:by-status:awaiting_approval`), 0);
});

test('a task accepted over HTTP is filed once, never over a state the orchestrator wrote or a task that ended', async (t) => {
  const {
    redis,
    prefix,
    stores: [store],
  } = await taskStores(t);
  const now = Date.now();
  const ids = async (status: TaskState['status']) =>
    (await store.list({ limit: 10, status: [status] })).map((s) => s.id);

  assert.equal(await store.fileAccepted(taskAged('new', 'accepted', 0, now)), true);
  assert.deepEqual(await ids('accepted'), ['new']);
  assert.equal((await store.get('new'))?.status, 'accepted');
  assert.ok((await redis.pttl(`${prefix}task:new`)) > 50_000, 'kept for the TTL');
  // The orchestrator applies the request: the state it writes replaces the filing, in its index.
  await store.withLock('new', async (state) => {
    assert.equal(state?.status, 'accepted');
    await store.put({ ...state, status: 'running' });
  });
  assert.deepEqual(await ids('accepted'), []);
  assert.deepEqual(await ids('running'), ['new']);

  // Applied before the POST could file it: the filing is refused and the state left as it is.
  await store.put(taskAged('applied', 'running', 0, now));
  assert.equal(await store.fileAccepted(taskAged('applied', 'accepted', 0, now)), false);
  assert.equal((await store.get('applied'))?.status, 'running');
  // Ended and no longer kept (only its final marker is left): not filed again.
  await redis.set(`${prefix}final:gone`, 'io.mesh.task.completed', 'PX', 60_000);
  assert.equal(await store.fileAccepted(taskAged('gone', 'accepted', 0, now)), false);
  assert.equal(await store.get('gone'), undefined);
  assert.deepEqual(await ids('accepted'), []);
});

test('a stuck task is found behind any number of newer tasks, reading only its status', async (t) => {
  const {
    redis,
    prefix,
    stores: [store],
  } = await taskStores(t);
  const now = Date.now();
  await store.put(taskAged('stuck', 'running', 50_000, now));
  await store.put(taskAged('waiting', 'awaiting_approval', 40_000, now));
  // More finished tasks since than a scan of the latest tasks would ever read (it stopped at 10,000).
  const finished = 12_000;
  for (let i = 0; i < finished; i += 1_000)
    await Promise.all(
      Array.from({ length: 1_000 }, (_, j) =>
        store.put(taskAged(`done-${i + j}`, 'completed', 30_000 - (i + j), now)),
      ),
    );
  assert.equal(await redis.zcard(`${prefix}tasks`), finished + 2);

  const reads: string[] = [];
  const monitor = await redis.monitor();
  // Other test files share this Redis: only this test's keys count.
  monitor.on('monitor', (_time: string, args: string[]) => {
    if (args.some((arg) => arg.startsWith(prefix))) reads.push(args.join(' '));
  });
  onCleanup(t, () => monitor.disconnect());
  const stuck = await store.list({
    limit: 50,
    status: ['running', 'awaiting_approval'],
    createdBefore: now - 10_000,
  });
  await waitFor(() => reads.some((r) => r.startsWith('mget')), { message: 'the MONITOR feed' });
  monitor.disconnect();
  assert.deepEqual(
    stuck.map((s) => s.id),
    ['waiting', 'stuck'],
  );
  const mgets = reads.filter((r) => r.startsWith('mget'));
  assert.equal(
    mgets.reduce((n, r) => n + r.split(' ').length - 1, 0),
    2,
    `only the two unfinished tasks' documents were read: ${mgets.join('; ').slice(0, 200)}`,
  );
  assert.deepEqual(
    (await store.list({ limit: 3, status: ['completed'] })).map((s) => s.id),
    [`done-${finished - 1}`, `done-${finished - 2}`, `done-${finished - 3}`],
  );
  // Counted from the same indexes, with when the oldest of each status was created.
  assert.deepEqual(await store.statusCounts(), {
    accepted: { count: 0 },
    running: { count: 1, oldestCreatedAt: now - 50_000 },
    awaiting_approval: { count: 1, oldestCreatedAt: now - 40_000 },
    completed: { count: finished, oldestCreatedAt: now - 30_000 },
    failed: { count: 0 },
    cancelled: { count: 0 },
  });
});

test('tasks an older orchestrator wrote are filed by status once, from their documents', async (t) => {
  const {
    redis,
    prefix,
    stores: [store],
  } = await taskStores(t, { indexed: false });
  const now = Date.now();
  // Written as before the status indexes: the document and the index of every task only. 700 tasks
  // share one creation time, so a round of 500 ends among them and the next must go on after it.
  const earlier: [string, TaskState['status'], number][] = [
    ['stuck', 'running', 50_000],
    ['gate', 'awaiting_approval', 45_000],
    ...Array.from({ length: 700 }, (_, i): [string, TaskState['status'], number] => [
      `same-${i}`,
      'completed',
      40_000,
    ]),
    ...Array.from({ length: 400 }, (_, i): [string, TaskState['status'], number] => [
      `later-${i}`,
      i % 2 === 0 ? 'failed' : 'completed',
      30_000 - i,
    ]),
  ];
  const pipeline = redis.pipeline();
  for (const [id, status, age] of earlier) {
    pipeline.set(
      `${prefix}task:${id}`,
      JSON.stringify(taskAged(id, status, age, now)),
      'PX',
      60_000,
    );
    pipeline.zadd(`${prefix}tasks`, now - age, id);
  }
  pipeline.zadd(`${prefix}tasks`, now - 20_000, 'expired'); // its document is gone
  await pipeline.exec();

  // Until they are filed, a query by status scans the latest tasks as before, and still answers;
  // nothing is counted, rather than a count of only the tasks filed so far.
  assert.equal(await store.statusCounts(), undefined);
  assert.deepEqual(
    (await store.list({ limit: 10, status: ['running'] })).map((s) => s.id),
    ['stuck'],
  );
  // A document that is not a task is not filed under any status.
  await redis.set(`${prefix}task:garbled`, 'not json', 'PX', 60_000);
  await redis.zadd(`${prefix}tasks`, now - 20_000, 'garbled');
  assert.equal(await store.indexStatuses(), earlier.length);
  const members = async (status: TaskState['status']) =>
    (await redis.zrange(`${prefix}tasks:by-status:${status}`, 0, -1)).sort();
  assert.deepEqual(await members('running'), ['stuck']);
  assert.deepEqual(await members('awaiting_approval'), ['gate']);
  assert.equal((await members('completed')).length, 700 + 200);
  assert.equal((await members('failed')).length, 200);
  assert.equal(
    await redis.zscore(`${prefix}tasks:by-status:running`, 'stuck'),
    String(now - 50_000),
    'filed at its creation time',
  );
  assert.equal(await redis.exists(`${prefix}tasks:by-status`), 1, 'done once for this Redis');
  assert.equal(await store.indexStatuses(), 0, 'not again');
  const another = new TaskStore(redis, { prefix, ttlMs: 60_000 });
  assert.equal(await another.indexStatuses(), 0, 'not by another replica either');
  assert.deepEqual(
    (await another.list({ limit: 10, status: ['running', 'awaiting_approval'] })).map((s) => s.id),
    ['gate', 'stuck'],
  );
});

test('a task lock whose reply was lost with its connection is held by the call that took it, not waited out', async (t) => {
  const socketTimeoutMs = 1_000;
  const { redis, blackhole } = await redisBehindRelay(
    t,
    'orchestrator-dead-connection-test',
    socketTimeoutMs,
  );
  const store = new TaskStore(redis, { prefix: 'mesh:', ttlMs: 60_000 });
  assert.equal(await store.withLock('t1', () => Promise.resolve('first')), 'first');

  // Redis takes the lock, its answer is lost; ioredis sends the same call again on a new
  // connection, and the lock, already this call's, is its to use rather than to wait for (30 s).
  blackhole('replies');
  const started = performance.now();
  assert.equal(await store.withLock('t2', () => Promise.resolve('second')), 'second');
  const took = performance.now() - started;
  assert.ok(
    took < socketTimeoutMs + 3_000,
    `took ${Math.round(took)} ms after a lost reply; the lock lapses only after 30 s`,
  );
  assert.equal(
    await store.withLock('t2', () => Promise.resolve('again')),
    'again',
    'and it was released after',
  );
});

test('a task lock whose call failed after Redis took it is given back once Redis answers, not left to lapse', async (t) => {
  // No socket timeout here: the client's own disconnect fails the call instead.
  const { redis, failAfterApplied } = await redisBehindRelay(t, 'orchestrator-lost-lock-test', 0);
  const store = new TaskStore(redis, { prefix: 'mesh:', ttlMs: 60_000 });
  // Redis takes the lock; its answer is lost, and the call fails with its connection.
  const failure = await failAfterApplied(() =>
    store.withLock('t1', () => Promise.resolve('not run')),
  );
  assert.ok(isMeshError(failure) && failure.code === 'redis_unavailable', String(failure));

  const started = performance.now();
  assert.equal(await store.withLock('t1', () => Promise.resolve('ran')), 'ran');
  const took = performance.now() - started;
  assert.ok(took < 3_000, `took ${Math.round(took)} ms; the lock lapses by itself only after 30 s`);
});
