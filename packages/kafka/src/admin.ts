/**
 * Topic management and the offsets that consumer lag is computed from, through the kafkajs admin.
 */
import type { Admin, Kafka } from 'kafkajs';
import { retryable } from '@mesh/errors';
import { connectFailure } from './client.ts';

export interface TopicSpec {
  topic: string;
  numPartitions: number;
  replicationFactor: number;
  configs?: Record<string, string>;
}

export interface PartitionLag {
  topic: string;
  partition: number;
  /** Next offset the group will read; -1 when the group has never committed. */
  committed: number;
  /** Earliest offset still in the log (a group without commit starts there). */
  low: number;
  /** Next offset to be written (high watermark). */
  high: number;
  lag: number;
}

export class MeshAdmin {
  readonly #kafka: Kafka;
  #admin: Admin;
  #connected: Promise<void> | undefined;
  /** The last topic listing and when it was asked for (see `listTopics`). */
  #listing: { at: number; topics: Promise<string[]> } | undefined;

  constructor(kafka: Kafka) {
    this.#kafka = kafka;
    this.#admin = this.#create();
  }

  #create(): Admin {
    return this.#kafka.admin({
      retry: { retries: 5, initialRetryTime: 200, maxRetryTime: 3_000 },
    });
  }

  async #ready(): Promise<Admin> {
    this.#connected ??= this.#admin.connect().catch((error: unknown) => {
      this.#connected = undefined;
      throw connectFailure('admin', error);
    });
    await this.#connected;
    return this.#admin;
  }

  /**
   * The cluster's topics. A listing is the metadata of every topic in the cluster, heavy on a large
   * shared one, so a caller that polls may accept one up to `maxAgeMs` old: the last listing (or
   * one under way) is then shared instead of read again. Topics created or deleted through this
   * admin invalidate it. @throws MeshError `kafka_unavailable` (retryable) when the cluster's
   * metadata cannot be read.
   */
  async listTopics(options: { maxAgeMs?: number } = {}): Promise<string[]> {
    const last = this.#listing;
    if (last !== undefined && Date.now() - last.at <= (options.maxAgeMs ?? -1))
      return [...(await last.topics)];
    const listing = { at: Date.now(), topics: this.#readTopics() };
    this.#listing = listing;
    listing.topics.catch(() => {
      if (this.#listing === listing) this.#listing = undefined;
    });
    return [...(await listing.topics)];
  }

  /**
   * Asks the cluster something small and live, whatever its size: the coordinator of each group of
   * `groupIds`, and the groups' state from it (FindCoordinator and DescribeGroups). A readiness
   * probe's question: a topic listing (a Metadata request for every topic of the cluster) grows
   * with the cluster, to megabytes and tens of milliseconds per probe on a shared one of thousands
   * of topics. Groups the cluster does not know answer too (as dead groups).
   * @throws MeshError `kafka_unavailable` (retryable) when the cluster does not answer.
   */
  async probe(groupIds: string[]): Promise<void> {
    const admin = await this.#ready();
    try {
      await admin.describeGroups(groupIds);
    } catch (error) {
      throw retryable('kafka_unavailable', `Kafka did not answer: ${(error as Error).message}`, {
        cause: error,
      });
    }
  }

  async #readTopics(): Promise<string[]> {
    const admin = await this.#ready();
    try {
      return await admin.listTopics();
    } catch (error) {
      throw retryable(
        'kafka_unavailable',
        `could not read the cluster's topics: ${(error as Error).message}`,
        { cause: error },
      );
    }
  }

  /** Creates the topics that do not exist; existing ones are left as they are. Returns the created names. */
  async ensureTopics(specs: TopicSpec[]): Promise<string[]> {
    const admin = await this.#ready();
    const existing = new Set(await admin.listTopics());
    const missing = specs.filter((spec) => !existing.has(spec.topic));
    if (missing.length === 0) return [];
    try {
      await admin.createTopics({
        waitForLeaders: true,
        topics: missing.map((spec) => ({
          topic: spec.topic,
          numPartitions: spec.numPartitions,
          replicationFactor: spec.replicationFactor,
          configEntries: Object.entries(spec.configs ?? {}).map(([name, value]) => ({
            name,
            value,
          })),
        })),
      });
    } catch (error) {
      // Another service may have created them at the same moment.
      const after = new Set(await admin.listTopics());
      if (!missing.every((spec) => after.has(spec.topic))) throw error;
    }
    // A busy broker may still answer UNKNOWN_TOPIC_OR_PARTITION for a moment after creating a
    // topic; wait until every partition has a leader that serves offsets before anyone subscribes.
    const deadline = Date.now() + 30_000;
    for (const spec of missing) {
      for (;;) {
        try {
          const offsets = await admin.fetchTopicOffsets(spec.topic);
          if (offsets.length === spec.numPartitions) break;
        } catch (error) {
          if (Date.now() > deadline)
            throw retryable(
              'kafka_unavailable',
              `topic ${spec.topic} was created but is not served: ${(error as Error).message}`,
              { cause: error },
            );
        }
        if (Date.now() > deadline)
          throw retryable('kafka_unavailable', `topic ${spec.topic} was created but is not served`);
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
    }
    this.#listing = undefined;
    return missing.map((spec) => spec.topic);
  }

  async deleteTopics(topics: string[]): Promise<void> {
    if (topics.length === 0) return;
    try {
      await (await this.#ready()).deleteTopics({ topics, timeout: 10_000 });
    } finally {
      this.#listing = undefined;
    }
  }

  /** Committed vs end offsets of `groupId` on `topics`. */
  async lag(groupId: string, topics: string[]): Promise<PartitionLag[]> {
    const admin = await this.#ready();
    const committed = await admin.fetchOffsets({ groupId, topics });
    const result: PartitionLag[] = [];
    for (const { topic, partitions } of committed) {
      const ends = await admin.fetchTopicOffsets(topic);
      for (const end of ends) {
        const commit = Number(partitions.find((p) => p.partition === end.partition)?.offset ?? -1);
        const low = Number(end.low);
        const high = Number(end.high);
        const from = commit < 0 ? low : Math.max(commit, low);
        result.push({
          topic,
          partition: end.partition,
          committed: commit,
          low,
          high,
          lag: Math.max(0, high - from),
        });
      }
    }
    return result;
  }

  /** End offsets of every partition of `topic`. */
  async endOffsets(topic: string): Promise<{ partition: number; high: number; low: number }[]> {
    const offsets = await (await this.#ready()).fetchTopicOffsets(topic);
    return offsets.map((o) => ({
      partition: o.partition,
      high: Number(o.high),
      low: Number(o.low),
    }));
  }

  /** For each partition, the earliest offset whose timestamp is at or after `timestamp` (ms). */
  async offsetsAt(
    topic: string,
    timestamp: number,
  ): Promise<{ partition: number; offset: number }[]> {
    const offsets = await (await this.#ready()).fetchTopicOffsetsByTimestamp(topic, timestamp);
    return offsets.map((o) => ({ partition: o.partition, offset: Number(o.offset) }));
  }

  /**
   * The topics on which `groupId` has committed an offset for at least one partition, sorted. A
   * group the broker does not know has none. @throws MeshError `kafka_unavailable` (retryable) when
   * the admin cannot connect; kafkajs errors from the group coordinator as they are.
   */
  async committedTopics(groupId: string): Promise<string[]> {
    // Without `topics`, OffsetFetch answers for every topic the group has committed offsets on.
    const offsets = await (await this.#ready()).fetchOffsets({ groupId });
    return offsets
      .filter(({ partitions }) => partitions.some((p) => Number(p.offset) >= 0))
      .map(({ topic }) => topic)
      .sort();
  }

  /** Consumer groups known to the broker. */
  async listGroups(): Promise<string[]> {
    const { groups } = await (await this.#ready()).listGroups();
    return groups.map((g) => g.groupId);
  }

  /**
   * Closes the connection, also one still being retried. A later call connects again, through a
   * new kafkajs admin: one connected again after its disconnect wrote its first requests to the
   * closed sockets ("write after end", "Closed connection"), which is how the tests' clean-up,
   * deleting topics after closing the runtime, silently failed.
   */
  async disconnect(): Promise<void> {
    this.#connected = undefined;
    this.#listing = undefined;
    const admin = this.#admin;
    this.#admin = this.#create();
    await admin.disconnect();
  }
}
