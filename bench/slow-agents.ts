/**
 * Slow agents: the fan-out task when each agent takes 500 ms (the fake LLM), the mesh against the
 * same pipeline whose agents are plain kafkajs `eachMessage` consumers, side by side in one run.
 *
 * Mesh: the four services as processes; research, summarize and fact-check are LLM agents served by
 * the fake LLM (`FAKE_LLM_LATENCY_MS`); one partition per topic, one worker replica. The runtime runs
 * the different keys of a partition concurrently.
 * Plain: the raw pipeline of the e2e benchmark, its agents `eachMessage` consumers that call the
 * same fake LLM for each message, one at a time (kafkajs runs a partition's messages in order).
 *
 * Then the scaling curve: worker replicas 1 → 2 → 4 (more are started into the running mesh), on
 * one partition per agent topic (a partition has one consumer per group, so only one replica of an
 * agent's group can work) and on more partitions.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { meshEnv } from '@mesh/testkit';
import { BenchMesh } from './mesh.ts';
import { OutputWatcher, saturation, type SaturationResult } from './pipeline.ts';
import { RawProducer, rawAgents, rawOutcome, rawTopics } from './plain-kafkajs.ts';
import {
  cpuDuring,
  spawnFakeLlm,
  spawnRawPipeline,
  stackProcs,
  stopProc,
  type Proc,
  type ServiceName,
} from './processes.ts';
import {
  describeMachine,
  describeSource,
  environmentOf,
  round,
  progress,
  benchOptions,
  intOption,
} from './support.ts';

export const usage = `usage: npm run bench -- slow-agents [options]
  --latency-ms N             fake LLM latency per call (default 500)
  --seconds S                measured window of each mesh run, after --warmup-seconds (default 15)
  --warmup-seconds S         warm-up of each run, not counted (default 4)
  --window N                 tasks the mesh's closed loop keeps outstanding (default 1000)
  --plain-seconds S          measured window of the plain pipeline (default 15)
  --plain-window N           tasks the plain pipeline's closed loop keeps outstanding (default 10)
  --replicas LIST            the scaling curve's worker replicas (default 1,2,4)
  --scaling-partitions LIST  partitions per topic of each scaling curve (default 1,4; 1 is the headline's mesh)
  --profile-dir DIR          run every process under --cpu-prof into DIR (the results file is not written)`;

function options(args: string[]) {
  const values = benchOptions(
    args,
    {
      'latency-ms': { type: 'string', default: '500' },
      seconds: { type: 'string', default: '15' },
      'warmup-seconds': { type: 'string', default: '4' },
      window: { type: 'string', default: '1000' },
      'plain-seconds': { type: 'string', default: '15' },
      'plain-window': { type: 'string', default: '10' },
      replicas: { type: 'string', default: '1,2,4' },
      'scaling-partitions': { type: 'string', default: '1,4' },
      'profile-dir': { type: 'string' },
    },
    usage,
  );
  const int = (name: string, text: string, min: number): number =>
    intOption(name, text, min, usage);
  const list = (name: 'replicas' | 'scaling-partitions'): number[] =>
    [...new Set(values[name].split(',').map((item) => int(name, item, 1)))].sort((a, b) => a - b);
  const replicas = list('replicas');
  if (replicas[0] !== 1) throw new Error(`--replicas must start with 1\n${usage}`);
  return {
    latencyMs: int('latency-ms', values['latency-ms'], 1),
    seconds: int('seconds', values.seconds, 1),
    warmupSeconds: int('warmup-seconds', values['warmup-seconds'], 0),
    window: int('window', values.window, 1),
    plainSeconds: int('plain-seconds', values['plain-seconds'], 1),
    plainWindow: int('plain-window', values['plain-window'], 1),
    replicas,
    scalingPartitions: list('scaling-partitions'),
    profileDir: values['profile-dir'],
  };
}

interface Point extends SaturationResult {
  replicas: number;
  partitions: number;
  cpu_s: Record<string, number>;
}

export async function run(args: string[]): Promise<Record<string, unknown> & { partial: boolean }> {
  const opts = options(args);
  const log = progress('slow-agents');
  const stack = await meshEnv();
  const machine = await describeMachine();
  const source = await describeSource();
  const brokers = stack.MESH_KAFKA_BROKERS;
  const profile = opts.profileDir === undefined ? {} : { profileDir: opts.profileDir };
  const llm = await spawnFakeLlm(opts.latencyMs);
  const stackSide = await stackProcs(brokers);
  const meshes: BenchMesh[] = [];
  const watchers: OutputWatcher[] = [];
  const rawProcs: Proc[] = [];
  const rawProducer = new RawProducer(brokers.split(','));
  const llmVars = {
    MESH_LLM_AGENTS: rawAgents.join(','),
    MESH_LLM_BASE_URL: `${llm.url}/v1`,
    MESH_LLM_MODEL: 'fake-model',
  };
  const curves: { partitions: number; points: Point[] }[] = [];
  let plain: (SaturationResult & { cpu_s: Record<string, number> }) | undefined;
  try {
    for (const partitions of opts.scalingPartitions) {
      const mesh = new BenchMesh({
        stack,
        name: 'slow',
        partitions,
        agents: [...rawAgents],
        vars: llmVars,
        log,
        ...profile,
      });
      meshes.push(mesh);
      await mesh.start();
      const watcher = await OutputWatcher.start(
        mesh.client.kafka,
        mesh.client.topics.outputs,
        BenchMesh.classify,
      );
      watchers.push(watcher);
      log(`mesh ${mesh.prefix} (${partitions} partition(s) per topic): starting the services`);
      const services: ServiceName[] = ['orchestrator', 'worker', 'aggregator', 'dlq-triage'];
      await Promise.all(services.map((name) => mesh.spawn(name)));

      // The plain pipeline runs beside the first mesh, one partition per topic like it.
      if (plain === undefined && partitions === 1) {
        const raw = rawTopics(mesh.prefix);
        await mesh.client.admin.ensureTopics(
          raw.all.map((topic) => ({ topic, numPartitions: 1, replicationFactor: 1 })),
        );
        await rawProducer.connect();
        const rawWatcher = await OutputWatcher.start(mesh.client.kafka, raw.outputs, rawOutcome);
        watchers.push(rawWatcher);
        log('plain pipeline: starting planner, eachMessage agents, joiner');
        rawProcs.push(
          ...(await spawnRawPipeline({
            brokers,
            prefix: mesh.prefix,
            mode: 'slow',
            llmUrl: `${llm.url}/v1`,
            ...profile,
          })),
        );
        log(`plain: ${opts.plainWindow} tasks outstanding, ${opts.plainSeconds} s`);
        const { result, cpu } = await cpuDuring([...rawProcs, llm, ...stackSide], () =>
          saturation(rawProducer.publisher(raw.requests), rawWatcher, 'plain', {
            window: opts.plainWindow,
            seconds: opts.plainSeconds,
            warmupSeconds: Math.max(2, (opts.latencyMs * 3) / 1_000),
          }),
        );
        plain = { ...result, cpu_s: roundAll(cpu) };
        log(`plain: ${result.tasks_per_s} tasks/s`);
        await Promise.all(rawProcs.splice(0).map((p) => stopProc(p)));
        await mesh.client.admin.deleteTopics(raw.all).catch(() => undefined);
      }

      const points: Point[] = [];
      for (const replicas of opts.replicas) {
        const workers = mesh.procs.filter((p) => p.name.startsWith('worker-')).length;
        if (workers < replicas) {
          await Promise.all(Array.from({ length: replicas - workers }, () => mesh.spawn('worker')));
          // Let the groups rebalance onto the new members before measuring.
          await sleep(5_000);
        }
        log(
          `mesh, ${partitions} partition(s), ${replicas} worker(s): ${opts.window} tasks outstanding`,
        );
        const { result, cpu } = await cpuDuring([...mesh.procs, llm, ...stackSide], () =>
          saturation(mesh.publisher('fan-out'), watcher, `slow-${partitions}-${replicas}`, {
            window: opts.window,
            seconds: opts.seconds,
            warmupSeconds: opts.warmupSeconds,
          }),
        );
        points.push({ replicas, partitions, ...result, cpu_s: roundAll(cpu) });
        log(
          `mesh, ${partitions} partition(s), ${replicas} worker(s): ${result.tasks_per_s} tasks/s`,
        );
      }
      curves.push({ partitions, points });
      await watcher.stop();
      watchers.splice(watchers.indexOf(watcher), 1);
      await mesh.close();
      meshes.splice(meshes.indexOf(mesh), 1);
    }

    const headline = curves.find((c) => c.partitions === 1)?.points.find((p) => p.replicas === 1);
    const ratio =
      headline === undefined || plain === undefined
        ? null
        : round(headline.tasks_per_s / plain.tasks_per_s, 1);
    return {
      partial: opts.profileDir !== undefined,
      bench: 'slow-agents',
      timestamp: new Date().toISOString(),
      speedup_vs_plain: ratio,
      targets: { speedup_vs_plain: 20 },
      met: { speedup_vs_plain: ratio !== null && ratio >= 20 },
      mesh_tasks_per_s: headline?.tasks_per_s ?? null,
      plain_tasks_per_s: plain?.tasks_per_s ?? null,
      scaling: curves.map((curve) => {
        const one = curve.points.find((p) => p.replicas === 1)?.tasks_per_s;
        return {
          partitions: curve.partitions,
          tasks_per_s: Object.fromEntries(curve.points.map((p) => [p.replicas, p.tasks_per_s])),
          vs_one_replica: Object.fromEntries(
            curve.points.map((p) => [
              p.replicas,
              one === undefined ? null : round(p.tasks_per_s / one, 2),
            ]),
          ),
        };
      }),
      counts: {
        agent_latency_ms: opts.latencyMs,
        mesh_window_tasks: opts.window,
        plain_window_tasks: opts.plainWindow,
        mesh_completed: curves.flatMap((c) => c.points.map((p) => p.completed)),
        plain_completed: plain?.completed ?? null,
        mesh_tasks_failed: curves.reduce(
          (n, c) => n + c.points.reduce((m, p) => m + p.failed, 0),
          0,
        ),
      },
      how: {
        rates:
          'closed loop: a window of tasks kept outstanding (each outcome replaced by a new request); completions counted over the measured window after the warm-up',
        speedup_vs_plain:
          'mesh tasks/s (1 partition per topic, 1 worker replica) ÷ plain tasks/s (1 partition per topic, eachMessage agents)',
        plain_bound: `an eachMessage consumer runs one call at a time: at most 1000 / ${opts.latencyMs} subtasks/s per agent topic partition`,
        scaling:
          'worker replicas added to the running mesh (5 s to rebalance) and measured again; with 1 partition per agent topic one member of each agent group holds it, so replicas beyond the first can only spread the three groups',
        cpu_s: 'CPU seconds (user + system, /proc) of each process during the run',
      },
      environment: await environmentOf(brokers, machine),
      source,
      config: {
        replicas: opts.replicas,
        scaling_partitions: opts.scalingPartitions,
        seconds: opts.seconds,
        warmup_seconds: opts.warmupSeconds,
        plain_seconds: opts.plainSeconds,
        partition_concurrency_default: 200,
        profiled: opts.profileDir !== undefined,
      },
      plain: plain ?? null,
      curves,
    };
  } finally {
    await Promise.all(watchers.map((w) => w.stop().catch(() => undefined)));
    await Promise.all(rawProcs.map((p) => stopProc(p)));
    await rawProducer.disconnect().catch(() => undefined);
    for (const mesh of meshes) await mesh.close();
    await stopProc(llm);
  }
}

function roundAll(values: Record<string, number>): Record<string, number> {
  return Object.fromEntries(Object.entries(values).map(([k, v]) => [k, round(v, 2)]));
}
