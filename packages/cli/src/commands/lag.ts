/**
 * `mesh lag`: for every consumer group under the prefix, per topic and partition, the committed
 * offset, the end offset, the lag and the lag in seconds (the `LagCollector` of the services'
 * metrics), and the work topics no group reads at all. `--watch` redraws the table every interval
 * until Ctrl-C.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { topicNames, unreadWorkTopics } from '@mesh/runtime';
import { LagCollector, type LagSample } from '@mesh/telemetry';
import { flag, parseInterval, stringOption, type ParsedCommand } from '../args.ts';
import type { CliContext } from '../context.ts';
import { CliError, errorLine } from '../errors.ts';
import { table } from '../format.ts';
import { groupTopics } from '../groups.ts';
import { tailGroupPrefix } from './tail.ts';

export interface LagRow {
  group: string;
  topic: string;
  partition: number;
  /** Next offset the group will read; null when it has never committed on this partition. */
  committed: number | null;
  end: number;
  lag: number;
  lagSeconds: number;
}

export interface LagReport {
  at: string;
  prefix: string;
  groups: string[];
  /**
   * Work topics no consumer group reads, each under the worker group that would read it: the
   * assignments on them wait for an agent nobody runs. Their rows are in `partitions` too.
   */
  unread: { topic: string; agent: string; group: string }[];
  partitions: LagRow[];
}

/** The mesh's consumer groups: under the prefix, without the CLI's own throw-away tail groups. */
export function meshGroups(all: string[], prefix: string, only?: string): string[] {
  const ours = all.filter(
    (g) => g.startsWith(prefix) && !g.startsWith(`${prefix}${tailGroupPrefix}`),
  );
  if (only === undefined) return ours.sort();
  return ours.filter((g) => g === only || g === `${prefix}${only}`);
}

function rowOf(sample: LagSample): LagRow {
  return {
    group: sample.group,
    topic: sample.topic,
    partition: sample.partition,
    committed: sample.committed < 0 ? null : sample.committed,
    end: sample.high,
    lag: sample.lag,
    lagSeconds: Math.round(sample.lagSeconds * 10) / 10,
  };
}

class LagReader {
  readonly #ctx: CliContext;
  readonly #only: string | undefined;
  #collector: LagCollector | undefined;

  constructor(ctx: CliContext, only: string | undefined) {
    this.#ctx = ctx;
    this.#only = only;
  }

  async read(): Promise<LagReport> {
    const ctx = this.#ctx;
    const admin = await ctx.admin();
    const prefix = ctx.config.mesh.topicPrefix;
    const all = await ctx.kafkaStep(admin.listGroups());
    const groups = meshGroups(all, prefix, this.#only);
    const topics = await ctx.kafkaStep(
      groupTopics(ctx.kafka, groups),
      Math.max(15_000, ctx.config.timeoutMs),
    );
    this.#collector ??= new LagCollector(admin, {});
    const watched: string[] = [];
    for (const [group, list] of topics) {
      if (list.length === 0) continue;
      this.#collector.watch(group, list);
      watched.push(group);
    }
    // Work nothing reads would show nowhere: it is read under the group its worker would have.
    const unread = unreadWorkTopics(
      topicNames(prefix),
      await ctx.kafkaStep(admin.listTopics()),
      new Set([...topics.values()].flat()),
      new Set(all),
    ).filter(({ group }) => meshGroups([group], prefix, this.#only).length > 0);
    for (const { topic, group } of unread) {
      this.#collector.watch(group, [topic]);
      watched.push(group);
    }
    if (this.#only !== undefined && groups.length === 0 && unread.length === 0)
      throw new CliError(
        `no consumer group ${this.#only} under the prefix ${JSON.stringify(prefix)}`,
      );
    const samples =
      watched.length === 0
        ? []
        : await ctx.kafkaStep(this.#collector.collect(), Math.max(15_000, ctx.config.timeoutMs));
    const visible = new Set(watched);
    return {
      at: new Date().toISOString(),
      prefix,
      groups,
      unread,
      partitions: samples
        .filter((s) => visible.has(s.group))
        .map(rowOf)
        .sort(
          (a, b) =>
            a.group.localeCompare(b.group) ||
            a.topic.localeCompare(b.topic) ||
            a.partition - b.partition,
        ),
    };
  }
}

export function renderLag(report: LagReport): string[] {
  if (report.groups.length === 0 && report.unread.length === 0)
    return [`no consumer groups under the prefix ${JSON.stringify(report.prefix)} yet`];
  const rows = report.partitions.map((r) => [
    r.group,
    r.topic,
    String(r.partition),
    r.committed === null ? '-' : String(r.committed),
    String(r.end),
    String(r.lag),
    r.lag === 0 ? '0' : r.lagSeconds.toFixed(1),
  ]);
  const total = report.partitions.reduce((sum, r) => sum + r.lag, 0);
  const idle = report.groups.filter((g) => !report.partitions.some((r) => r.group === g));
  const unread = report.unread.map(({ topic, agent, group }) => {
    const waiting = report.partitions
      .filter((r) => r.topic === topic)
      .reduce((sum, r) => sum + r.lag, 0);
    return `nothing reads ${topic} (no group ${group}): ${waiting} events waiting; start a worker that hosts ${agent}`;
  });
  return [
    ...table(['GROUP', 'TOPIC', 'PARTITION', 'COMMITTED', 'END', 'LAG', 'LAG(s)'], rows),
    ...(idle.length > 0 ? [`no members and no commits: ${idle.join(', ')}`] : []),
    ...unread,
    `${report.groups.length} groups, total lag ${total}`,
  ];
}

export async function lag(ctx: CliContext, parsed: ParsedCommand): Promise<void> {
  const { values } = parsed;
  const watch = flag(values, 'watch');
  const intervalText = stringOption(values, 'interval');
  const intervalMs = intervalText === undefined ? 2_000 : parseInterval(intervalText, '--interval');
  const reader = new LagReader(ctx, stringOption(values, 'group'));
  if (!watch) {
    const report = await reader.read();
    if (ctx.json) ctx.emit(report);
    else for (const line of renderLag(report)) ctx.print(line);
    return;
  }
  let stopped = false;
  const abort = new AbortController();
  const stop = (): void => {
    stopped = true;
    abort.abort();
  };
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
  const redraw = process.stdout.isTTY && !ctx.json;
  let first = true;
  try {
    while (!stopped) {
      try {
        // The first read fails loudly (a wrong address); later ones ride out a broker restart.
        const report = await reader.read();
        if (ctx.json) ctx.emit(report);
        else {
          if (redraw) process.stdout.write('\u001b[H\u001b[2J');
          ctx.print(
            `mesh lag — ${new Date(report.at).toLocaleTimeString()} — every ${intervalMs / 1000}s, Ctrl-C to stop`,
          );
          for (const line of renderLag(report)) ctx.print(line);
        }
      } catch (error) {
        if (first) throw error;
        ctx.note(`mesh: ${errorLine(error)}`);
      }
      first = false;
      await sleep(intervalMs, undefined, { signal: abort.signal }).catch(() => undefined);
    }
  } finally {
    process.off('SIGINT', stop);
    process.off('SIGTERM', stop);
  }
}
