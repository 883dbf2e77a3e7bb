/**
 * Topic names of the contract under the configured prefix, and the specs `mesh topics init` and
 * service start-up create them with.
 */
import type { MeshConfig } from '@mesh/config';

export interface TopicNames {
  requests: string;
  results: string;
  stages: string;
  outputs: string;
  control: string;
  escalations: string;
  dlq: string;
  work(agent: string): string;
  retry(tier: string): string;
  /** The agent of a `work` topic, or undefined for any other topic. */
  agentOf(topic: string): string | undefined;
  /** The consumer group the worker service reads an agent's work topic in (`worker.<agent>`). */
  workerGroup(agent: string): string;
}

export function topicNames(prefix: string): TopicNames {
  const workPrefix = `${prefix}work.`;
  return {
    requests: `${prefix}requests`,
    results: `${prefix}results`,
    stages: `${prefix}stages`,
    outputs: `${prefix}outputs`,
    control: `${prefix}control`,
    escalations: `${prefix}escalations`,
    dlq: `${prefix}dlq`,
    work: (agent) => `${workPrefix}${agent}`,
    retry: (tier) => `${prefix}retry.${tier}`,
    agentOf: (topic) => (topic.startsWith(workPrefix) ? topic.slice(workPrefix.length) : undefined),
    workerGroup: (agent) => `${prefix}worker.${agent}`,
  };
}

/**
 * The work topics that wait for an agent nobody runs: no consumer group reads them (`read`: the
 * topics the groups of the mesh subscribe to or committed on) and their worker group does not exist
 * (`groups`). Lag is read per group, so these would show nowhere; each comes with the group its
 * worker would have, under which its lag is read (never committed: every event in it is lag).
 */
export function unreadWorkTopics(
  names: TopicNames,
  topics: Iterable<string>,
  read: ReadonlySet<string>,
  groups: ReadonlySet<string>,
): { topic: string; agent: string; group: string }[] {
  const unread: { topic: string; agent: string; group: string }[] = [];
  for (const topic of topics) {
    const agent = names.agentOf(topic);
    if (agent === undefined || read.has(topic)) continue;
    const group = names.workerGroup(agent);
    if (!groups.has(group)) unread.push({ topic, agent, group });
  }
  return unread.sort((a, b) => a.topic.localeCompare(b.topic));
}

export interface TopicSpec {
  topic: string;
  numPartitions: number;
  replicationFactor: number;
  configs?: Record<string, string>;
}

/** Every topic of the mesh for the given agents: the fixed ones, one work topic per agent, one per retry tier. */
export function topicSpecs(
  config: Pick<MeshConfig, 'topicPrefix' | 'partitions' | 'replicationFactor' | 'retryTiers'>,
  agents: string[],
): TopicSpec[] {
  const names = topicNames(config.topicPrefix);
  const spec = (topic: string, configs?: Record<string, string>): TopicSpec => ({
    topic,
    numPartitions: config.partitions,
    replicationFactor: config.replicationFactor,
    ...(configs === undefined ? {} : { configs }),
  });
  const thirtyDays = String(30 * 86_400_000);
  return [
    spec(names.requests),
    spec(names.results),
    spec(names.stages),
    spec(names.outputs),
    spec(names.control),
    spec(names.escalations, { 'retention.ms': thirtyDays }),
    spec(names.dlq, { 'retention.ms': thirtyDays }),
    ...config.retryTiers.map((tier) => spec(names.retry(tier.name))),
    ...[...new Set(agents)].map((agent) => spec(names.work(agent))),
  ];
}
