/**
 * Lag recovery: a backlog of subtask events queued while the workers are down, then drained.
 *
 * For each replica count (1, then 2): a fresh mesh, `--events` `io.mesh.subtask.assigned` events
 * published to `mesh.work.echo` (the instant built-in agent) with no worker running, then the worker
 * replicas started together. The group's lag (end offsets − committed offsets, from the broker) is
 * read every 500 ms until it is zero. Baseline in the same run: a plain kafkajs eachBatch relay
 * (`bench/raw-pipeline.ts relay`, a process) draining the same backlog with a group of its own.
 *
 * The series go into the JSON and into `bench/results/lag-recovery.png` (and `.svg`).
 */
import { join, relative } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { newEvent } from '@mesh/envelope';
import { meshEnv } from '@mesh/testkit';
import { writeChart } from './chart.ts';
import { BenchMesh } from './mesh.ts';
import {
  cpuDuring,
  cpuSeconds,
  root,
  spawnRaw,
  stackProcs,
  stopProc,
  tail,
  type Proc,
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

export const usage = `usage: npm run bench -- lag-recovery [options]
  --events N         events queued before the workers start (default 100000)
  --partitions N     partitions of the agent's topic (default 6)
  --replicas LIST    worker replicas of each drain (default 1,2)
  --sample-ms N      how often the lag is read (default 500)
  --no-raw           skip the plain kafkajs relay baseline
  --no-chart         do not render bench/results/lag-recovery.png
  --profile-dir DIR  run the workers under --cpu-prof into DIR (the results file is not written)`;

function options(args: string[]) {
  const values = benchOptions(
    args,
    {
      events: { type: 'string', default: '100000' },
      partitions: { type: 'string', default: '6' },
      replicas: { type: 'string', default: '1,2' },
      'sample-ms': { type: 'string', default: '500' },
      'no-raw': { type: 'boolean', default: false },
      'no-chart': { type: 'boolean', default: false },
      'profile-dir': { type: 'string' },
    },
    usage,
  );
  const int = (name: string, text: string, min: number): number =>
    intOption(name, text, min, usage);
  return {
    events: int('events', values.events, 1),
    partitions: int('partitions', values.partitions, 1),
    replicas: [...new Set(values.replicas.split(',').map((r) => int('replicas', r, 1)))],
    sampleMs: int('sample-ms', values['sample-ms'], 50),
    raw: !values['no-raw'],
    chart: !values['no-chart'],
    profileDir: values['profile-dir'],
  };
}

interface Drain {
  name: string;
  replicas: number;
  /** Seconds from starting the consumers' processes until the lag was zero. */
  drain_s: number;
  /** Seconds from the first consumer being ready (joined, for the mesh: /readyz) until then. */
  drain_after_ready_s: number;
  ready_s: number;
  events_per_s: number;
  cpu_s: Record<string, number>;
  series: { t_s: number; lag: number }[];
}

export async function run(args: string[]): Promise<Record<string, unknown> & { partial: boolean }> {
  const opts = options(args);
  const log = progress('lag-recovery');
  const stack = await meshEnv();
  const machine = await describeMachine();
  const source = await describeSource();
  const brokers = stack.MESH_KAFKA_BROKERS;
  const stackSide = await stackProcs(brokers);
  const drains: Drain[] = [];
  const fills: { replicas: number; seconds: number }[] = [];
  const started = performance.now();

  /**
   * Starts the consumers (`start` resolves once they are ready) and reads the group's lag until it is
   * zero. @throws Error when the lag does not move for 60 s.
   */
  const drain = async (
    mesh: BenchMesh,
    name: string,
    replicas: number,
    groupId: string,
    start: () => Promise<Proc[]>,
  ): Promise<{ drain: Drain; procs: Proc[] }> => {
    const topic = mesh.client.topics.work('echo');
    const series: { t_s: number; lag: number }[] = [];
    const t0 = performance.now();
    let readyAt: number | undefined;
    let procs: Proc[] = [];
    const starting = start().then((p) => {
      readyAt = performance.now();
      procs = p;
      return p;
    });
    const { cpu, result: doneAt } = await cpuDuring(stackSide, async () => {
      let last = -1;
      let movedAt = performance.now();
      for (;;) {
        const partitions = await mesh.client.admin.lag(groupId, [topic]);
        const lag = partitions.reduce((sum, p) => sum + p.lag, 0);
        const now = performance.now();
        series.push({ t_s: round((now - t0) / 1_000, 2), lag });
        if (lag === 0 && partitions.every((p) => p.committed >= 0)) return now;
        if (lag !== last) {
          last = lag;
          movedAt = now;
        } else if (now - movedAt > 60_000 && readyAt !== undefined) {
          const where = partitions
            .map((p) => `p${p.partition} committed ${p.committed} of ${p.high}`)
            .join(', ');
          const tails = procs.map((p) => `--- ${p.name}: ${tail(p, 20)}`).join('\n');
          throw new Error(`${name}: the lag stayed at ${lag} for 60 s (${where})\n${tails}`);
        }
        await sleep(opts.sampleMs);
      }
    });
    await starting;
    const seconds = (doneAt - t0) / 1_000;
    // The consumers' whole lives so far: boot and drain.
    for (const p of procs) cpu[p.name] = (cpu[p.name] ?? 0) + (await cpuSeconds(p.pid));
    return {
      procs,
      drain: {
        name,
        replicas,
        drain_s: round(seconds, 2),
        drain_after_ready_s: round((doneAt - (readyAt ?? t0)) / 1_000, 2),
        ready_s: round(((readyAt ?? t0) - t0) / 1_000, 2),
        events_per_s: round(opts.events / seconds, 1),
        cpu_s: Object.fromEntries(Object.entries(cpu).map(([k, v]) => [k, round(v, 1)])),
        series,
      },
    };
  };

  let firstRawDone = false;
  for (const replicas of opts.replicas) {
    const mesh = new BenchMesh({
      stack,
      name: 'lag',
      partitions: opts.partitions,
      agents: ['echo'],
      log,
      ...(opts.profileDir === undefined ? {} : { profileDir: opts.profileDir }),
    });
    const rawProcs: Proc[] = [];
    const rawOut = `${mesh.prefix}raw.relay.out`;
    try {
      await mesh.start();
      const topic = mesh.client.topics.work('echo');
      log(`${mesh.prefix}: publishing ${opts.events} subtasks with no worker running`);
      const fillStart = performance.now();
      const chunk = 1_000;
      const inFlight = new Set<Promise<void>>();
      for (let start = 0; start < opts.events; start += chunk) {
        const emits = [];
        for (let i = start; i < Math.min(opts.events, start + chunk); i += 1) {
          const taskId = `task-${i % 10_000}`;
          emits.push({
            topic,
            event: newEvent({
              type: 'io.mesh.subtask.assigned',
              source: '/bench',
              correlationid: taskId,
              agent: 'echo',
              data: { taskId, stageId: 's1', nodeId: `n${i}`, agent: 'echo', input: { seq: i } },
            }),
          });
        }
        const sending = mesh.client.publish(emits).finally(() => inFlight.delete(sending));
        inFlight.add(sending);
        if (inFlight.size >= 4) await Promise.race(inFlight);
      }
      await Promise.all(inFlight);
      const fillSeconds = round((performance.now() - fillStart) / 1_000, 1);
      fills.push({ replicas, seconds: fillSeconds });
      log(`queued in ${fillSeconds} s; starting ${replicas} worker(s)`);
      const { drain: mesh1, procs: workers } = await drain(
        mesh,
        `mesh, ${replicas} worker${replicas === 1 ? '' : 's'}`,
        replicas,
        mesh.client.groupId('worker.echo'),
        () => Promise.all(Array.from({ length: replicas }, () => mesh.spawn('worker'))),
      );
      drains.push(mesh1);
      log(`${mesh1.name}: drained in ${mesh1.drain_s} s (${mesh1.events_per_s} events/s)`);
      for (const w of workers) await mesh.stop(w);

      if (opts.raw && !firstRawDone) {
        firstRawDone = true;
        await mesh.client.admin.ensureTopics([
          { topic: rawOut, numPartitions: opts.partitions, replicationFactor: 1 },
        ]);
        const groupId = `${mesh.prefix}raw.relay`;
        const { drain: rawDrain, procs } = await drain(
          mesh,
          'plain kafkajs relay',
          1,
          groupId,
          async () => [
            await spawnRaw('relay', [
              '--brokers',
              brokers,
              '--input',
              topic,
              '--output',
              rawOut,
              '--group',
              groupId,
            ]),
          ],
        );
        rawProcs.push(...procs);
        drains.push(rawDrain);
        log(
          `${rawDrain.name}: drained in ${rawDrain.drain_s} s (${rawDrain.events_per_s} events/s)`,
        );
      }
    } finally {
      await Promise.all(rawProcs.map((p) => stopProc(p)));
      await mesh.close([rawOut]);
    }
  }

  const meshDrain = (replicas: number): Drain | undefined =>
    drains.find((d) => d.name.startsWith('mesh') && d.replicas === replicas);
  const one = meshDrain(1);
  const two = meshDrain(2);
  const raw = drains.find((d) => d.name.startsWith('plain'));
  const files: string[] = [];
  const partial = opts.profileDir !== undefined;
  if (opts.chart && !partial) {
    files.push(
      ...(await writeChart(
        {
          title: `Lag recovery: ${opts.events.toLocaleString('en-US')} queued subtask events`,
          subtitle: `${opts.partitions} partitions, instant echo agent; lag read from the broker every ${opts.sampleMs} ms; ${machineLine(machine.cores)}`,
          xLabel: 'seconds since the consumers were started',
          yLabel: 'consumer lag (events)',
          series: drains.map((d) => ({
            name: `${d.name}: ${d.drain_s} s`,
            points: d.series.map((s): [number, number] => [s.t_s, s.lag]),
          })),
        },
        join(import.meta.dirname, 'results', 'lag-recovery'),
      )),
    );
  }
  return {
    partial,
    bench: 'lag-recovery',
    timestamp: new Date().toISOString(),
    events: opts.events,
    drain_s: Object.fromEntries(drains.map((d) => [d.name, d.drain_s])),
    events_per_s: Object.fromEntries(drains.map((d) => [d.name, d.events_per_s])),
    ratios: {
      two_vs_one_replica_speedup:
        one !== undefined && two !== undefined ? round(one.drain_s / two.drain_s, 2) : null,
      mesh_one_replica_vs_plain_relay_rate:
        one !== undefined && raw !== undefined
          ? round(one.events_per_s / raw.events_per_s, 3)
          : null,
    },
    counts: {
      events: opts.events,
      partitions: opts.partitions,
      replicas: opts.replicas,
      fill_seconds: fills,
      run_seconds: round((performance.now() - started) / 1_000, 1),
    },
    how: {
      drain_s:
        "from starting the consumer processes (boot included; ready_s says how long that took) until the group's lag, read from the broker, is zero with every partition committed",
      lag: 'sum over partitions of end offset − committed offset (from the earliest offset before the first commit)',
      two_vs_one_replica_speedup: 'drain_s with 1 replica ÷ drain_s with 2 replicas',
      mesh_one_replica_vs_plain_relay_rate:
        'mesh events/s (1 replica) ÷ plain kafkajs eachBatch relay events/s, same backlog, same broker',
      cpu_s:
        'CPU seconds during the drain: Kafka, the registry and Redis, this process, and the consumers (their whole lives, boot included)',
    },
    chart: files.map((f) => relative(root, f)),
    environment: await environmentOf(brokers, machine),
    source,
    drains,
  };
}

function machineLine(cores: number): string {
  return `${cores} cores, Kafka, Redis and the consumers on one machine`;
}
