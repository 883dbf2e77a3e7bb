/**
 * The consumer runtime against plain kafkajs, side by side in one run, on one partition.
 *
 * (a) slow: a handler that sleeps 200 ms, messages on 64 keys. The runtime runs different keys of a
 *     partition concurrently; a kafkajs `eachMessage` consumer runs them one after another.
 *     `slow_speedup` = runtime msg/s ÷ plain msg/s.
 * (b) no-op: the runtime's full path (decode with the registry, loop guards, idempotency claim in
 *     Redis, a handler that returns one derived event, encode and validate, produce with acks=all,
 *     done marker, commit) against a plain kafkajs relay (fetch → produce the batch with acks=-1 →
 *     commit). `noop_ratio` = runtime msg/s ÷ plain msg/s, the median of paired rounds. The plain
 *     relay runs on the mesh's own kafkajs, patched at install, so the ratio is the mesh's own work;
 *     each round also runs it on kafkajs as published (`noop_ratio_vs_stock_kafkajs`, context).
 *
 * Each measured consumer is a fresh group on a pre-filled topic, so it starts with the whole backlog.
 * The machine is small and shared by the broker, Redis and the registry: only the ratios of one run
 * mean something, not the absolute rates.
 */
import { randomUUID } from 'node:crypto';
import { mkdir, writeFile } from 'node:fs/promises';
import { Session } from 'node:inspector/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { loadConfig, type MeshConfig } from '@mesh/config';
import { waitForRedis } from '@mesh/redis';
import { MeshRuntime, topicSpecs, type Handler } from '@mesh/runtime';
import { createLogger } from '@mesh/telemetry';
import { meshEnv } from '@mesh/testkit';
import { PlainKafka, type Timing } from './plain-kafkajs.ts';
import { cpuDuring, stackProcs, thisProcess } from './processes.ts';
import {
  describeMachine,
  describeSource,
  median,
  removeKeys,
  round,
  benchOptions,
  intOption,
  environmentOf,
} from './support.ts';
import { assignedEvent, completeAssigned } from './noop.ts';

const phases = [
  'slow-plain',
  'slow-runtime',
  'noop-plain',
  'noop-runtime',
  'noop-stock',
  'noop-each-message',
] as const;
type Phase = (typeof phases)[number];

export const usage = `usage: npm run bench -- runtime [options]
  --slow-messages N          runtime messages of the slow run (default 2000)
  --slow-plain-messages N    plain kafkajs messages of the slow run (default 50)
  --noop-messages N          messages of each no-op run (default 20000)
  --each-message-messages N  messages of the eachMessage relay (default 3000; 0 skips it)
  --rounds N                 paired no-op rounds, plain and runtime in alternating order (default 3)
  --warmup-rounds N          paired no-op rounds run first and not counted (default 2; 0 skips)
  --only PHASE[,PHASE]       run only these (${phases.join(', ')}); the results file is not written
  --profile-dir DIR          CPU-profile each no-op round, relays and runtime (its measured window only), into DIR`;

interface Options {
  slowMessages: number;
  slowPlainMessages: number;
  noopMessages: number;
  eachMessageMessages: number;
  rounds: number;
  warmupRounds: number;
  only: Set<Phase> | undefined;
  profileDir: string | undefined;
}

function parseOptions(args: string[]): Options {
  const values = benchOptions(
    args,
    {
      'slow-messages': { type: 'string', default: '2000' },
      'slow-plain-messages': { type: 'string', default: '50' },
      'noop-messages': { type: 'string', default: '20000' },
      'each-message-messages': { type: 'string', default: '3000' },
      rounds: { type: 'string', default: '3' },
      'warmup-rounds': { type: 'string', default: '2' },
      only: { type: 'string' },
      'profile-dir': { type: 'string' },
    },
    usage,
  );
  const count = (name: keyof typeof values, min: number): number =>
    intOption(name, values[name], min, usage);
  let only: Set<Phase> | undefined;
  if (values.only !== undefined) {
    only = new Set();
    for (const name of values.only.split(',')) {
      if (!(phases as readonly string[]).includes(name))
        throw new Error(`unknown phase ${JSON.stringify(name)}\n${usage}`);
      only.add(name as Phase);
    }
  }
  const slowMessages = count('slow-messages', 1);
  const noopMessages = count('noop-messages', 1);
  // Every consumer reads its topic to the end, so a count above the runtime's would leave it a tail.
  return {
    slowMessages,
    slowPlainMessages: Math.min(count('slow-plain-messages', 1), slowMessages),
    noopMessages,
    eachMessageMessages: Math.min(count('each-message-messages', 0), noopMessages),
    rounds: count('rounds', 1),
    warmupRounds: count('warmup-rounds', 0),
    only,
    profileDir: values['profile-dir'],
  };
}

const slowSleepMs = 200;
const slowKeys = 64;
/** Distinct task ids of the no-op input: more than the partition concurrency, so keys never queue. */
const noopKeys = 1024;
const pollMs = 20;
const publishChunk = 1_000;

function pick(env: NodeJS.ProcessEnv, names: string[]): Record<string, string> {
  const picked: Record<string, string> = {};
  for (const name of names) {
    const value = env[name];
    if (value !== undefined && value !== '') picked[name] = value;
  }
  return picked;
}

/** msg/s over a timing. */
function rateOf(messages: number, timing: { first: number; last: number }): number {
  return messages / ((timing.last - timing.first) / 1_000);
}

interface NoopCost {
  round: number;
  side: 'runtime' | 'plain' | 'stock';
  cpu_us_per_msg: Record<string, number>;
  event_loop_busy_pct: number;
  host_cpu_busy_pct: number;
  /** The whole run's length, group join included (the rate's window is shorter). */
  seconds: number;
}

/** The no-op sides' costs, each figure the median over rounds, and the CPU ratio of this process. */
function summariseCosts(costs: NoopCost[]): Record<string, unknown> {
  const ofSide = (side: NoopCost['side']) => costs.filter((c) => c.side === side);
  const selfCpu = (side: NoopCost['side']) =>
    median(ofSide(side).map((c) => c.cpu_us_per_msg[thisProcess] ?? 0));
  const sides: Record<string, unknown> = {};
  for (const side of ['runtime', 'plain', 'stock'] as const) {
    const mine = ofSide(side);
    if (mine.length === 0) continue;
    const names = [...new Set(mine.flatMap((c) => Object.keys(c.cpu_us_per_msg)))];
    sides[side] = {
      cpu_us_per_msg: Object.fromEntries(
        names.map((name) => [name, median(mine.map((c) => c.cpu_us_per_msg[name] ?? 0))]),
      ),
      event_loop_busy_pct: median(mine.map((c) => c.event_loop_busy_pct)),
      host_cpu_busy_pct: median(mine.map((c) => c.host_cpu_busy_pct)),
    };
  }
  const runtime = selfCpu('runtime');
  const ratioTo = (other: number | null): number | null =>
    runtime === null || other === null || runtime === 0 ? null : round(other / runtime, 3);
  return {
    ...sides,
    cpu_ratio: ratioTo(selfCpu('plain')),
    cpu_ratio_vs_stock: ratioTo(selfCpu('stock')),
    rounds: costs,
  };
}

export interface RuntimeBenchResult extends Record<string, unknown> {
  partial: boolean;
}

export async function run(args: string[]): Promise<RuntimeBenchResult> {
  const options = parseOptions(args);
  const wanted = (phase: Phase): boolean => options.only?.has(phase) ?? true;
  const env = await meshEnv();
  const prefix = `bench-${randomUUID().slice(0, 8)}.`;
  const overrides = pick(process.env, ['MESH_CONCURRENCY', 'MESH_PARTITION_CONCURRENCY']);
  const config: MeshConfig = loadConfig(
    {
      ...env,
      MESH_TOPIC_PREFIX: prefix,
      MESH_PARTITIONS: '1',
      MESH_LOG_LEVEL: 'warn',
      // Keeps the done markers of a run from lingering in Redis if the clean-up below is cut short.
      MESH_IDEMPOTENCY_TTL: '1h',
      // The defaults are what is measured; these two may be set to explore (reported under config).
      ...overrides,
    },
    { service: 'bench', defaultHttpPort: 0 },
  );
  // Its warnings go to stderr: stdout is the result's JSON.
  const runtime = new MeshRuntime(config, {
    agents: ['slow', 'noop'],
    logger: createLogger(config.service, config.logLevel, 2),
  });
  const plain = new PlainKafka(config.kafka.brokers, prefix);
  const stock = new PlainKafka(config.kafka.brokers, `${prefix}stock.`, 'stock');
  const topics = {
    slow: runtime.topics.work('slow'),
    noop: runtime.topics.work('noop'),
    plainOut: `${prefix}plain.out`,
    stockOut: `${prefix}plain.stock.out`,
    plainEachOut: `${prefix}plain.each-message.out`,
  };
  const log = (message: string): void => void process.stderr.write(`[bench runtime] ${message}\n`);

  const endOffset = async (topic: string): Promise<number> =>
    (await runtime.admin.endOffsets(topic)).reduce((sum, p) => sum + p.high, 0);

  /**
   * Polls the end offset of `topic` every 20 ms until it reaches `target`; returns that moment.
   * @throws Error when nothing moves for 60 s (a stuck consumer), naming the progress made.
   */
  const waitForEnd = async (
    topic: string,
    target: number,
    started: () => number | undefined,
  ): Promise<number> => {
    let seen = -1;
    let movedAt = performance.now();
    for (;;) {
      const high = await endOffset(topic);
      const now = performance.now();
      if (high >= target) return now;
      if (high !== seen) {
        seen = high;
        movedAt = now;
      } else if (now - movedAt > 60_000) {
        throw new Error(
          `${topic} stuck at end offset ${high} of ${target} (consumer started: ${started() !== undefined})`,
        );
      }
      await sleep(pollMs);
    }
  };

  /** The committed offsets of `groupId` reached the end of `topic`: every message has an outcome. */
  const committedAll = async (groupId: string, topic: string): Promise<boolean> => {
    const deadline = Date.now() + 10_000;
    for (;;) {
      const lag = await runtime.admin.lag(groupId, [topic]);
      if (lag.every((p) => p.committed === p.high)) return true;
      if (Date.now() > deadline) return false;
      await sleep(100);
    }
  };

  const fill = async (topic: string, agent: string, count: number, keys: number): Promise<void> => {
    for (let start = 0; start < count; start += publishChunk) {
      const emits = [];
      for (let i = start; i < Math.min(count, start + publishChunk); i += 1)
        emits.push({ topic, event: assignedEvent(agent, i, keys) });
      await runtime.publish(emits);
    }
  };

  let profileSession: Session | undefined;
  const profiled = async <T>(name: string, work: () => Promise<T>): Promise<T> => {
    if (options.profileDir === undefined) return work();
    if (profileSession === undefined) {
      profileSession = new Session();
      profileSession.connect();
      await profileSession.post('Profiler.enable');
      await profileSession.post('Profiler.setSamplingInterval', { interval: 1_000 });
    }
    await profileSession.post('Profiler.start');
    try {
      return await work();
    } finally {
      const { profile } = await profileSession.post('Profiler.stop');
      await mkdir(options.profileDir, { recursive: true });
      const file = join(options.profileDir, `${name}-${prefix.slice(0, -1)}.cpuprofile`);
      await writeFile(file, JSON.stringify(profile));
      log(`profile of ${name} written to ${file}`);
    }
  };

  const runtimeRound = async (
    name: string,
    input: string,
    messages: number,
    handler: Handler,
    done: (started: () => number | undefined) => Promise<number>,
  ): Promise<Timing & { handled: number }> => {
    let first: number | undefined;
    let handled = 0;
    const consumer = await runtime.consume({
      groupId: name,
      topics: [input],
      handlers: {
        'io.mesh.subtask.assigned': async (ctx) => {
          first ??= performance.now();
          const result = await handler(ctx);
          handled += 1;
          return result;
        },
      },
    });
    let last: number;
    try {
      last = await done(() => first);
    } finally {
      await consumer.stop();
    }
    if (handled < messages) throw new Error(`${name}: ${handled} of ${messages} handled`);
    return { first: first ?? last, last, groupId: consumer.groupId, handled };
  };

  const result: RuntimeBenchResult = { partial: options.only !== undefined };
  const checks: Record<string, boolean> = {};
  try {
    await runtime.start();
    await waitForRedis(runtime.redis);
    await runtime.admin.ensureTopics(
      [topics.plainOut, topics.stockOut, topics.plainEachOut].map((topic) => ({
        topic,
        numPartitions: 1,
        replicationFactor: config.replicationFactor,
      })),
    );
    const machine = await describeMachine();
    const source = await describeSource();

    // (a) Slow handler.
    let slow: Record<string, unknown> | undefined;
    if (wanted('slow-plain') || wanted('slow-runtime')) {
      log(`slow: producing ${options.slowMessages} events on ${slowKeys} keys`);
      await fill(topics.slow, 'slow', options.slowMessages, slowKeys);
      slow = { handler_sleep_ms: slowSleepMs, keys: slowKeys };
      if (wanted('slow-plain')) {
        log(`slow: plain kafkajs eachMessage, ${options.slowPlainMessages} messages`);
        const timing = await plain.slow(topics.slow, options.slowPlainMessages, slowSleepMs);
        slow.plain = {
          messages: options.slowPlainMessages,
          seconds: round((timing.last - timing.first) / 1_000, 3),
          msgs_per_s: round(rateOf(options.slowPlainMessages, timing), 2),
        };
      }
      if (wanted('slow-runtime')) {
        log(`slow: mesh runtime, ${options.slowMessages} messages`);
        let finished: ((at: number) => void) | undefined;
        const allHandled = new Promise<number>((resolve) => (finished = resolve));
        let count = 0;
        const timing = await runtimeRound(
          'slow',
          topics.slow,
          options.slowMessages,
          async () => {
            await sleep(slowSleepMs);
            count += 1;
            if (count === options.slowMessages) finished?.(performance.now());
          },
          () => allHandled,
        );
        checks.slow_runtime_committed_all = await committedAll(timing.groupId, topics.slow);
        slow.runtime = {
          messages: options.slowMessages,
          seconds: round((timing.last - timing.first) / 1_000, 3),
          msgs_per_s: round(rateOf(options.slowMessages, timing), 2),
        };
      }
      const runtimeRate = (slow.runtime as { msgs_per_s?: number } | undefined)?.msgs_per_s;
      const plainRate = (slow.plain as { msgs_per_s?: number } | undefined)?.msgs_per_s;
      if (runtimeRate !== undefined && plainRate !== undefined)
        slow.slow_speedup = round(runtimeRate / plainRate, 2);
      slow.measured =
        'from the first handler call to the return of the N-th handler; the runtime then commits (checked)';
    }

    // (b) No-op handler: rounds of the runtime and the two relays, alternating which relay goes first.
    let noop: Record<string, unknown> | undefined;
    if (phases.some((phase) => phase.startsWith('noop-') && wanted(phase))) {
      const n = options.noopMessages;
      log(`noop: producing ${n} events on ${noopKeys} keys`);
      await fill(topics.noop, 'noop', n, noopKeys);
      const rounds: Record<string, unknown>[] = [];
      // Where each side's time went: CPU per message of this process (the side measured is the
      // only one running in it) and of the stack's processes, how busy this process's event loop
      // and the whole machine were. The window is the side's whole run (group join included).
      const stack = await stackProcs(env.MESH_KAFKA_BROKERS);
      const costs: NoopCost[] = [];
      const costOf = async <T>(work: () => Promise<T>) => {
        const elu0 = performance.eventLoopUtilization();
        const { result, cpu, hostBusyPct, seconds } = await cpuDuring(stack, work);
        const elu = performance.eventLoopUtilization(elu0).utilization;
        const cpu_us_per_msg = Object.fromEntries(
          Object.entries(cpu).map(([name, used]) => [name, round((used * 1e6) / n, 1)]),
        );
        return {
          result,
          cpu_us_per_msg,
          event_loop_busy_pct: round(100 * elu, 1),
          host_cpu_busy_pct: round(hostBusyPct, 1),
          seconds: round(seconds, 2),
        };
      };
      const results = runtime.topics.results;
      // Warm-up rounds (numbered 0, -1, ...) run the same pairs first and are reported apart: on a
      // freshly started broker the first high-rate rounds pay for its JIT, and the relay, whose
      // cost is nearly all the broker's, paid most: on a fresh stack Kafka spent 63 and 52 µs of
      // CPU per relayed message in the first two rounds and 12–16 µs from the third on, the ratio
      // 0.61 and 0.56, then 0.37–0.50.
      const warmups: Record<string, number>[] = [];
      for (let r = 1 - options.warmupRounds; r <= options.rounds; r += 1) {
        const warmup = r <= 0;
        const entry: Record<string, number> = { round: r };
        const runRelay = async (side: 'plain' | 'stock'): Promise<void> => {
          if (!wanted(`noop-${side}`)) return;
          const [client, output] =
            side === 'plain' ? [plain, topics.plainOut] : [stock, topics.stockOut];
          const base = await endOffset(output);
          const { result: timing, ...cost } = await costOf(() =>
            profiled(`noop-${side}-round${r}`, () =>
              client.relay(topics.noop, output, {
                waitForEnd: (started) => waitForEnd(output, base + n, started),
              }),
            ),
          );
          checks[`noop_${side}_round${r}_committed_all`] = await committedAll(
            timing.groupId,
            topics.noop,
          );
          entry[`${side}_msgs_per_s`] = round(rateOf(n, timing), 1);
          if (!warmup) costs.push({ round: r, side, ...cost });
        };
        const runMesh = async (): Promise<void> => {
          if (!wanted('noop-runtime')) return;
          const base = await endOffset(results);
          const { result: timing, ...cost } = await costOf(() =>
            profiled(`noop-runtime-round${r}`, () =>
              runtimeRound(
                `noop-${r}`,
                topics.noop,
                n,
                async (ctx) => completeAssigned(ctx, results),
                (started) => waitForEnd(results, base + n, started),
              ),
            ),
          );
          checks[`noop_runtime_round${r}_committed_all`] = await committedAll(
            timing.groupId,
            topics.noop,
          );
          entry.runtime_msgs_per_s = round(rateOf(n, timing), 1);
          if (!warmup) costs.push({ round: r, side: 'runtime', ...cost });
        };
        // The runtime in the middle, the two relays swapping ends: each goes before the runtime in
        // one round and after it in the next.
        const order: ('plain' | 'runtime' | 'stock')[] =
          Math.abs(r) % 2 === 1 ? ['plain', 'runtime', 'stock'] : ['stock', 'runtime', 'plain'];
        log(
          `noop: ${warmup ? 'warm-up round' : `round ${r} of ${options.rounds}`} (${order.join(', ')})`,
        );
        for (const side of order) await (side === 'runtime' ? runMesh() : runRelay(side));
        const runtimeRate = entry.runtime_msgs_per_s;
        if (runtimeRate !== undefined && entry.plain_msgs_per_s !== undefined)
          entry.ratio = round(runtimeRate / entry.plain_msgs_per_s, 3);
        if (runtimeRate !== undefined && entry.stock_msgs_per_s !== undefined)
          entry.ratio_vs_stock = round(runtimeRate / entry.stock_msgs_per_s, 3);
        (warmup ? warmups : rounds).push(entry);
      }
      const column = (name: string): number[] =>
        rounds.map((e) => e[name]).filter((v): v is number => typeof v === 'number');
      noop = {
        messages: n,
        keys: noopKeys,
        runtime_msgs_per_s: median(column('runtime_msgs_per_s')),
        plain_msgs_per_s: median(column('plain_msgs_per_s')),
        stock_msgs_per_s: median(column('stock_msgs_per_s')),
        noop_ratio: median(column('ratio')),
        noop_ratio_vs_stock_kafkajs: median(column('ratio_vs_stock')),
        rounds,
        warmup_rounds: warmups,
        costs: summariseCosts(costs),
        measured:
          "from the first message reaching user code (the runtime's handler, kafkajs's eachBatch) to the moment the output topic's end offset reaches N, polled every 20 ms; rates and ratios are medians over the rounds (each ratio: of the runtime and one relay in the same round), after warm-up rounds of the same kind that are not counted; every group's committed offset is then checked to reach the end of the input",
        costs_measured:
          "per side, the median over rounds: CPU µs per message of this process (user + system, where the side runs; no other side is running) and of the stack's processes (/proc), over the side's whole run, group join included; event_loop_busy_pct: this process's event-loop utilisation over that run (100 = its one JavaScript thread never waited); host_cpu_busy_pct: every core of the machine (/proc/stat). cpu_ratio = plain ÷ runtime CPU µs per message of this process: what noop_ratio would be if each side were bound by this process's CPU alone; cpu_ratio_vs_stock the same against the stock relay",
        runtime_path:
          'MeshRuntime.consume, default concurrency: decode (CloudEvents binding + registry wire format + ajv), loop guards, Redis claim, handler derives one io.mesh.subtask.completed, encode (ajv) and produce (idempotent, acks=all), Redis done marker, commit every 200 ms',
        plain_path:
          "kafkajs eachBatch: each fetched batch produced in one send (idempotent producer, acks=-1), then kafkajs commits the batch; no decoding. On the mesh's own kafkajs 2.2.4, patched at install like the runtime's, so that noop_ratio measures the mesh's own work",
        stock_path:
          "context, not the baseline of noop_ratio: the same relay on kafkajs 2.2.4 as published (npm alias kafkajs-stock), what a relay written with `npm install kafkajs` gets; noop_ratio_vs_stock_kafkajs = runtime ÷ this relay, the median of each round's pair",
      };
      if (wanted('noop-each-message') && options.eachMessageMessages > 0) {
        const m = options.eachMessageMessages;
        log(`noop: plain kafkajs eachMessage relay, ${m} messages`);
        const base = await endOffset(topics.plainEachOut);
        const timing = await plain.relay(topics.noop, topics.plainEachOut, {
          perMessage: true,
          waitForEnd: (started) => waitForEnd(topics.plainEachOut, base + m, started),
        });
        const rate = round(rateOf(m, timing), 1);
        noop.plain_each_message = {
          messages: m,
          msgs_per_s: rate,
          path: 'kafkajs eachMessage: one awaited send per message (idempotent, acks=-1); context only, not the baseline of noop_ratio',
        };
        if (typeof noop.runtime_msgs_per_s === 'number')
          noop.ratio_vs_each_message = round(noop.runtime_msgs_per_s / rate, 2);
      }
    }

    const slowRuntime = slow?.runtime as { msgs_per_s: number; messages: number } | undefined;
    const slowPlain = slow?.plain as { msgs_per_s: number; messages: number } | undefined;
    Object.assign(result, {
      bench: 'runtime',
      timestamp: new Date().toISOString(),
      slow_speedup: slow?.slow_speedup ?? null,
      noop_ratio: noop?.noop_ratio ?? null,
      targets: { slow_speedup: 20, noop_ratio: 0.5 },
      slow_runtime_msgs_per_s: slowRuntime?.msgs_per_s ?? null,
      slow_plain_msgs_per_s: slowPlain?.msgs_per_s ?? null,
      noop_runtime_msgs_per_s: noop?.runtime_msgs_per_s ?? null,
      noop_plain_msgs_per_s: noop?.plain_msgs_per_s ?? null,
      noop_ratio_vs_stock_kafkajs: noop?.noop_ratio_vs_stock_kafkajs ?? null,
      noop_stock_msgs_per_s: noop?.stock_msgs_per_s ?? null,
      messages: {
        slow_runtime: slowRuntime?.messages ?? null,
        slow_plain: slowPlain?.messages ?? null,
        noop_runtime_per_round: wanted('noop-runtime') ? options.noopMessages : null,
        noop_plain_per_round: wanted('noop-plain') ? options.noopMessages : null,
        noop_stock_per_round: wanted('noop-stock') ? options.noopMessages : null,
        noop_rounds: options.rounds,
        noop_warmup_rounds: options.warmupRounds,
      },
      environment: await environmentOf(env.MESH_KAFKA_BROKERS, machine),
      source,
      config: {
        partitions: 1,
        concurrency: config.concurrency,
        partition_concurrency: config.partitionConcurrency,
        overrides,
        topic_prefix: prefix,
        profiled: options.profileDir !== undefined,
      },
      slow: slow ?? null,
      noop: noop ?? null,
      checks,
    });
    if (options.profileDir !== undefined) result.partial = true;
    return result;
  } finally {
    profileSession?.disconnect();
    // Topics go first, while the admin is still connected (the consumers have all stopped by now).
    const created = [
      ...topicSpecs(config, ['slow', 'noop']).map((spec) => spec.topic),
      topics.plainOut,
      topics.stockOut,
      topics.plainEachOut,
    ];
    await runtime.admin.deleteTopics(created).catch((error: unknown) => {
      log(`could not delete the topics of ${prefix}: ${(error as Error).message}`);
    });
    await runtime.close();
    await removeKeys(config, `${runtime.keyPrefix}*`).catch((error: unknown) => {
      log(`could not remove the Redis keys of ${prefix}: ${(error as Error).message}`);
    });
  }
}
