/**
 * The whole mesh against a raw kafkajs pipeline, side by side in one run on the same broker.
 *
 * Mesh: the four services as processes, the `fan-out` template (1 request → 3 subtasks on the
 * built-in agents research, summarize, fact-check, which answer at once → join → 1 output).
 * Raw: the same topics, hops and message counts with plain kafkajs (`bench/raw-pipeline.ts`: a
 * planner, the three agents and a joiner as three processes; each fetched batch produced in one
 * send, acks=-1, idempotent, then committed) — no envelope, registry, Redis or metrics.
 *
 * Both pipelines run for the whole benchmark; rounds alternate which side goes first. Per round:
 * saturation (a burst of tasks, rate between the 10th and 90th percentile outcome), then latency
 * at half the mesh's saturation rate, the same offered load for both sides.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { meshEnv } from '@mesh/testkit';
import { BenchMesh } from './mesh.ts';
import {
  hopBreakdown,
  hopNames,
  latency,
  OutputWatcher,
  saturation,
  taskIds,
  type LatencyResult,
  type Publish,
  type SaturationResult,
  type Steps,
} from './pipeline.ts';
import {
  RawProducer,
  rawAgents,
  rawOutcome,
  rawTopics,
  recordTimes,
  type KafkajsCopy,
} from './plain-kafkajs.ts';
import {
  cpuDuring,
  serviceNames,
  spawnRawPipeline,
  stackProcs,
  stopProc,
  type Proc,
} from './processes.ts';
import {
  describeMachine,
  describeSource,
  environmentOf,
  median,
  round,
  progress,
  benchOptions,
  intOption,
} from './support.ts';

export const usage = `usage: npm run bench -- e2e [options]
  --window N             tasks kept outstanding by the saturation loop (default 1000)
  --saturation-seconds S measured window of each saturation run, after 3 s of warm-up (default 10)
  --latency-seconds S    length of each latency run (default 10)
  --load F               offered load of the latency runs, as a fraction of the mesh's saturation rate (default 0.5)
  --partitions N         partitions of every topic, both pipelines (default 3)
  --rounds N             rounds, alternating which side goes first (default 3)
  --unloaded-rate N      latency of both sides at N tasks/s for 10 s after the rounds, for context (default 10; 0 skips it)
  --idle-seconds S       CPU of every process with nothing offered, after those, for context (default 10; 0 skips it)
  --each-message-seconds S  saturation of a raw eachMessage pipeline, for context (default 10; 0 skips it)
  --stock-seconds S      saturation of the raw pipeline on unpatched kafkajs, for context (default 10; 0 skips it)
  --warmup S             seconds each side runs at saturation before the first round, not measured (default 5)
  --profile-dir DIR      run every process under --cpu-prof into DIR (the results file is not written)`;

/** Hops that consume and produce: orchestrator/planner, worker/agents, aggregator/joiner. */
const hops = 3;

interface CpuFigures {
  /** CPU ms of each process (and the stack's) per task of the run. */
  cpu_ms_per_task: Record<string, number>;
  /** How busy the whole machine was during the run, in percent of all its cores. */
  host_cpu_busy_pct: number;
}

function cpuFigures(cpu: Record<string, number>, hostBusyPct: number, tasks: number): CpuFigures {
  return {
    cpu_ms_per_task: Object.fromEntries(
      Object.entries(cpu).map(([name, s]) => [name, round((s * 1_000) / tasks, 3)]),
    ),
    host_cpu_busy_pct: round(hostBusyPct, 1),
  };
}

function options(args: string[]) {
  const values = benchOptions(
    args,
    {
      window: { type: 'string', default: '1000' },
      'saturation-seconds': { type: 'string', default: '10' },
      'latency-seconds': { type: 'string', default: '10' },
      load: { type: 'string', default: '0.5' },
      partitions: { type: 'string', default: '3' },
      rounds: { type: 'string', default: '3' },
      warmup: { type: 'string', default: '5' },
      'each-message-seconds': { type: 'string', default: '10' },
      'stock-seconds': { type: 'string', default: '10' },
      'unloaded-rate': { type: 'string', default: '10' },
      'idle-seconds': { type: 'string', default: '10' },
      'profile-dir': { type: 'string' },
    },
    usage,
  );
  const count = (name: keyof typeof values, min: number): number =>
    intOption(name, values[name], min, usage);
  const load = Number(values.load);
  if (!(load > 0 && load <= 1)) throw new Error(`--load must be in (0, 1]\n${usage}`);
  return {
    window: count('window', 1),
    saturationSeconds: count('saturation-seconds', 1),
    latencySeconds: count('latency-seconds', 1),
    load,
    partitions: count('partitions', 1),
    rounds: count('rounds', 1),
    warmup: count('warmup', 0),
    eachMessageSeconds: count('each-message-seconds', 0),
    stockSeconds: count('stock-seconds', 0),
    unloadedRate: count('unloaded-rate', 0),
    idleSeconds: count('idle-seconds', 0),
    profileDir: values['profile-dir'],
  };
}

type Side = 'mesh' | 'raw';

export async function run(args: string[]): Promise<Record<string, unknown> & { partial: boolean }> {
  const opts = options(args);
  const log = progress('e2e');
  const stack = await meshEnv();
  const machine = await describeMachine();
  const source = await describeSource();
  const mesh = new BenchMesh({
    stack,
    name: 'e2e',
    partitions: opts.partitions,
    agents: [...rawAgents],
    log,
    ...(opts.profileDir === undefined ? {} : { profileDir: opts.profileDir }),
  });
  const raw = rawTopics(mesh.prefix);
  const brokers = stack.MESH_KAFKA_BROKERS;
  const rawProducer = new RawProducer(brokers.split(','));
  const rawProcs: Proc[] = [];
  const watchers: OutputWatcher[] = [];
  const extraTopics: string[] = [...raw.all];
  try {
    await mesh.start();
    await mesh.client.admin.ensureTopics(
      raw.all.map((topic) => ({ topic, numPartitions: opts.partitions, replicationFactor: 1 })),
    );
    await rawProducer.connect();
    const watch = {
      mesh: await OutputWatcher.start(
        mesh.client.kafka,
        mesh.client.topics.outputs,
        BenchMesh.classify,
      ),
      raw: await OutputWatcher.start(mesh.client.kafka, raw.outputs, rawOutcome),
    };
    watchers.push(watch.mesh, watch.raw);
    const steps: Record<Side, Steps> = {
      mesh: {
        request: mesh.client.topics.requests,
        work: rawAgents.map((agent) => mesh.client.topics.work(agent)),
        results: mesh.client.topics.results,
        outputs: mesh.client.topics.outputs,
      },
      raw: {
        request: raw.requests,
        work: rawAgents.map((agent) => raw.work(agent)),
        results: raw.results,
        outputs: raw.outputs,
      },
    };
    const publish: Record<Side, Publish> = {
      mesh: mesh.publisher('fan-out'),
      raw: rawProducer.publisher(raw.requests),
    };

    log(`mesh ${mesh.prefix}: starting the four services`);
    await Promise.all(serviceNames.map((name) => mesh.spawn(name)));
    log('raw pipeline: starting planner, agents, joiner');
    rawProcs.push(
      ...(await spawnRawPipeline({
        brokers,
        prefix: mesh.prefix,
        mode: 'batch',
        ...(opts.profileDir === undefined ? {} : { profileDir: opts.profileDir }),
      })),
    );
    const stackSide = await stackProcs(brokers);
    const procsOf = (side: Side) => [...(side === 'mesh' ? mesh.procs : rawProcs), ...stackSide];

    if (opts.warmup > 0) {
      for (const side of ['mesh', 'raw'] as const) {
        log(`${side}: warm-up, ${opts.warmup} s`);
        await saturation(publish[side], watch[side], `warm-${side}`, {
          window: opts.window,
          seconds: opts.warmup,
          warmupSeconds: 0,
        });
      }
    }
    await sleep(2_000);

    const rounds: {
      round: number;
      first: Side;
      saturation: Record<Side, SaturationResult & CpuFigures>;
      latency: Record<Side, LatencyResult & CpuFigures>;
      hops: Record<Side, ReturnType<typeof hopBreakdown>>;
      throughput_ratio: number;
      p50_overhead_ms: number | null;
    }[] = [];
    for (let r = 1; r <= opts.rounds; r += 1) {
      const order: Side[] = r % 2 === 1 ? ['mesh', 'raw'] : ['raw', 'mesh'];
      const sat = {} as Record<Side, SaturationResult & CpuFigures>;
      for (const side of order) {
        log(`round ${r}: ${side} saturation, ${opts.window} tasks outstanding`);
        const { result, cpu, hostBusyPct } = await cpuDuring(procsOf(side), () =>
          saturation(publish[side], watch[side], `sat-${side}-${r}`, {
            window: opts.window,
            seconds: opts.saturationSeconds,
          }),
        );
        sat[side] = { ...result, ...cpuFigures(cpu, hostBusyPct, result.tasks) };
        log(`round ${r}: ${side} ${result.tasks_per_s} tasks/s`);
        await sleep(1_000);
      }
      const rate = sat.mesh.tasks_per_s * opts.load;
      // An open loop at 0 tasks/s never ends: say so instead of hanging.
      if (!(rate > 0))
        throw new Error(
          `round ${r}: the mesh completed no task in its saturation window, so there is no rate for the latency run (a cold start? raise --warmup or --saturation-seconds)`,
        );
      const count = Math.max(10, Math.round(rate * opts.latencySeconds));
      const lat = {} as Record<Side, LatencyResult & CpuFigures>;
      const hopsOf = {} as Record<Side, ReturnType<typeof hopBreakdown>>;
      for (const side of order) {
        log(`round ${r}: ${side} latency at ${round(rate, 1)} tasks/s, ${count} tasks`);
        const ids = taskIds(`lat-${side}-${r}`, count);
        const sentWall = new Map<string, number>();
        const since = Date.now() - 1_000;
        const { result, cpu, hostBusyPct } = await cpuDuring(procsOf(side), () =>
          latency(publish[side], watch[side], ids, rate, { sentWall }),
        );
        lat[side] = { ...result, ...cpuFigures(cpu, hostBusyPct, ids.length) };
        log(`round ${r}: ${side} p50 ${lat[side].p50_ms} ms, p99 ${lat[side].p99_ms} ms`);
        const records = await recordTimes(
          brokers.split(','),
          [steps[side].request, ...steps[side].work, steps[side].results, steps[side].outputs],
          since,
        );
        hopsOf[side] = hopBreakdown(records, steps[side], ids, sentWall, watch[side]);
        await sleep(1_000);
      }
      const meshP50 = lat.mesh.p50_ms;
      const rawP50 = lat.raw.p50_ms;
      rounds.push({
        round: r,
        first: order[0] as Side,
        saturation: sat,
        latency: lat,
        hops: hopsOf,
        throughput_ratio: round(sat.mesh.tasks_per_s / sat.raw.tasks_per_s, 3),
        p50_overhead_ms:
          meshP50 === null || rawP50 === null ? null : round((meshP50 - rawP50) / hops, 2),
      });
    }

    // Context: the latency of a nearly idle pipeline, split by hop, to tell fixed costs from queueing.
    let unloaded: Record<string, unknown> | undefined;
    if (opts.unloadedRate > 0) {
      unloaded = { rate_per_s: opts.unloadedRate };
      for (const side of ['mesh', 'raw'] as const) {
        log(`unloaded: ${side} latency at ${opts.unloadedRate} tasks/s`);
        const ids = taskIds(`idle-${side}`, opts.unloadedRate * 10);
        const sentWall = new Map<string, number>();
        const since = Date.now() - 1_000;
        const result = await latency(publish[side], watch[side], ids, opts.unloadedRate, {
          sentWall,
        });
        const records = await recordTimes(
          brokers.split(','),
          [steps[side].request, ...steps[side].work, steps[side].results, steps[side].outputs],
          since,
        );
        unloaded[side] = {
          ...result,
          hops: hopBreakdown(records, steps[side], ids, sentWall, watch[side]),
        };
        log(`unloaded: ${side} p50 ${result.p50_ms} ms`);
        await sleep(1_000);
      }
    }

    // Context: what each side costs with nothing to do (fetch loops, timers, lag collectors).
    let idle: Record<string, Record<string, number>> | undefined;
    if (opts.idleSeconds > 0) {
      log(`idle: ${opts.idleSeconds} s with nothing offered`);
      await sleep(2_000);
      const groups = { mesh: mesh.procs, raw: rawProcs, stack: stackSide };
      const { cpu, seconds } = await cpuDuring(Object.values(groups).flat(), () =>
        sleep(opts.idleSeconds * 1_000),
      );
      const perSecond = (name: string): number => round(((cpu[name] ?? 0) * 1_000) / seconds, 1);
      idle = Object.fromEntries(
        Object.entries(groups).map(([side, procs]) => {
          const each = Object.fromEntries(procs.map((p) => [p.name, perSecond(p.name)]));
          const total = Object.values(each).reduce((sum, ms) => sum + ms, 0);
          return [side, { ...each, total: round(total, 1) }];
        }),
      );
      log(
        `idle: mesh ${idle.mesh?.total} ms/s, raw ${idle.raw?.total} ms/s, stack ${idle.stack?.total} ms/s`,
      );
    }

    // Context, after the rounds: the same raw pipeline another way, saturation only, each on topics
    // of its own and with the rounds' pipeline stopped.
    const meshRate = median(rounds.map((r) => r.saturation.mesh.tasks_per_s));
    const meshOver = (result: SaturationResult): number | null =>
      meshRate === null ? null : round(meshRate / result.tasks_per_s, 3);
    const context = async (
      name: string,
      variant: { mode: 'batch' | 'each'; kafkajs: KafkajsCopy },
      seconds: number,
    ): Promise<SaturationResult> => {
      await Promise.all(rawProcs.splice(0).map((p) => stopProc(p)));
      const prefix = `${mesh.prefix}${name}.`;
      const topics = rawTopics(prefix);
      extraTopics.push(...topics.all);
      await mesh.client.admin.ensureTopics(
        topics.all.map((topic) => ({
          topic,
          numPartitions: opts.partitions,
          replicationFactor: 1,
        })),
      );
      const watcher = await OutputWatcher.start(mesh.client.kafka, topics.outputs, rawOutcome);
      watchers.push(watcher);
      log(`raw ${name} pipeline: starting planner, agents, joiner`);
      rawProcs.push(
        ...(await spawnRawPipeline({ brokers, prefix, ...variant, label: `-${name}` })),
      );
      log(`raw ${name} saturation, ${opts.window} tasks outstanding`);
      const result = await saturation(rawProducer.publisher(topics.requests), watcher, name, {
        window: opts.window,
        seconds,
      });
      log(`raw ${name} ${result.tasks_per_s} tasks/s`);
      return result;
    };
    // The pipeline with kafkajs eachMessage consumers (one awaited send per message).
    let eachMessage: (SaturationResult & { ratio_mesh_vs_each_message: number | null }) | undefined;
    if (opts.eachMessageSeconds > 0) {
      const result = await context(
        'each',
        { mode: 'each', kafkajs: 'patched' },
        opts.eachMessageSeconds,
      );
      eachMessage = { ...result, ratio_mesh_vs_each_message: meshOver(result) };
    }
    // The rounds' pipeline on kafkajs as published: what it does without the mesh's kafkajs patch.
    let stockKafkajs: (SaturationResult & { ratio_mesh_vs_stock: number | null }) | undefined;
    if (opts.stockSeconds > 0) {
      const result = await context('stock', { mode: 'batch', kafkajs: 'stock' }, opts.stockSeconds);
      stockKafkajs = { ...result, ratio_mesh_vs_stock: meshOver(result) };
    }

    const col = (pick: (r: (typeof rounds)[number]) => number | null): number | null =>
      median(rounds.map(pick).filter((v): v is number => v !== null));
    const throughputRatio = col((r) => r.throughput_ratio);
    const overhead = col((r) => r.p50_overhead_ms);
    const rawP50 = col((r) => r.latency.raw.p50_ms);
    const meshP50 = col((r) => r.latency.mesh.p50_ms);
    const rawHop = rawP50 === null ? null : round(rawP50 / hops, 2);
    const meshHop = meshP50 === null ? null : round(meshP50 / hops, 2);
    const summary = (side: Side) => ({
      tasks_per_s: col((r) => r.saturation[side].tasks_per_s),
      latency_ms: {
        p50: col((r) => r.latency[side].p50_ms),
        p95: col((r) => r.latency[side].p95_ms),
        p99: col((r) => r.latency[side].p99_ms),
      },
      host_cpu_busy_pct: {
        saturation: col((r) => r.saturation[side].host_cpu_busy_pct),
        latency: col((r) => r.latency[side].host_cpu_busy_pct),
      },
    });
    // Per hop, from record timestamps: the median over rounds of each hop's p50, and mesh − raw.
    const hopTable = Object.fromEntries(
      hopNames.map((hop) => {
        const meshHop = col((r) => r.hops.mesh[hop].p50_ms);
        const rawHopMs = col((r) => r.hops.raw[hop].p50_ms);
        return [
          hop,
          {
            mesh_p50_ms: meshHop,
            raw_p50_ms: rawHopMs,
            overhead_ms:
              meshHop === null || rawHopMs === null ? null : round(meshHop - rawHopMs, 1),
          },
        ];
      }),
    );
    const failed = rounds.reduce((n, r) => n + r.saturation.mesh.failed + r.latency.mesh.failed, 0);
    return {
      partial: opts.profileDir !== undefined,
      bench: 'e2e',
      timestamp: new Date().toISOString(),
      throughput_ratio: throughputRatio,
      p50_overhead_ms: overhead,
      raw_hop_p50_ms: rawHop,
      mesh_hop_p50_ms: meshHop,
      p50_overhead_vs_raw_hop:
        overhead === null || rawHop === null ? null : round(overhead / rawHop, 2),
      targets: { throughput_ratio: 0.5, p50_overhead_vs_raw_hop: 2 },
      met: {
        throughput_ratio: throughputRatio !== null && throughputRatio >= 0.5,
        p50_overhead: overhead !== null && rawHop !== null ? overhead <= 2 * rawHop : false,
      },
      hops_p50_ms: hopTable,
      mesh: summary('mesh'),
      raw: summary('raw'),
      unloaded: unloaded ?? null,
      idle_cpu_ms_per_s: idle ?? null,
      raw_each_message: eachMessage ?? null,
      raw_stock_kafkajs: stockKafkajs ?? null,
      counts: {
        saturation_window_tasks: opts.window,
        saturation_completed_per_round: rounds.map((r) => ({
          mesh: r.saturation.mesh.completed,
          raw: r.saturation.raw.completed,
        })),
        latency_tasks_per_run: rounds[0]?.latency.mesh.count ?? 0,
        rounds: opts.rounds,
        warmup_seconds: opts.warmup,
        hops,
        messages_per_task: {
          mesh: '1 request + 3 subtask.assigned + 3 subtask.completed + 1 stage.completed + 1 task.completed',
          raw: '1 request + 3 work + 3 results + 1 output',
        },
        mesh_tasks_failed: failed,
        duplicate_outcomes: { mesh: watch.mesh.duplicates, raw: watch.raw.duplicates },
      },
      how: {
        saturation: `closed loop: ${opts.window} tasks kept outstanding (each outcome replaced by a new request), completions counted over ${opts.saturationSeconds} s after 3 s of warm-up; the median over rounds`,
        latency: `open loop at ${opts.load} × the round's mesh saturation rate, the same rate for both sides; each task from just before its publish to its outcome arriving at this process; percentiles per round, the median over rounds`,
        throughput_ratio: 'mesh tasks/s ÷ raw tasks/s, per round, the median over rounds',
        p50_overhead_ms: `(mesh p50 − raw p50) ÷ ${hops} hops (orchestrator, worker, aggregator vs planner, agents, joiner), per round, the median`,
        raw_hop_p50_ms: `raw p50 ÷ ${hops}`,
        target_p50: 'p50_overhead_ms ≤ 2 × raw_hop_p50_ms',
        hops_p50_ms:
          "each latency-run task split by hop from its records' CreateTime (read after the run): publish (send → request record), dispatch (→ the last subtask: orchestrator / planner), agents (→ the last result: worker / agents), join (→ the outcome: aggregator / joiner), delivery (→ arrival here); the median over rounds of each hop's p50 (ms resolution)",
        unloaded:
          'context: each side at a low open-loop rate after the rounds, with its hop split: the latency without queueing',
        idle_cpu_ms_per_s: `context: CPU ms (user + system, /proc) each process spent per second over ${opts.idleSeconds} s with nothing offered to either side, after the rounds; what a deployed pipeline costs while it waits. Kafka's share is the broker's whole, both sides' idle fetches included`,
        raw_each_message:
          'context, not the baseline: the raw pipeline with kafkajs eachMessage consumers (one awaited send per message), saturation only, after the rounds; ratio_mesh_vs_each_message = the median mesh rate of the rounds ÷ its rate',
        raw_stock_kafkajs:
          "context, not the baseline: the rounds' raw pipeline on kafkajs 2.2.4 as published (npm alias kafkajs-stock) instead of the mesh's patched copy, which both sides of the rounds run; saturation only, after the rounds; ratio_mesh_vs_stock = the median mesh rate of the rounds ÷ its rate",
        cpu_ms_per_task:
          'CPU time (user + system, /proc) of each process during a run (saturation: warm-up, window and drain; latency: the whole run) ÷ the tasks it published; "stack" processes are Kafka, the registry and Redis, shared by both sides',
        host_cpu_busy_pct:
          'how busy the whole machine was during each run, every process counted (/proc/stat), in percent of all cores; the median over rounds. Near 100 at the latency load means the latency is measured on a saturated machine and is mostly waiting for a core',
      },
      environment: await environmentOf(brokers, machine),
      source,
      config: {
        partitions: opts.partitions,
        load: opts.load,
        latency_seconds: opts.latencySeconds,
        topic_prefix: mesh.prefix,
        agents: rawAgents,
        template: 'fan-out',
        profiled: opts.profileDir !== undefined,
      },
      rounds,
    };
  } finally {
    await Promise.all(watchers.map((w) => w.stop().catch(() => undefined)));
    await Promise.all(rawProcs.map((p) => stopProc(p)));
    await rawProducer.disconnect().catch(() => undefined);
    await mesh.close(extraTopics);
  }
}
