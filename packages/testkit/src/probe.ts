/**
 * Reads topics from the beginning into memory, for assertions: a consumer group of its own that
 * takes everything and commits nothing.
 */
import { randomUUID } from 'node:crypto';
import { GroupConsumer, type ConsumedRecord, type Kafka } from '@mesh/kafka';

export interface TopicProbe {
  readonly records: ConsumedRecord[];
  /** Records of one topic. */
  on(topic: string): ConsumedRecord[];
  /** A header of a record as text. */
  header(record: ConsumedRecord, name: string): string | undefined;
  stop(): Promise<void>;
}

export async function probeTopics(kafka: Kafka, topics: string[]): Promise<TopicProbe> {
  const groupId = `probe-${randomUUID()}`;
  const consumer = new GroupConsumer(kafka, {
    groupId,
    sessionTimeoutMs: 10_000,
    heartbeatIntervalMs: 500,
  });
  const records: ConsumedRecord[] = [];
  // The last offset kept of each partition. Committing nothing, the probe reads a partition from its
  // start again whenever its group is rebalanced (a broker restart moves the coordinator): a record
  // read again is not a record written again, and is not kept twice.
  const last = new Map<string, number>();
  await consumer.start(topics, {
    take: (topic, partition, batch) => {
      const key = `${topic}:${partition}`;
      const after = last.get(key) ?? -1;
      for (const record of batch) {
        const offset = Number(record.offset);
        if (offset <= after) continue;
        records.push(record);
        last.set(key, offset);
      }
      return batch.length;
    },
    assigned: () => undefined,
    // In a failing test's output, a probe that stopped reading is told from a mesh that stopped writing.
    crashed: (error, restartInMs) =>
      process.stderr.write(`probe ${groupId}: ${error.message} (restarts in ${restartInMs} ms)\n`),
  });
  return {
    records,
    on: (topic) => records.filter((r) => r.topic === topic),
    header: (record, name) => {
      const value = record.headers[name];
      const one = Array.isArray(value) ? value[value.length - 1] : value;
      return one === undefined ? undefined : one.toString();
    },
    stop: async () => {
      await consumer.stop();
    },
  };
}
