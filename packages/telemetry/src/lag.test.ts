// node:test's test() and describe() return promises the runner itself awaits.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { LagCollector, timeOfOffset, type LagReading, type LagSource } from './lag.ts';
import { createMetrics } from './metrics.ts';

describe('timeOfOffset', () => {
  const points = [
    { time: 1_000, offset: 0 },
    { time: 2_000, offset: 10 },
    { time: 4_000, offset: 10 },
    { time: 5_000, offset: 30 },
  ];

  test('interpolates between the samples around the offset', () => {
    // The end passed offset 4 when it reached 5, half-way from 0 to 10.
    assert.equal(timeOfOffset(points, 4), 1_500);
    assert.equal(timeOfOffset(points, 0), 1_100);
    assert.equal(timeOfOffset(points, 9), 2_000);
  });

  test('uses the last sample at the same end offset as the start of the next interval', () => {
    // Nothing was written between 2s and 4s, so offset 19 (end 20) was written half-way from 4s to 5s.
    assert.equal(timeOfOffset(points, 19), 4_500);
    assert.equal(timeOfOffset(points, 10), 4_050);
  });

  test('before the first sample it is the first sample time', () => {
    assert.equal(timeOfOffset([{ time: 7_000, offset: 100 }], 3), 7_000);
  });

  test('at or past the last end offset it is the last sample time', () => {
    assert.equal(timeOfOffset(points, 30), 5_000);
    assert.equal(timeOfOffset(points, 1_000), 5_000);
  });

  test('with no samples it is now', () => {
    const before = Date.now();
    const time = timeOfOffset([], 5);
    assert.ok(time >= before && time <= Date.now());
  });
});

/**
 * An in-memory topic of one or more partitions: each partition is the list of its records' write
 * times, so offset i was written at times[i]; the group's committed offsets are set by the test.
 */
class FakeLog implements LagSource {
  readonly writes = new Map<number, number[]>();
  readonly committed = new Map<number, number>();
  readonly lagCalls: { group: string; topics: string[] }[] = [];
  readonly topic: string;

  constructor(topic: string, partitions: number) {
    this.topic = topic;
    for (let p = 0; p < partitions; p += 1) this.writes.set(p, []);
  }

  write(partition: number, ...times: number[]): void {
    this.writes.get(partition)?.push(...times);
  }

  async lag(group: string, topics: string[]): Promise<LagReading[]> {
    this.lagCalls.push({ group, topics });
    return [...this.writes].map(([partition, times]) => {
      const committed = this.committed.get(partition) ?? -1;
      const high = times.length;
      return {
        topic: this.topic,
        partition,
        committed,
        low: 0,
        high,
        lag: high - (committed < 0 ? 0 : committed),
      };
    });
  }

  /** Kafka's offsets-for-times: the first offset written at or after `timestamp`, else -1. */
  async offsetsAt(
    _topic: string,
    timestamp: number,
  ): Promise<{ partition: number; offset: number }[]> {
    return [...this.writes].map(([partition, times]) => ({
      partition,
      offset: times.findIndex((time) => time >= timestamp),
    }));
  }
}

const t0 = 1_700_000_000_000;

describe('LagCollector', () => {
  test('no lag gives lag 0 and lagSeconds 0', async () => {
    const log = new FakeLog('mesh.requests', 1);
    log.write(0, t0 - 30_000, t0 - 20_000, t0 - 10_000);
    log.committed.set(0, 3);
    const collector = new LagCollector(log, { orchestrator: ['mesh.requests'] });
    const [sample, ...rest] = await collector.collect(t0);
    assert.deepEqual(rest, []);
    assert.deepEqual(sample, {
      topic: 'mesh.requests',
      partition: 0,
      committed: 3,
      low: 0,
      high: 3,
      lag: 0,
      group: 'orchestrator',
      lagSeconds: 0,
    });
    assert.deepEqual(log.lagCalls, [{ group: 'orchestrator', topics: ['mesh.requests'] }]);
  });

  test('lagSeconds estimates the age of the oldest unconsumed event and grows with it', async () => {
    const log = new FakeLog('mesh.results', 1);
    // One event a second for 100 s up to t0; the consumer has read all of them.
    for (let i = 1; i <= 100; i += 1) log.write(0, t0 - 100_000 + i * 1_000);
    log.committed.set(0, 100);
    const collector = new LagCollector(log, { aggregator: ['mesh.results'] });
    assert.equal((await collector.collect(t0))[0]?.lagSeconds, 0);

    // Ten more events, one a second, while the consumer is stuck at offset 100 (written at t0 + 1s).
    for (let i = 1; i <= 10; i += 1) log.write(0, t0 + i * 1_000);
    const second = (await collector.collect(t0 + 10_000))[0];
    assert.equal(second?.lag, 10);
    assert.equal(second?.lagSeconds, 9);

    // Nothing new is written and nothing consumed: the oldest event is ten seconds older.
    const third = (await collector.collect(t0 + 20_000))[0];
    assert.equal(third?.lag, 10);
    assert.equal(third?.lagSeconds, 19);
    assert.equal(collector.latest[0]?.lagSeconds, 19);

    // The consumer catches up: back to zero.
    log.committed.set(0, 110);
    const fourth = (await collector.collect(t0 + 21_000))[0];
    assert.equal(fourth?.lag, 0);
    assert.equal(fourth?.lagSeconds, 0);
  });

  test('events written before the collector started are dated by the offset-for-time probes', async () => {
    const log = new FakeLog('mesh.work.writer', 1);
    // One event a second over the last two hours; the group is stuck at the event written 30 min ago.
    const count = 7_200;
    for (let i = 0; i < count; i += 1) log.write(0, t0 - (count - i) * 1_000 + 1);
    const stuckAt = count - 1_800;
    log.committed.set(0, stuckAt);
    const collector = new LagCollector(log, { 'worker.writer': ['mesh.work.writer'] });
    const sample = (await collector.collect(t0))[0];
    assert.equal(sample?.lag, 1_800);
    const trueAge = 1_800;
    assert.ok(sample !== undefined);
    // Between the 1 h and 10 min probes the estimate is linear, and the rate is constant here.
    assert.ok(Math.abs(sample.lagSeconds - trueAge) <= 2, `estimated ${sample.lagSeconds}s`);
  });

  test('a group without a committed offset is measured from the low watermark', async () => {
    const log = new FakeLog('mesh.control', 1);
    for (let i = 1; i <= 60; i += 1) log.write(0, t0 - 60_000 + i * 1_000);
    const collector = new LagCollector(log, { orchestrator: ['mesh.control'] });
    const sample = (await collector.collect(t0))[0];
    assert.equal(sample?.committed, -1);
    assert.equal(sample?.lag, 60);
    assert.ok(
      sample !== undefined && sample.lagSeconds > 50 && sample.lagSeconds <= 60,
      String(sample?.lagSeconds),
    );
  });

  test('sets the lag gauges per group, topic and partition', async () => {
    const metrics = createMetrics({ defaultMetrics: false });
    const log = new FakeLog('mesh.results', 2);
    for (let i = 1; i <= 20; i += 1) log.write(0, t0 + i * 1_000);
    log.write(1, t0 + 1_000);
    log.committed.set(0, 20);
    log.committed.set(1, 1);
    const collector = new LagCollector(
      log,
      { aggregator: ['mesh.results'] },
      { lag: metrics.consumerLag, seconds: metrics.consumerLagSeconds },
    );
    await collector.collect(t0 + 20_000);
    for (let i = 21; i <= 25; i += 1) log.write(0, t0 + i * 1_000);
    const samples = await collector.collect(t0 + 30_000);
    assert.equal(samples.length, 2);

    const lag = await metrics.consumerLag.get();
    const seconds = await metrics.consumerLagSeconds.get();
    const valueOf = (values: typeof lag.values, partition: string): number | undefined =>
      values.find(
        (v) =>
          v.labels.group === 'aggregator' &&
          v.labels.topic === 'mesh.results' &&
          v.labels.partition === partition,
      )?.value;
    assert.equal(valueOf(lag.values, '0'), 5);
    assert.equal(valueOf(lag.values, '1'), 0);
    assert.equal(valueOf(seconds.values, '1'), 0);
    const partition0 = samples.find((s) => s.partition === 0);
    // Its oldest unconsumed event was written at t0 + 21s, 9s before this collection.
    assert.ok(
      partition0 !== undefined && partition0.lagSeconds >= 5 && partition0.lagSeconds <= 10,
    );
    assert.equal(valueOf(seconds.values, '0'), partition0.lagSeconds);

    const text = await metrics.registry.metrics();
    assert.match(
      text,
      /mesh_consumer_lag\{group="aggregator",topic="mesh.results",partition="0"\} 5/,
    );
  });

  test('watch adds a group to later collections', async () => {
    const log = new FakeLog('mesh.dlq', 1);
    const collector = new LagCollector(log, {});
    assert.deepEqual(await collector.collect(t0), []);
    collector.watch('dlq-triage', ['mesh.dlq']);
    const samples = await collector.collect(t0 + 1_000);
    assert.equal(samples.length, 1);
    assert.equal(samples[0]?.group, 'dlq-triage');
  });

  test('a failing source makes collect reject', async () => {
    const source: LagSource = {
      lag: async () => {
        throw new Error('broker unreachable');
      },
      offsetsAt: async () => [],
    };
    const collector = new LagCollector(source, { g: ['t'] });
    await assert.rejects(collector.collect(t0), /broker unreachable/);
  });
});
