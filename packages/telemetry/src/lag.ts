/**
 * Consumer lag from the broker: committed offsets vs end offsets, per group/topic/partition, and lag
 * in seconds, the estimated age of the oldest unconsumed event.
 *
 * Kafka keeps no time per offset that an admin client can read cheaply, so lag in seconds is
 * interpolated, as kafka-lag-exporter does: each collection records (time, end offset) per
 * partition; the age of the committed offset is now minus the time at which the end offset passed
 * it. Offsets written before the collector started are placed by a few offset-for-timestamp probes.
 */
import type { Gauge } from 'prom-client';

export interface LagReading {
  topic: string;
  partition: number;
  committed: number;
  low: number;
  high: number;
  lag: number;
}

export interface LagSource {
  lag(groupId: string, topics: string[]): Promise<LagReading[]>;
  offsetsAt(topic: string, timestamp: number): Promise<{ partition: number; offset: number }[]>;
}

export interface LagSample extends LagReading {
  group: string;
  /** Estimated age in seconds of the oldest unconsumed event; 0 when there is no lag. */
  lagSeconds: number;
}

interface Point {
  time: number;
  offset: number;
}

const probeAgesMs = [86_400_000, 3_600_000, 600_000, 60_000, 10_000];
const maxPoints = 720;

export class LagCollector {
  readonly #source: LagSource;
  readonly #groups: Map<string, string[]>;
  readonly #history = new Map<string, Point[]>();
  readonly #seeded = new Set<string>();
  readonly #gauges:
    | {
        lag: Gauge<'group' | 'topic' | 'partition'>;
        seconds: Gauge<'group' | 'topic' | 'partition'>;
      }
    | undefined;
  #latest: LagSample[] = [];

  constructor(
    source: LagSource,
    groups: Record<string, string[]>,
    gauges?: {
      lag: Gauge<'group' | 'topic' | 'partition'>;
      seconds: Gauge<'group' | 'topic' | 'partition'>;
    },
  ) {
    this.#source = source;
    this.#groups = new Map(Object.entries(groups));
    this.#gauges = gauges;
  }

  get latest(): LagSample[] {
    return this.#latest;
  }

  watch(groupId: string, topics: string[]): void {
    this.#groups.set(groupId, topics);
  }

  /** Reads lag of every watched group once and updates the gauges. Throws when the broker cannot be read. */
  async collect(now = Date.now()): Promise<LagSample[]> {
    const samples: LagSample[] = [];
    for (const [group, topics] of this.#groups) {
      const readings = await this.#source.lag(group, topics);
      for (const topic of new Set(readings.map((r) => r.topic))) await this.#seed(topic, now);
      for (const reading of readings) {
        const points = this.#record(reading.topic, reading.partition, now, reading.high);
        const from = reading.committed < 0 ? reading.low : Math.max(reading.committed, reading.low);
        const lagSeconds =
          reading.lag === 0 ? 0 : Math.max(0, (now - timeOfOffset(points, from)) / 1_000);
        samples.push({ ...reading, group, lagSeconds });
        const labels = { group, topic: reading.topic, partition: String(reading.partition) };
        this.#gauges?.lag.set(labels, reading.lag);
        this.#gauges?.seconds.set(labels, lagSeconds);
      }
    }
    this.#latest = samples;
    return samples;
  }

  async #seed(topic: string, now: number): Promise<void> {
    if (this.#seeded.has(topic)) return;
    this.#seeded.add(topic);
    for (const age of probeAgesMs) {
      const offsets = await this.#source.offsetsAt(topic, now - age);
      for (const { partition, offset } of offsets) {
        if (offset >= 0) this.#record(topic, partition, now - age, offset);
      }
    }
  }

  #record(topic: string, partition: number, time: number, offset: number): Point[] {
    const key = `${topic}\u0000${partition}`;
    let points = this.#history.get(key);
    if (points === undefined) this.#history.set(key, (points = []));
    const last = points[points.length - 1];
    if (last === undefined || time > last.time) points.push({ time, offset });
    else if (time < last.time) {
      points.push({ time, offset });
      points.sort((a, b) => a.time - b.time);
    }
    if (points.length > maxPoints) points.splice(0, points.length - maxPoints);
    return points;
  }
}

/**
 * The time at which the log's end reached past `offset`: the first sample whose end offset is above
 * it, interpolated linearly with the sample before. Before the first sample, the first sample's time.
 */
export function timeOfOffset(points: readonly Point[], offset: number): number {
  let previous: Point | undefined;
  for (const point of points) {
    if (point.offset > offset) {
      if (previous === undefined || point.offset === previous.offset) return point.time;
      const fraction = (offset + 1 - previous.offset) / (point.offset - previous.offset);
      return previous.time + Math.max(0, Math.min(1, fraction)) * (point.time - previous.time);
    }
    previous = point;
  }
  return points[points.length - 1]?.time ?? Date.now();
}
