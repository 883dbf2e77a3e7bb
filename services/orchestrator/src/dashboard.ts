/**
 * The built-in dashboard, for people who run the mesh without Grafana: `GET /dashboard` serves one
 * self-contained page (dashboard.html: inline CSS and JS, charts drawn on a canvas, no CDN), and
 * `GET /v1/lag` answers mesh-wide consumer lag and topic throughput as JSON.
 *
 * Lag covers every consumer group under the topic prefix, not only the orchestrator's own: a timer
 * lists the broker's groups, asks each for the topics it has committed offsets on, and has the
 * runtime's LagCollector watch them, so the orchestrator's `mesh_consumer_lag` gauges cover the whole
 * mesh too. Answers come from the latest collection, never from a broker call per request.
 */
import { readFileSync } from 'node:fs';
import { resultWithin, topicNames, unreadWorkTopics, type MeshRuntime } from '@mesh/runtime';
import type { ServiceContext } from '@mesh/service';
import type { LagSample } from '@mesh/telemetry';

/** One partition of a group, as `/v1/lag` shows it. `committed` is -1 when the group never committed. */
export interface PartitionView {
  topic: string;
  partition: number;
  committed: number;
  end: number;
  lag: number;
  lagSeconds: number;
}

/** A group's lag: the sum over its partitions; `lagSeconds` is the oldest unconsumed event's age. */
export interface GroupLag {
  group: string;
  lag: number;
  lagSeconds: number;
  partitions: PartitionView[];
  /**
   * No such group exists: a work topic nothing reads, shown under the group its worker would have.
   * Its events wait for an agent nobody runs.
   */
  unread?: true;
}

/** A topic's end offset (summed over partitions) and its write rate since the previous collection. */
export interface TopicRate {
  topic: string;
  end: number;
  ratePerSec: number;
}

export interface HistoryPoint {
  at: string;
  byGroup: Record<string, number>;
}

export interface LagView {
  at: string;
  groups: GroupLag[];
  topics: TopicRate[];
  /** Set when the latest collection failed: the figures are those of the collection at `at`. */
  error?: string;
  history?: HistoryPoint[];
}

/** A recorded end offset of a topic, for the next rate. */
export interface TopicEnd {
  time: number;
  end: number;
}

export interface TimedPoint {
  time: number;
  byGroup: Record<string, number>;
}

/** The admin calls the monitor needs (MeshAdmin's). */
export type LagAdmin = Pick<
  MeshRuntime['admin'],
  'listGroups' | 'listTopics' | 'committedTopics' | 'endOffsets'
>;

export interface LagMonitorOptions {
  admin: LagAdmin;
  /** The collector that reads the lag and sets the gauges (the runtime's). */
  lag: Pick<MeshRuntime['lag'], 'watch' | 'collect'>;
  /** Only groups and topics whose names start with it belong to this mesh. */
  prefix: string;
  /** Groups this process consumes in: already watched on every topic they subscribe to. */
  ownGroups: () => Iterable<string>;
  /** How much history `/v1/lag?history=1` keeps (default 10 minutes). */
  windowMs?: number;
  /**
   * How old a listing of the cluster's topics may be (default 10 s): a new topic shows up that much
   * later, and each orchestrator replica reads the metadata of every topic in the cluster once per
   * 10 s instead of every 2 s. After a failed collection the topics are read afresh.
   */
  topicsMaxAgeMs?: number;
  onError?: (error: unknown) => void;
}

export const defaultWindowMs = 600_000;
export const defaultIntervalMs = 2_000;
export const defaultTopicsMaxAgeMs = 10_000;
/** History entries kept whatever the window, so a fast timer cannot grow it without bound. */
const maxHistory = 1_000;

/**
 * Events per second written to each topic between two collections: the change of the end offset
 * over the time between them. 0 for a topic seen for the first time, and for one whose end went back
 * (deleted and created again); never negative.
 */
export function topicRates(
  previous: ReadonlyMap<string, TopicEnd>,
  ends: readonly { topic: string; end: number }[],
  now: number,
): TopicRate[] {
  return ends.map(({ topic, end }) => {
    const before = previous.get(topic);
    const seconds = before === undefined ? 0 : (now - before.time) / 1_000;
    const rate =
      before === undefined || seconds <= 0 || end < before.end ? 0 : (end - before.end) / seconds;
    return { topic, end, ratePerSec: Math.round(rate * 100) / 100 };
  });
}

/**
 * Drops, in place, the points older than `windowMs` before `now` and any beyond the newest `max`.
 * Points are in time order. Returns the same array.
 */
export function trimHistory<T extends { time: number }>(
  history: T[],
  now: number,
  windowMs: number,
  max = maxHistory,
): T[] {
  const oldest = now - windowMs;
  let drop = 0;
  while (drop < history.length && (history[drop]?.time ?? 0) < oldest) drop += 1;
  drop = Math.max(drop, history.length - max);
  if (drop > 0) history.splice(0, drop);
  return history;
}

/** Groups the collector's samples: lag summed over partitions, the oldest event's age, sorted. */
export function groupLags(samples: readonly LagSample[]): GroupLag[] {
  const byGroup = new Map<string, GroupLag>();
  for (const s of samples) {
    let group = byGroup.get(s.group);
    if (group === undefined) {
      group = { group: s.group, lag: 0, lagSeconds: 0, partitions: [] };
      byGroup.set(s.group, group);
    }
    const lagSeconds = Math.round(s.lagSeconds * 1_000) / 1_000;
    group.lag += s.lag;
    group.lagSeconds = Math.max(group.lagSeconds, lagSeconds);
    group.partitions.push({
      topic: s.topic,
      partition: s.partition,
      committed: s.committed,
      end: s.high,
      lag: s.lag,
      lagSeconds,
    });
  }
  const groups = [...byGroup.values()].sort((a, b) => a.group.localeCompare(b.group));
  for (const g of groups)
    g.partitions.sort((a, b) => a.topic.localeCompare(b.topic) || a.partition - b.partition);
  return groups;
}

/**
 * Collects mesh-wide lag and topic throughput on a timer and keeps the latest answer and a bounded
 * history. One collection runs at a time; a failed one is reported to `onError` and leaves the
 * previous figures in place, marked with the error.
 */
export class LagMonitor {
  readonly #options: LagMonitorOptions;
  readonly #windowMs: number;
  /** Topics each discovered group is watched on (only groups of other processes). */
  readonly #watched = new Map<string, string[]>();
  /** Work topics no group reads, by the group their worker would have. */
  #unread = new Map<string, string>();
  #ends = new Map<string, TopicEnd>();
  readonly #history: TimedPoint[] = [];
  #latest: LagView | undefined;
  /** The last collection's failure, if it failed. */
  #error: string | undefined;
  #running: Promise<LagView> | undefined;
  #timer: NodeJS.Timeout | undefined;

  constructor(options: LagMonitorOptions) {
    this.#options = options;
    this.#windowMs = options.windowMs ?? defaultWindowMs;
  }

  /** Collects once now and then every `intervalMs`. */
  start(intervalMs = defaultIntervalMs): void {
    const run = (): void => {
      if (this.#running !== undefined) return;
      this.collect().catch((error: unknown) => this.#options.onError?.(error));
    };
    run();
    this.#timer = setInterval(run, intervalMs);
    this.#timer.unref();
  }

  /**
   * Stops the timer and waits up to `stopWaitMs` for a collection under way. With Kafka answering it
   * ends in milliseconds; with Kafka unreachable it is left to fail on its own, or the admin's
   * retries (15–20 s) would hold the orchestrator's stop past a deployment's grace period.
   */
  async stop(stopWaitMs = 1_000): Promise<void> {
    clearInterval(this.#timer);
    this.#timer = undefined;
    const running = this.#running;
    if (running === undefined) return;
    await resultWithin(
      running.then(
        () => undefined,
        () => undefined,
      ),
      stopWaitMs,
      undefined,
    );
  }

  /**
   * Discovers the mesh's groups, collects their lag and the topics' end offsets, and records the
   * result. Concurrent calls share one collection. @throws what the admin or the collector throws.
   */
  collect(now?: number): Promise<LagView> {
    this.#running ??= this.#collect(now ?? Date.now())
      .then(
        (view) => {
          this.#error = undefined;
          return view;
        },
        (error: unknown) => {
          this.#error = error instanceof Error ? error.message : String(error);
          throw error;
        },
      )
      .finally(() => {
        this.#running = undefined;
      });
    return this.#running;
  }

  /** The latest figures, collecting first when there are none yet. */
  async view(withHistory: boolean): Promise<LagView> {
    const latest = this.#latest ?? (await this.collect());
    return {
      ...latest,
      ...(this.#error === undefined ? {} : { error: this.#error }),
      ...(withHistory
        ? {
            history: this.#history.map((p) => ({
              at: new Date(p.time).toISOString(),
              byGroup: p.byGroup,
            })),
          }
        : {}),
    };
  }

  async #collect(now: number): Promise<LagView> {
    const { admin, lag, prefix } = this.#options;
    // A topic deleted since the listing fails the collection: the next one lists them again.
    const maxAgeMs =
      this.#error === undefined ? (this.#options.topicsMaxAgeMs ?? defaultTopicsMaxAgeMs) : 0;
    const [allGroups, allTopics] = await Promise.all([
      admin.listGroups(),
      admin.listTopics({ maxAgeMs }),
    ]);
    const topics = allTopics.filter((t) => t.startsWith(prefix)).sort();
    const existing = new Set(topics);
    const own = new Set(this.#options.ownGroups());
    const groups = new Set(allGroups.filter((g) => g.startsWith(prefix)));
    await this.#discover(groups, own, existing);

    const samples = await lag.collect(now);
    const shown = groupLags(
      samples.filter((s) => groups.has(s.group) || own.has(s.group) || this.#unread.has(s.group)),
    );
    for (const group of shown) if (this.#unread.has(group.group)) group.unread = true;

    const ends = await Promise.all(
      topics.map(async (topic) => ({
        topic,
        end: (await admin.endOffsets(topic)).reduce((sum, p) => sum + p.high, 0),
      })),
    );
    const rates = topicRates(this.#ends, ends, now);
    this.#ends = new Map(ends.map(({ topic, end }) => [topic, { time: now, end }]));

    this.#history.push({
      time: now,
      byGroup: Object.fromEntries(shown.map((g) => [g.group, g.lag])),
    });
    trimHistory(this.#history, now, this.#windowMs);
    this.#latest = { at: new Date(now).toISOString(), groups: shown, topics: rates };
    return this.#latest;
  }

  /**
   * Watches each group of the mesh on the topics it has committed offsets on (added to those seen
   * before, less topics deleted since), and each work topic nothing reads. A group gone from the
   * broker is watched on no topic, which the admin answers with the group's committed topics: none.
   */
  async #discover(
    groups: ReadonlySet<string>,
    own: ReadonlySet<string>,
    existing: ReadonlySet<string>,
  ): Promise<void> {
    const { admin, lag } = this.#options;
    const found = await Promise.all(
      [...groups]
        .filter((g) => !own.has(g))
        .map(async (group) => ({ group, committed: await admin.committedTopics(group) })),
    );
    for (const { group, committed } of found) {
      const before = this.#watched.get(group) ?? [];
      const next = [...new Set([...before, ...committed])].filter((t) => existing.has(t)).sort();
      if (next.length === 0 && before.length === 0) continue;
      if (next.join('\n') === before.join('\n')) continue;
      lag.watch(group, next);
      if (next.length === 0) this.#watched.delete(group);
      else this.#watched.set(group, next);
    }
    for (const group of [...this.#watched.keys()]) {
      if (groups.has(group)) continue;
      lag.watch(group, []);
      this.#watched.delete(group);
    }
    // A work topic whose worker group does not exist, and that no other group reads, is work that
    // waits for ever: watched under that group (never committed: all its events are lag), so the
    // table, the chart and the mesh_consumer_lag gauge show it.
    const unread = new Map(
      unreadWorkTopics(
        topicNames(this.#options.prefix),
        existing,
        new Set([...this.#watched.values()].flat()),
        groups,
      ).map(({ group, topic }) => [group, topic]),
    );
    for (const [group, topic] of unread)
      if (this.#unread.get(group) !== topic) lag.watch(group, [topic]);
    for (const group of this.#unread.keys())
      if (!unread.has(group) && !this.#watched.has(group)) lag.watch(group, []);
    this.#unread = unread;
  }
}

const pageTemplate = readFileSync(new URL('./dashboard.html', import.meta.url), 'utf8');
const configScript = /<script id="mesh-config" type="application\/json">[^<]*<\/script>/;

/**
 * The dashboard page with its configuration embedded (what the browser cannot ask for itself: the
 * dlq-triage URL it fetches dead letters from). `<` is escaped so no value can close the script.
 */
export function renderDashboard(config: { dlqUrl: string; topicPrefix: string }): string {
  const json = JSON.stringify(config).replace(/</g, '\\u003c');
  return pageTemplate.replace(
    configScript,
    () => `<script id="mesh-config" type="application/json">${json}</script>`,
  );
}

const lagQuery = {
  type: 'object',
  additionalProperties: false,
  properties: { history: { type: 'string', enum: ['0', '1', 'false', 'true'] } },
} as const;

/**
 * Registers `GET /dashboard` and `GET /v1/lag` and starts collecting lag every 2 s. Returns the
 * function that stops the collection (to compose with the service's own stop).
 */
export function registerDashboard(
  { app, runtime, config }: ServiceContext,
  options: { intervalMs?: number } = {},
): () => Promise<void> {
  let lastError: string | undefined;
  const monitor = new LagMonitor({
    admin: runtime.admin,
    lag: runtime.lag,
    prefix: config.topicPrefix,
    ownGroups: () => runtime.consumers.map((c) => c.groupId),
    onError: (error) => {
      // One line per distinct failure, not one every two seconds while the broker is away.
      const message = error instanceof Error ? error.message : String(error);
      if (message !== lastError) runtime.log.warn({ err: message }, 'lag collection failed');
      lastError = message;
    },
  });
  const page = renderDashboard({
    dlqUrl: (config.env.MESH_DLQ_URL ?? 'http://127.0.0.1:8084').replace(/\/+$/, ''),
    topicPrefix: config.topicPrefix,
  });
  app.get('/dashboard', async (_request, reply) =>
    reply
      .header('content-type', 'text/html; charset=utf-8')
      .header('cache-control', 'no-store')
      .send(page),
  );
  app.get('/v1/lag', { schema: { querystring: lagQuery } }, async (request) => {
    const { history } = request.query as { history?: string };
    return monitor.view(history === '1' || history === 'true');
  });
  monitor.start(options.intervalMs ?? defaultIntervalMs);
  return () => monitor.stop();
}
