/**
 * What every benchmark reports besides its figures: the machine, the versions, small statistics.
 */
import { execFile } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { availableParallelism, cpus, loadavg, platform, release } from 'node:os';
import type { Kafka } from '@mesh/kafka';
import * as stack from '@mesh/stack';

const git = (args: string[]): Promise<string> =>
  new Promise((resolve) =>
    execFile('git', args, { cwd: import.meta.dirname }, (error, stdout) =>
      resolve(error === null ? stdout : ''),
    ),
  );

/**
 * The commit measured, and the files of the mesh's packages that differ from it: the working tree
 * is what runs, and others may be changing it.
 */
export async function describeSource(): Promise<{ commit: string; modified: string[] }> {
  const [commit, status] = await Promise.all([
    git(['rev-parse', '--short', 'HEAD']),
    git(['status', '--porcelain', '--', '../packages']),
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
  kafkajs: string;
}

export async function describeMachine(): Promise<Machine> {
  const require = createRequire(import.meta.url);
  const manifest = JSON.parse(await readFile(require.resolve('kafkajs/package.json'), 'utf8')) as {
    version: string;
  };
  return {
    cores: availableParallelism(),
    loadAverage: round(loadavg()[0] ?? 0, 2),
    cpu: cpus()[0]?.model ?? 'unknown',
    platform: `${platform()} ${release()}`,
    kafkajs: manifest.version,
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
