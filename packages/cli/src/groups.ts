/**
 * Which topics a consumer group reads: the topics its live members subscribe to (from the group's
 * description) and those it has committed offsets on. `mesh lag` needs both — a group whose members
 * have not committed yet is exactly the one with lag.
 *
 * `MeshAdmin` (the mesh's only kafkajs wrapper) has no call for either, so this module asks the
 * kafkajs admin of the `@mesh/kafka` client directly, without importing kafkajs. It is the one place
 * the CLI does so; it goes away when `MeshAdmin` gains `groupTopics`.
 */
import type { Kafka } from '@mesh/kafka';

/**
 * The topics of a consumer protocol subscription (the member metadata of a `consumer` group):
 * version int16, then an array (int32 count) of topic names (int16 length + UTF-8). Returns [] for
 * anything it cannot read.
 */
export function decodeSubscription(metadata: Buffer): string[] {
  try {
    let at = 2;
    const count = metadata.readInt32BE(at);
    at += 4;
    if (count < 0 || count > 100_000) return [];
    const topics: string[] = [];
    for (let i = 0; i < count; i++) {
      const length = metadata.readInt16BE(at);
      at += 2;
      if (length < 0 || at + length > metadata.length) return [];
      topics.push(metadata.toString('utf8', at, at + length));
      at += length;
    }
    return topics;
  } catch {
    return [];
  }
}

/** The topics each group subscribes to or has committed on, sorted. */
export async function groupTopics(
  kafka: Kafka,
  groupIds: string[],
): Promise<Map<string, string[]>> {
  const result = new Map<string, Set<string>>(groupIds.map((id) => [id, new Set<string>()]));
  if (groupIds.length === 0) return new Map();
  const admin = kafka.admin({ retry: { retries: 2, initialRetryTime: 200, maxRetryTime: 1_000 } });
  await admin.connect();
  try {
    const { groups } = await admin.describeGroups(groupIds);
    for (const group of groups) {
      if (group.protocolType !== 'consumer') continue;
      for (const member of group.members) {
        for (const topic of decodeSubscription(member.memberMetadata))
          result.get(group.groupId)?.add(topic);
      }
    }
    for (const groupId of groupIds) {
      // No topics given: the broker answers every topic the group has committed offsets on.
      const committed = await admin.fetchOffsets({ groupId });
      for (const { topic } of committed) result.get(groupId)?.add(topic);
    }
  } finally {
    await admin.disconnect();
  }
  return new Map([...result].map(([id, topics]) => [id, [...topics].sort()]));
}
