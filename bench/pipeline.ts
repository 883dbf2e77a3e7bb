/**
 * How a pipeline of tasks is driven and timed, the same way for the mesh and for the raw kafkajs
 * pipeline: tasks are published by this process (each side through its own client), and the task
 * outcomes are read from the output topic by a consumer in this process, so both ends of every
 * latency are on one clock.
 *
 * - Saturation: a closed loop that keeps a window of tasks outstanding, so the pipeline always has
 *   more queued than it can take; the rate is the completions of a measured window after a warm-up.
 * - Latency: an open-loop schedule at a fixed rate (tasks sent on time whatever the pipeline does),
 *   each task timed from just before its publish to the arrival of its outcome.
 */
import { randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { GroupConsumer, type ConsumedRecord, type Kafka } from '@mesh/kafka';
import type { RecordTime } from './plain-kafkajs.ts';
import { latencySummary, percentile, round } from './support.ts';

export interface Arrival {
  /** performance.now() when it arrived … */
  at: number;
  /** … and Date.now(), to compare with record timestamps. */
  wall: number;
  ok: boolean;
}

/** Reads a pipeline's output topic and notes when each task's outcome arrived. */
export class OutputWatcher {
  readonly arrivals = new Map<string, Arrival>();
  /** Outcomes seen again for a task that already had one (redeliveries), counted, not timed. */
  duplicates = 0;
  readonly #consumer: GroupConsumer;

  private constructor(consumer: GroupConsumer) {
    this.#consumer = consumer;
  }

  /**
   * Joins a fresh group on `topic` and resolves once it owns the topic's partitions.
   * `classify` names the task of a record and whether it is a success; undefined skips the record.
   */
  static async start(
    kafka: Kafka,
    topic: string,
    classify: (record: ConsumedRecord) => { taskId: string; ok: boolean } | undefined,
  ): Promise<OutputWatcher> {
    const consumer = new GroupConsumer(kafka, {
      groupId: `bench-watch-${randomUUID()}`,
      heartbeatIntervalMs: 1_000,
      sessionTimeoutMs: 10_000,
    });
    const watcher = new OutputWatcher(consumer);
    let assigned: (() => void) | undefined;
    const joined = new Promise<void>((resolve) => (assigned = resolve));
    await consumer.start([topic], {
      take: (_topic, _partition, records) => {
        const at = performance.now();
        const wall = Date.now();
        for (const record of records) {
          const outcome = classify(record);
          if (outcome === undefined) continue;
          if (watcher.arrivals.has(outcome.taskId)) watcher.duplicates += 1;
          else watcher.arrivals.set(outcome.taskId, { at, wall, ok: outcome.ok });
        }
        return records.length;
      },
      assigned: () => assigned?.(),
    });
    await joined;
    return watcher;
  }

  /**
   * Resolves once every task of `ids` has an outcome.
   * @throws Error when no new outcome arrives for `stallMs`, naming how many are missing.
   */
  async waitFor(ids: string[], stallMs = 60_000): Promise<void> {
    let missing = ids.filter((id) => !this.arrivals.has(id));
    let movedAt = performance.now();
    while (missing.length > 0) {
      await sleep(20);
      const still = missing.filter((id) => !this.arrivals.has(id));
      if (still.length < missing.length) movedAt = performance.now();
      else if (performance.now() - movedAt > stallMs)
        throw new Error(
          `${still.length} of ${ids.length} tasks have no outcome after ${stallMs} ms`,
        );
      missing = still;
    }
  }

  async stop(): Promise<void> {
    await this.#consumer.stop();
  }
}

/** Publishes the requests of tasks; resolves once Kafka acknowledged them. */
export type Publish = (taskIds: string[]) => Promise<void>;

export function taskIds(prefix: string, count: number): string[] {
  const run = randomUUID().slice(0, 8);
  return Array.from({ length: count }, (_, i) => `${prefix}-${run}-${i}`);
}

export interface SaturationResult {
  /** Tasks completed per second in the measured window. */
  tasks_per_s: number;
  /** Tasks completed in the measured window. */
  completed: number;
  /** Tasks published in all (warm-up, window and the drain after it). */
  tasks: number;
  window_tasks: number;
  seconds: number;
  failed: number;
}

/**
 * Closed loop: keeps `window` tasks outstanding (a finished task is replaced by a new one, published
 * in batches), so the pipeline always has more work queued than it can take. Completions are counted
 * over `seconds` after `warmupSeconds`; then the loop stops publishing and waits for the rest.
 */
export async function saturation(
  publish: Publish,
  watcher: OutputWatcher,
  name: string,
  options: { window: number; seconds: number; warmupSeconds?: number; stallMs?: number },
): Promise<SaturationResult> {
  const run = randomUUID().slice(0, 8);
  const ids: string[] = [];
  const base = watcher.arrivals.size;
  const done = (): number => watcher.arrivals.size - base;
  const warmup = (options.warmupSeconds ?? 3) * 1_000;
  const refill = Math.max(1, Math.floor(options.window / 20));
  const started = performance.now();
  let from: { at: number; done: number } | undefined;
  let to: { at: number; done: number } | undefined;
  while (to === undefined) {
    const now = performance.now();
    if (from === undefined && now - started >= warmup) from = { at: now, done: done() };
    if (from !== undefined && now - from.at >= options.seconds * 1_000) {
      to = { at: now, done: done() };
      break;
    }
    const deficit = options.window - (ids.length - done());
    if (deficit >= refill) {
      const batch = Array.from({ length: deficit }, (_, i) => `${name}-${run}-${ids.length + i}`);
      ids.push(...batch);
      await publish(batch);
    } else {
      await sleep(5);
    }
  }
  await watcher.waitFor(ids, options.stallMs);
  const completed = to.done - (from?.done ?? 0);
  return {
    tasks_per_s: round(completed / ((to.at - (from?.at ?? started)) / 1_000), 1),
    completed,
    tasks: ids.length,
    window_tasks: options.window,
    seconds: options.seconds,
    failed: ids.filter((id) => watcher.arrivals.get(id)?.ok === false).length,
  };
}

export interface LatencyResult extends ReturnType<typeof latencySummary> {
  rate_per_s: number;
  /** The rate the schedule actually achieved (publishes started per second). */
  sent_per_s: number;
  seconds: number;
  failed: number;
}

/** Open loop: `rate` tasks per second for `seconds`, each timed from its publish to its outcome. */
export async function latency(
  publish: Publish,
  watcher: OutputWatcher,
  ids: string[],
  rate: number,
  options: { tickMs?: number; stallMs?: number; sentWall?: Map<string, number> } = {},
): Promise<LatencyResult> {
  const tickMs = options.tickMs ?? 5;
  const sentAt = new Map<string, number>();
  const sentWall = options.sentWall ?? new Map<string, number>();
  const sends: Promise<void>[] = [];
  const started = performance.now();
  let next = 0;
  while (next < ids.length) {
    const due = Math.min(
      ids.length,
      Math.floor(((performance.now() - started) / 1_000) * rate) + 1,
    );
    if (due > next) {
      const batch = ids.slice(next, due);
      const now = performance.now();
      const wall = Date.now();
      for (const id of batch) {
        sentAt.set(id, now);
        sentWall.set(id, wall);
      }
      sends.push(publish(batch));
      next = due;
    }
    await sleep(tickMs);
  }
  const sentSeconds = (performance.now() - started) / 1_000;
  await Promise.all(sends);
  await watcher.waitFor(ids, options.stallMs);
  const latencies = ids.map(
    (id) => (watcher.arrivals.get(id) as Arrival).at - (sentAt.get(id) as number),
  );
  return {
    rate_per_s: round(rate, 1),
    sent_per_s: round(ids.length / sentSeconds, 1),
    seconds: round(sentSeconds, 1),
    failed: ids.filter((id) => watcher.arrivals.get(id)?.ok === false).length,
    ...latencySummary(latencies),
  };
}

/** The header `name` of a record as text. */
export function header(record: ConsumedRecord, name: string): string | undefined {
  const value = record.headers[name];
  const one = Array.isArray(value) ? value[value.length - 1] : value;
  return one === undefined ? undefined : one.toString();
}

/** The topics of each step of a fan-out pipeline, to split its latency by hop. */
export interface Steps {
  request: string;
  work: string[];
  results: string;
  outputs: string;
}

export const hopNames = ['publish', 'dispatch', 'agents', 'join', 'delivery'] as const;

/**
 * A task's latency split by hop, from the CreateTime of its records (ms resolution, one clock): the
 * client's publish (send → request record), dispatch (request → the last of its subtasks: the
 * orchestrator or planner), agents (→ the last result: worker or agents), join (→ the outcome:
 * aggregator or joiner), delivery (→ its arrival at this process). p50 and p95 over the tasks.
 */
export function hopBreakdown(
  records: RecordTime[],
  steps: Steps,
  ids: string[],
  sentWall: Map<string, number>,
  watcher: OutputWatcher,
): Record<(typeof hopNames)[number], { p50_ms: number | null; p95_ms: number | null }> & {
  tasks: number;
} {
  const wanted = new Set(ids);
  const work = new Set(steps.work);
  const byTask = new Map<
    string,
    { request?: number; work?: number; results?: number; output?: number }
  >();
  for (const r of records) {
    // The mesh keys a subtask and its result by `<task id>/<node id>`, to spread a fan-out.
    const task = wanted.has(r.key) ? r.key : r.key.slice(0, r.key.lastIndexOf('/'));
    if (!wanted.has(task)) continue;
    let t = byTask.get(task);
    if (t === undefined) byTask.set(task, (t = {}));
    if (r.topic === steps.request) t.request = r.ts;
    else if (work.has(r.topic)) t.work = Math.max(t.work ?? 0, r.ts);
    else if (r.topic === steps.results) t.results = Math.max(t.results ?? 0, r.ts);
    else if (r.topic === steps.outputs) t.output ??= r.ts;
  }
  const hops: Record<(typeof hopNames)[number], number[]> = {
    publish: [],
    dispatch: [],
    agents: [],
    join: [],
    delivery: [],
  };
  let complete = 0;
  for (const id of ids) {
    const t = byTask.get(id);
    const sent = sentWall.get(id);
    const arrived = watcher.arrivals.get(id)?.wall;
    if (
      t?.request === undefined ||
      t.work === undefined ||
      t.results === undefined ||
      t.output === undefined ||
      sent === undefined ||
      arrived === undefined
    )
      continue;
    complete += 1;
    hops.publish.push(t.request - sent);
    hops.dispatch.push(t.work - t.request);
    hops.agents.push(t.results - t.work);
    hops.join.push(t.output - t.results);
    hops.delivery.push(arrived - t.output);
  }
  const summary = (values: number[]) => ({
    p50_ms: percentile(values, 50),
    p95_ms: percentile(values, 95),
  });
  return {
    tasks: complete,
    publish: summary(hops.publish),
    dispatch: summary(hops.dispatch),
    agents: summary(hops.agents),
    join: summary(hops.join),
    delivery: summary(hops.delivery),
  };
}
