import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { LagSample } from '@mesh/telemetry';
import {
  LagMonitor,
  groupLags,
  renderDashboard,
  topicRates,
  trimHistory,
  type LagAdmin,
} from './dashboard.ts';

test('topicRates: events per second from the change of end offsets between two collections', () => {
  const previous = new Map([
    ['m.requests', { time: 10_000, end: 100 }],
    ['m.results', { time: 10_000, end: 50 }],
    ['m.gone', { time: 10_000, end: 500 }],
  ]);
  const rates = topicRates(
    previous,
    [
      { topic: 'm.requests', end: 140 },
      { topic: 'm.results', end: 50 },
      { topic: 'm.gone', end: 3 },
      { topic: 'm.new', end: 7 },
    ],
    12_000,
  );
  assert.deepEqual(rates, [
    { topic: 'm.requests', end: 140, ratePerSec: 20 },
    { topic: 'm.results', end: 50, ratePerSec: 0 },
    // Deleted and created again: the end went back, which is no negative rate.
    { topic: 'm.gone', end: 3, ratePerSec: 0 },
    // Seen for the first time: no rate yet.
    { topic: 'm.new', end: 7, ratePerSec: 0 },
  ]);
  assert.deepEqual(topicRates(previous, [{ topic: 'm.requests', end: 101 }], 13_000), [
    { topic: 'm.requests', end: 101, ratePerSec: 0.33 },
  ]);
  assert.deepEqual(
    topicRates(previous, [{ topic: 'm.requests', end: 200 }], 10_000),
    [{ topic: 'm.requests', end: 200, ratePerSec: 0 }],
    'no time between the collections: no rate rather than infinity',
  );
});

test('trimHistory keeps the window and a maximum count, oldest dropped first', () => {
  const points = Array.from({ length: 10 }, (_, i) => ({ time: i * 1_000, byGroup: {} }));
  trimHistory(points, 9_000, 5_000);
  assert.deepEqual(
    points.map((p) => p.time),
    [4_000, 5_000, 6_000, 7_000, 8_000, 9_000],
  );
  trimHistory(points, 9_000, 60_000, 3);
  assert.deepEqual(
    points.map((p) => p.time),
    [7_000, 8_000, 9_000],
  );
  assert.deepEqual(trimHistory(points, 100_000, 5_000), []);
  assert.deepEqual(trimHistory([], 0, 5_000), []);
});

const sample = (over: Partial<LagSample>): LagSample => ({
  group: 'm.worker.echo',
  topic: 'm.work.echo',
  partition: 0,
  committed: 0,
  low: 0,
  high: 0,
  lag: 0,
  lagSeconds: 0,
  ...over,
});

test('groupLags sums lag over partitions and keeps the oldest unconsumed age', () => {
  const groups = groupLags([
    sample({ partition: 1, committed: 3, high: 10, lag: 7, lagSeconds: 4.25 }),
    sample({ group: 'm.aggregator', topic: 'm.results', high: 5, committed: 5 }),
    sample({ partition: 0, committed: -1, high: 2, lag: 2, lagSeconds: 9.5 }),
  ]);
  assert.deepEqual(groups, [
    {
      group: 'm.aggregator',
      lag: 0,
      lagSeconds: 0,
      partitions: [
        { topic: 'm.results', partition: 0, committed: 5, end: 5, lag: 0, lagSeconds: 0 },
      ],
    },
    {
      group: 'm.worker.echo',
      lag: 9,
      lagSeconds: 9.5,
      partitions: [
        { topic: 'm.work.echo', partition: 0, committed: -1, end: 2, lag: 2, lagSeconds: 9.5 },
        { topic: 'm.work.echo', partition: 1, committed: 3, end: 10, lag: 7, lagSeconds: 4.25 },
      ],
    },
  ]);
});

/** A broker in memory: groups with committed topics, topics with end offsets. */
function fakeMesh() {
  const state = {
    groups: new Map<string, string[]>([
      ['m.orchestrator', ['m.requests']],
      ['m.worker.echo', ['m.work.echo']],
      ['other.worker.echo', ['other.work.echo']],
    ]),
    ends: new Map<string, number>([
      ['m.requests', 10],
      ['m.work.echo', 4],
      ['m.results', 0],
      ['other.work.echo', 99],
    ]),
  };
  const admin: LagAdmin = {
    listGroups: async () => [...state.groups.keys()],
    listTopics: async () => [...state.ends.keys()],
    committedTopics: async (group) => state.groups.get(group) ?? [],
    endOffsets: async (topic) => [{ partition: 0, high: state.ends.get(topic) ?? 0, low: 0 }],
  };
  const watched = new Map<string, string[]>();
  const lag = {
    watch: (group: string, topics: string[]) => void watched.set(group, topics),
    collect: async (): Promise<LagSample[]> =>
      [...watched].flatMap(([group, topics]) =>
        topics.map((topic) =>
          sample({ group, topic, high: state.ends.get(topic) ?? 0, lag: group.length }),
        ),
      ),
  };
  return { state, admin, lag, watched };
}

test('LagMonitor watches every group of the mesh on its committed topics, and nothing else', async () => {
  const { state, admin, lag, watched } = fakeMesh();
  const monitor = new LagMonitor({ admin, lag, prefix: 'm.', ownGroups: () => ['m.orchestrator'] });
  let view = await monitor.collect(1_000);
  assert.deepEqual(
    [...watched],
    [['m.worker.echo', ['m.work.echo']]],
    "another mesh's group is left out; the process's own groups are already watched",
  );
  assert.deepEqual(
    view.topics.map((t) => t.topic),
    ['m.requests', 'm.results', 'm.work.echo'],
  );

  // The group commits on a second topic: added to the first, not replacing it.
  state.groups.set('m.worker.echo', ['m.results']);
  state.ends.set('m.work.echo', 24);
  view = await monitor.collect(3_000);
  assert.deepEqual(watched.get('m.worker.echo'), ['m.results', 'm.work.echo']);
  assert.equal(view.topics.find((t) => t.topic === 'm.work.echo')?.ratePerSec, 10);
  assert.deepEqual(
    view.groups.map((g) => [g.group, g.lag]),
    [['m.worker.echo', 2 * 'm.worker.echo'.length]],
  );

  // A deleted topic is dropped; a group gone from the broker, its topic with it, is watched on
  // nothing (a group gone while its work topic stays is the next test's case).
  state.ends.delete('m.results');
  await monitor.collect(5_000);
  assert.deepEqual(watched.get('m.worker.echo'), ['m.work.echo']);
  state.groups.delete('m.worker.echo');
  state.ends.delete('m.work.echo');
  view = await monitor.collect(7_000);
  assert.deepEqual(watched.get('m.worker.echo'), []);
  assert.deepEqual(view.groups, []);

  const withHistory = await monitor.view(true);
  assert.deepEqual(
    withHistory.history?.map((h) => [h.at, h.byGroup]),
    [
      ['1970-01-01T00:00:01.000Z', { 'm.worker.echo': 13 }],
      ['1970-01-01T00:00:03.000Z', { 'm.worker.echo': 26 }],
      ['1970-01-01T00:00:05.000Z', { 'm.worker.echo': 13 }],
      ['1970-01-01T00:00:07.000Z', {}],
    ],
  );
  assert.equal((await monitor.view(false)).history, undefined);
});

test('LagMonitor shows a work topic nothing reads under its worker group, until a worker reads it', async () => {
  const { state, admin, lag, watched } = fakeMesh();
  state.ends.set('m.work.ghost', 3);
  const monitor = new LagMonitor({ admin, lag, prefix: 'm.', ownGroups: () => ['m.orchestrator'] });
  let view = await monitor.collect(1_000);
  assert.deepEqual(watched.get('m.worker.ghost'), ['m.work.ghost']);
  assert.deepEqual(
    view.groups.map((g) => [g.group, g.unread ?? false]),
    [
      ['m.worker.echo', false],
      ['m.worker.ghost', true],
    ],
  );
  assert.equal(view.groups[1]?.partitions[0]?.end, 3);

  // Its worker starts and commits: an ordinary group from then on.
  state.groups.set('m.worker.ghost', ['m.work.ghost']);
  view = await monitor.collect(3_000);
  assert.deepEqual(watched.get('m.worker.ghost'), ['m.work.ghost']);
  assert.equal(view.groups.find((g) => g.group === 'm.worker.ghost')?.unread, undefined);

  // Another mesh's work topics are not this one's concern.
  assert.equal(watched.has('other.worker.echo'), false);
});

test('LagMonitor keeps 10 minutes of history and the last figures when a collection fails', async () => {
  const { admin, lag } = fakeMesh();
  let broken = false;
  const monitor = new LagMonitor({
    admin: {
      ...admin,
      listGroups: async () => {
        if (broken) throw new Error('broker away');
        return admin.listGroups();
      },
    },
    lag,
    prefix: 'm.',
    ownGroups: () => [],
  });
  for (let t = 0; t <= 700_000; t += 2_000) await monitor.collect(t);
  const { history, at } = await monitor.view(true);
  assert.equal(at, new Date(700_000).toISOString());
  assert.equal(history?.[0]?.at, new Date(100_000).toISOString(), 'older than 10 min is dropped');
  assert.equal(history?.length, 301);

  broken = true;
  await assert.rejects(monitor.collect(702_000), /broker away/);
  const stale = await monitor.view(false);
  assert.equal(stale.at, new Date(700_000).toISOString());
  assert.equal(stale.error, 'broker away');
  assert.ok(stale.groups.length > 0);
  broken = false;
  await monitor.collect(704_000);
  assert.equal((await monitor.view(false)).error, undefined);
});

test('LagMonitor accepts a listing of topics up to 10 s old, and lists afresh after a failure', async () => {
  const { state, admin, lag } = fakeMesh();
  // An admin that shares its last listing, as MeshAdmin does, unless asked for a fresh one.
  const asked: (number | undefined)[] = [];
  let listed = await admin.listTopics();
  const monitor = new LagMonitor({
    admin: {
      ...admin,
      listTopics: async (options?: { maxAgeMs?: number }) => {
        asked.push(options?.maxAgeMs);
        if (options?.maxAgeMs === 0) listed = await admin.listTopics();
        return listed;
      },
      endOffsets: async (topic) => {
        if (!state.ends.has(topic)) throw new Error(`${topic} does not exist`);
        return admin.endOffsets(topic);
      },
    },
    lag,
    prefix: 'm.',
    ownGroups: () => [],
  });
  await monitor.collect(1_000);
  // A topic deleted after the listing: that collection fails, and the next one lists again.
  state.ends.delete('m.results');
  await assert.rejects(monitor.collect(3_000), /m\.results does not exist/);
  const view = await monitor.collect(5_000);
  assert.deepEqual(
    view.topics.map((t) => t.topic),
    ['m.requests', 'm.work.echo'],
  );
  assert.equal((await monitor.view(false)).error, undefined);
  await monitor.collect(7_000);
  assert.deepEqual(asked, [10_000, 10_000, 0, 10_000]);
});

test('LagMonitor shares one collection between concurrent callers and stops cleanly', async () => {
  const { admin, lag } = fakeMesh();
  let listings = 0;
  const monitor = new LagMonitor({
    admin: { ...admin, listGroups: async () => (listings++, admin.listGroups()) },
    lag,
    prefix: 'm.',
    ownGroups: () => [],
  });
  const [a, b] = await Promise.all([monitor.collect(1), monitor.collect(2)]);
  assert.equal(a, b);
  assert.equal(listings, 1);
  monitor.start(10);
  await new Promise((resolve) => setTimeout(resolve, 60));
  await monitor.stop();
  const after = listings;
  assert.ok(after > 2, `the timer collected (${after})`);
  await new Promise((resolve) => setTimeout(resolve, 40));
  assert.equal(listings, after, 'no collection after stop');
});

test('LagMonitor stops without waiting out a collection Kafka never answers', async () => {
  const { admin, lag } = fakeMesh();
  let asked = false;
  const monitor = new LagMonitor({
    // An unreachable broker: the admin's retries outlast any grace period.
    admin: {
      ...admin,
      listGroups: () => {
        asked = true;
        return new Promise<string[]>(() => undefined);
      },
    },
    lag,
    prefix: 'm.',
    ownGroups: () => [],
  });
  monitor.start(10_000);
  assert.equal(asked, true, 'a collection is under way');
  const started = performance.now();
  await monitor.stop(200);
  const took = performance.now() - started;
  assert.ok(took >= 190 && took < 1_000, `the stop took ${Math.round(took)} ms, its bound is 200`);
});

test('renderDashboard embeds its config so that no value can close the script', () => {
  const page = renderDashboard({ dlqUrl: 'http://dlq:8084', topicPrefix: 'm.</script><b>' });
  assert.match(page, /^<!doctype html>/i);
  const config = /<script id="mesh-config" type="application\/json">([^<]*)<\/script>/.exec(page);
  assert.ok(config?.[1] !== undefined);
  assert.deepEqual(JSON.parse(config[1]), {
    dlqUrl: 'http://dlq:8084',
    topicPrefix: 'm.</script><b>',
  });
  assert.ok(page.includes('id="total-lag"'));
  assert.ok(!/<(script|link)[^>]+(src|href)="https?:/i.test(page), 'no CDN: nothing is fetched');
});
