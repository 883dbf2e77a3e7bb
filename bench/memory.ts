/**
 * A worker's memory and event-loop delay with 1,000 slow subtasks in flight.
 *
 * One worker process hosts an LLM agent served by the fake LLM, which answers after
 * `--latency-ms` (5 s): every subtask holds an open HTTP request, a Redis lease and its record for
 * that long. More subtasks than the runtime may run at once are queued on the agent's topic, so the
 * runtime's limits — `MESH_CONCURRENCY` (1,000) per process and `MESH_PARTITION_CONCURRENCY` (200)
 * per partition, 6 partitions here — are what bounds the work in flight. The worker's `/metrics`
 * (`mesh_inflight`, prom-client's `nodejs_eventloop_lag_p99_seconds`, reset at each scrape) and
 * `/proc/<pid>/status` (VmRSS, VmHWM) are sampled every 500 ms, idle first, then under load. The
 * baseline is the same worker idle, in the same run.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { newEvent } from '@mesh/envelope';
import { meshEnv } from '@mesh/testkit';
import { BenchMesh } from './mesh.ts';
import { memoryOf, spawnFakeLlm, stopProc, type Proc } from './processes.ts';
import {
  benchOptions,
  describeMachine,
  describeSource,
  environmentOf,
  intOption,
  median,
  percentile,
  round,
  progress,
} from './support.ts';

export const usage = `usage: npm run bench -- memory [options]
  --subtasks N       subtasks queued (default 4000)
  --latency-ms N     fake LLM latency, how long each subtask stays in flight (default 5000)
  --partitions N     partitions of the agent's topic (default 6)
  --concurrency N    MESH_CONCURRENCY of the worker (default 1000, the mesh's default)
  --rss-bound-mb N   the bound the worker's peak RSS must stay under (default 512)
  --idle-seconds S   idle sampling before the load (default 3)`;

function options(args: string[]) {
  const values = benchOptions(
    args,
    {
      subtasks: { type: 'string', default: '4000' },
      'latency-ms': { type: 'string', default: '5000' },
      partitions: { type: 'string', default: '6' },
      concurrency: { type: 'string', default: '1000' },
      'rss-bound-mb': { type: 'string', default: '512' },
      'idle-seconds': { type: 'string', default: '3' },
    },
    usage,
  );
  const count = (name: keyof typeof values, min: number): number =>
    intOption(name, values[name], min, usage);
  return {
    subtasks: count('subtasks', 1),
    latencyMs: count('latency-ms', 1),
    partitions: count('partitions', 1),
    concurrency: count('concurrency', 1),
    rssBoundMb: count('rss-bound-mb', 1),
    idleSeconds: count('idle-seconds', 1),
  };
}

/** The sum of a metric's samples in Prometheus text (all label sets), or undefined when absent. */
export function metricSum(text: string, name: string): number | undefined {
  let sum: number | undefined;
  for (const line of text.split('\n')) {
    if (!line.startsWith(name)) continue;
    const rest = line.slice(name.length);
    if (rest[0] !== ' ' && rest[0] !== '{') continue;
    const value = Number(line.slice(line.lastIndexOf(' ') + 1));
    if (Number.isFinite(value)) sum = (sum ?? 0) + value;
  }
  return sum;
}

interface Sample {
  t_s: number;
  inflight: number;
  rss_mb: number;
  heap_used_mb: number;
  eld_p99_ms: number;
  results: number;
}

export async function run(args: string[]): Promise<Record<string, unknown> & { partial: boolean }> {
  const opts = options(args);
  const log = progress('memory');
  const stack = await meshEnv();
  const machine = await describeMachine();
  const source = await describeSource();
  const llm = await spawnFakeLlm(opts.latencyMs);
  const partitionConcurrency = 200;
  const mesh = new BenchMesh({
    stack,
    name: 'memory',
    partitions: opts.partitions,
    agents: ['llm'],
    vars: {
      MESH_LLM_AGENTS: 'llm',
      MESH_LLM_BASE_URL: `${llm.url}/v1`,
      MESH_LLM_MODEL: 'fake-model',
      MESH_LLM_TIMEOUT: `${Math.max(60_000, opts.latencyMs * 4)}ms`,
      MESH_CONCURRENCY: String(opts.concurrency),
      MESH_PARTITION_CONCURRENCY: String(partitionConcurrency),
    },
    log,
  });
  const cap = Math.min(opts.concurrency, opts.partitions * partitionConcurrency);
  try {
    await mesh.start();
    const worker: Proc = await mesh.spawn('worker');
    const results = mesh.client.topics.results;
    const endOffset = async (): Promise<number> =>
      (await mesh.client.admin.endOffsets(results)).reduce((sum, p) => sum + p.high, 0);
    const started = performance.now();
    const sample = async (): Promise<Sample> => {
      const [text, memory, done] = await Promise.all([
        fetch(`${worker.url}/metrics`).then((r) => r.text()),
        memoryOf(worker.pid),
        endOffset(),
      ]);
      return {
        t_s: round((performance.now() - started) / 1_000, 2),
        inflight: metricSum(text, 'mesh_inflight') ?? 0,
        rss_mb: round(memory.rssMb, 1),
        heap_used_mb: round((metricSum(text, 'nodejs_heap_size_used_bytes') ?? 0) / 1_048_576, 1),
        eld_p99_ms: round((metricSum(text, 'nodejs_eventloop_lag_p99_seconds') ?? 0) * 1_000, 2),
        results: done,
      };
    };
    // A first scrape resets the event-loop histogram of start-up.
    await sample();
    const idle: Sample[] = [];
    log(`idle: ${opts.idleSeconds} s`);
    for (let i = 0; i < opts.idleSeconds * 2; i += 1) {
      await sleep(500);
      idle.push(await sample());
    }
    log(`publishing ${opts.subtasks} subtasks, each ${opts.latencyMs} ms at the fake LLM`);
    const topic = mesh.client.topics.work('llm');
    const loadStart = performance.now();
    for (let start = 0; start < opts.subtasks; start += 1_000) {
      const emits = [];
      for (let i = start; i < Math.min(opts.subtasks, start + 1_000); i += 1) {
        const taskId = `task-${i}`;
        emits.push({
          topic,
          event: newEvent({
            type: 'io.mesh.subtask.assigned',
            source: '/bench',
            correlationid: taskId,
            agent: 'llm',
            data: {
              taskId,
              stageId: 's1',
              nodeId: 'n1',
              agent: 'llm',
              input: { question: `benchmark question ${i}` },
            },
          }),
        });
      }
      await mesh.client.publish(emits);
    }
    const load: Sample[] = [];
    let movedAt = performance.now();
    let seen = -1;
    for (;;) {
      await sleep(500);
      const s = await sample();
      load.push(s);
      if (s.results >= opts.subtasks) break;
      if (s.results !== seen) {
        seen = s.results;
        movedAt = performance.now();
      } else if (performance.now() - movedAt > 60_000) {
        throw new Error(`the worker is stuck at ${s.results} of ${opts.subtasks} results`);
      }
    }
    const loadSeconds = (performance.now() - loadStart) / 1_000;
    const peak = await memoryOf(worker.pid);
    const plateau = load.filter((s) => s.inflight >= cap * 0.95);
    const maxInflight = Math.max(...load.map((s) => s.inflight));
    const idleRss = median(idle.map((s) => s.rss_mb)) ?? 0;
    const plateauRss = median(plateau.map((s) => s.rss_mb));
    const idleEld = median(idle.map((s) => s.eld_p99_ms));
    const loadEld = plateau.map((s) => s.eld_p99_ms);
    const checks = {
      inflight_within_cap: maxInflight <= cap,
      inflight_reached_cap: maxInflight >= cap * 0.95,
      peak_rss_under_bound: peak.peakMb <= opts.rssBoundMb,
      all_results: (load[load.length - 1]?.results ?? 0) >= opts.subtasks,
    };
    return {
      partial: false,
      bench: 'memory',
      timestamp: new Date().toISOString(),
      inflight_max: maxInflight,
      inflight_cap: cap,
      rss_mb: {
        idle: idleRss,
        at_cap_median: plateauRss,
        peak: round(peak.peakMb, 1),
        bound: opts.rssBoundMb,
      },
      rss_peak_vs_idle: round(peak.peakMb / idleRss, 2),
      rss_kb_per_inflight_subtask:
        plateauRss === null ? null : round(((plateauRss - idleRss) * 1024) / cap, 1),
      eld_p99_ms: {
        idle_median: idleEld,
        load_median: median(load.map((s) => s.eld_p99_ms)),
        load_p95_of_samples: percentile(
          load.map((s) => s.eld_p99_ms),
          95,
        ),
        load_max: Math.max(...load.map((s) => s.eld_p99_ms)),
        at_cap_median: median(loadEld),
        at_cap_max: loadEld.length === 0 ? null : Math.max(...loadEld),
      },
      checks,
      met: { bounded: Object.values(checks).every(Boolean) },
      counts: {
        subtasks: opts.subtasks,
        samples_idle: idle.length,
        samples_load: load.length,
        samples_at_cap: plateau.length,
        seconds_under_load: round(loadSeconds, 1),
        subtasks_per_s: round(opts.subtasks / loadSeconds, 1),
      },
      how: {
        inflight: "sum of the worker's mesh_inflight gauge, scraped every 500 ms",
        inflight_cap: `min(MESH_CONCURRENCY ${opts.concurrency}, ${opts.partitions} partitions × MESH_PARTITION_CONCURRENCY ${partitionConcurrency})`,
        rss: 'VmRSS of the worker process (/proc), every 500 ms; peak is VmHWM at the end',
        eld_p99_ms:
          "prom-client's nodejs_eventloop_lag_p99_seconds of the worker, over each 500 ms between scrapes (10 ms resolution); load: every sample from the publish to the last result; at_cap: samples with in-flight ≥ 95 % of the cap; a wave of 1,000 answers arriving together is handled in one go, which is what the maxima show",
        rss_kb_per_inflight_subtask: '(median RSS at cap − idle RSS) ÷ cap',
        baseline: 'the same worker idle, in the same run',
      },
      environment: await environmentOf(stack.MESH_KAFKA_BROKERS, machine),
      source,
      config: {
        partitions: opts.partitions,
        concurrency: opts.concurrency,
        partition_concurrency: partitionConcurrency,
        llm_latency_ms: opts.latencyMs,
        topic_prefix: mesh.prefix,
      },
      series: { idle, load },
    };
  } finally {
    await mesh.close();
    await stopProc(llm);
  }
}
