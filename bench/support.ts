/**
 * What every benchmark reports besides its figures: the machine, the versions, small statistics.
 */
import { execFile } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { availableParallelism, cpus, loadavg, platform, release } from 'node:os';
import { parseArgs, type ParseArgsOptionsConfig } from 'node:util';
import type { MeshConfig } from '@mesh/config';
import { createKafka, type Kafka } from '@mesh/kafka';
import { createRedis, waitForRedis } from '@mesh/redis';
import * as stack from '@mesh/stack';

/**
 * A benchmark's command-line options, strictly: an unknown or malformed option is an error that
 * ends with the benchmark's usage.
 */
export function benchOptions<const O extends ParseArgsOptionsConfig>(
  args: string[],
  options: O,
  usage: string,
) {
  try {
    return parseArgs({ args, options, strict: true }).values;
  } catch (error) {
    throw new Error(`${(error as Error).message}\n${usage}`);
  }
}

/** The integer value of option `--name` (or of one item of its list), at least `min`. */
export function intOption(name: string, text: unknown, min: number, usage: string): number {
  const n = Number(text);
  if (!Number.isSafeInteger(n) || n < min)
    throw new Error(`--${name} must be an integer ≥ ${min}\n${usage}`);
  return n;
}

const git = (args: string[]): Promise<string> =>
  new Promise((resolve) =>
    execFile('git', args, { cwd: import.meta.dirname }, (error, stdout) =>
      resolve(error === null ? stdout : ''),
    ),
  );

/**
 * The commit measured, and the files of the mesh's packages, services and benchmarks (results
 * aside) that differ from it: the working tree is what runs, and others may be changing it.
 */
export async function describeSource(): Promise<{ commit: string; modified: string[] }> {
  const [commit, status] = await Promise.all([
    git(['rev-parse', '--short', 'HEAD']),
    git(['status', '--porcelain', '--', '../packages', '../services', '.', ':(exclude)results']),
  ]);
  return {
    commit: commit.trim() || 'unknown',
    modified: status
      .split('\n')
      .filter(Boolean)
      .map((line) => line.slice(3)),
  };
}

export interface Machine {
  cores: number;
  /** 1-minute load average when the benchmark started: other work on the machine skews the rates. */
  loadAverage: number;
  cpu: string;
  platform: string;
  /** kafkajs as the mesh and the target baselines run it: patched at install. */
  kafkajs: string;
  /** kafkajs as published (`kafkajs-stock`), for the context baselines. */
  kafkajsStock: string;
}

export async function describeMachine(): Promise<Machine> {
  const require = createRequire(import.meta.url);
  const versionOf = async (name: string): Promise<string> =>
    (
      JSON.parse(await readFile(require.resolve(`${name}/package.json`), 'utf8')) as {
        version: string;
      }
    ).version;
  return {
    cores: availableParallelism(),
    loadAverage: round(loadavg()[0] ?? 0, 2),
    cpu: cpus()[0]?.model ?? 'unknown',
    platform: `${platform()} ${release()}`,
    kafkajs: await versionOf('kafkajs'),
    kafkajsStock: await versionOf('kafkajs-stock'),
  };
}

/**
 * The broker's version: `kafkaVersion` of `@mesh/stack` when that package exports it and the brokers
 * are the local stack's; else the admin API. Kafka has no "version" request (kafkajs speaks
 * ApiVersions v2, which carries no release), so the admin answer is the broker's
 * `inter.broker.protocol.version` default, which names the release line (e.g. `3.9-IV0` → `3.9`).
 */
export async function brokerVersion(
  kafka: Kafka,
  brokers: string,
): Promise<{ version: string; source: string }> {
  const exported: unknown = (stack as Record<string, unknown>).kafkaVersion;
  if (typeof exported === 'string') {
    const local = await stack.readStackEnv();
    if (local?.MESH_KAFKA_BROKERS === brokers)
      return { version: exported, source: '@mesh/stack kafkaVersion (the local stack)' };
  }
  const admin = kafka.admin();
  await admin.connect();
  try {
    const { brokers: nodes } = await admin.describeCluster();
    const node = nodes[0];
    if (node === undefined) return { version: 'unknown', source: 'admin API: no broker listed' };
    const { resources } = await admin.describeConfigs({
      includeSynonyms: false,
      // 4 is ConfigResourceTypes.BROKER; the enum lives in kafkajs, which only the baseline imports.
      resources: [
        { type: 4, name: String(node.nodeId), configNames: ['inter.broker.protocol.version'] },
      ],
    });
    const ibp = resources[0]?.configEntries.find(
      (entry) => entry.configName === 'inter.broker.protocol.version',
    )?.configValue;
    if (ibp === undefined)
      return { version: 'unknown', source: 'admin API: no inter.broker.protocol.version' };
    return {
      version: ibp.replace(/-IV\d+$/, ''),
      source: `admin API: broker ${node.nodeId} inter.broker.protocol.version=${ibp} (release line; patch level not exposed)`,
    };
  } finally {
    await admin.disconnect();
  }
}

export function median(values: number[]): number | null {
  if (values.length === 0) return null;
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  const value =
    sorted.length % 2 === 1
      ? (sorted[mid] as number)
      : ((sorted[mid - 1] as number) + (sorted[mid] as number)) / 2;
  return round(value, 3);
}

export function round(value: number, digits: number): number {
  const scale = 10 ** digits;
  return Math.round(value * scale) / scale;
}

/** The `p`-th percentile (0..100, nearest rank) of `values`, in their unit; null when empty. */
export function percentile(values: number[], p: number): number | null {
  if (values.length === 0) return null;
  const sorted = [...values].sort((a, b) => a - b);
  const rank = Math.min(sorted.length, Math.max(1, Math.ceil((p / 100) * sorted.length)));
  return sorted[rank - 1] as number;
}

/** p50/p95/p99/max of latencies in ms, rounded to 0.1 ms. */
export function latencySummary(values: number[]): {
  count: number;
  p50_ms: number | null;
  p95_ms: number | null;
  p99_ms: number | null;
  max_ms: number | null;
} {
  const at = (p: number): number | null => {
    const v = percentile(values, p);
    return v === null ? null : round(v, 1);
  };
  return { count: values.length, p50_ms: at(50), p95_ms: at(95), p99_ms: at(99), max_ms: at(100) };
}

/** Deletes the Redis keys matching `pattern` (a run's keys, once its own clients are closed). */
export async function removeKeys(config: MeshConfig, pattern: string): Promise<void> {
  const redis = createRedis(config.redis, { connectionName: 'mesh-bench-cleanup' });
  try {
    await waitForRedis(redis, 5_000);
    let cursor = '0';
    do {
      const [next, keys] = await redis.scan(cursor, 'MATCH', pattern, 'COUNT', 1_000);
      cursor = next;
      if (keys.length > 0) await redis.unlink(...keys);
    } while (cursor !== '0');
  } finally {
    redis.disconnect();
  }
}

/** The run's environment block of every result file: versions, cores, load. */
export async function environmentOf(
  brokers: string,
  machine: Machine,
): Promise<Record<string, unknown>> {
  const broker = await brokerVersion(
    createKafka({ brokers: brokers.split(','), clientId: 'mesh-bench-environment' }),
    brokers,
  );
  return {
    broker: broker.version,
    broker_version_source: broker.source,
    node: process.version,
    kafkajs: `${machine.kafkajs} (patched at install: packages/kafka/patches/kafkajs.mjs)`,
    kafkajs_stock: `${machine.kafkajsStock} (as published, npm alias kafkajs-stock)`,
    cores: machine.cores,
    load_average_1m: { start: machine.loadAverage, end: round(loadavg()[0] ?? 0, 2) },
    cpu: machine.cpu,
    platform: machine.platform,
  };
}

/** A progress line on stderr, with the seconds since the benchmark started: `[bench e2e +12.3s] …`. */
export function progress(name: string): (message: string) => void {
  const started = performance.now();
  return (message) => {
    const seconds = ((performance.now() - started) / 1_000).toFixed(1);
    process.stderr.write(`[bench ${name} +${seconds}s] ${message}\n`);
  };
}
