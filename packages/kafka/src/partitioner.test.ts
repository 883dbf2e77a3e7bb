/**
 * The mesh's partitioner picks the partition kafkajs's DefaultPartitioner (the Java client's
 * choice) picks, so moving to it moved no key.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { test } from 'node:test';
import { Partitioners, type PartitionMetadata } from 'kafkajs';
import { meshPartitioner, murmur2 } from './partitioner.ts';

test('murmur2 gives the values of the Java client (Kafka UtilsTest)', () => {
  for (const [key, hash] of [
    ['21', -973932308],
    ['foobar', -790332482],
    ['a-little-bit-long-string', -985981536],
    ['a-little-bit-longer-string', -1486304829],
    ['lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8', -58897971],
    ['abc', 479470107],
  ] as const) {
    assert.equal(murmur2(Buffer.from(key)), hash, key);
  }
});

const partitions = (n: number, leaderless: number[] = []): PartitionMetadata[] =>
  Array.from({ length: n }, (_, partitionId) => ({
    partitionId,
    leader: leaderless.includes(partitionId) ? -1 : 1,
    partitionErrorCode: 0,
    replicas: [1],
    isr: [1],
  }));

test('keyed records go to the partition kafkajs DefaultPartitioner picks', () => {
  const ours = meshPartitioner();
  const theirs = Partitioners.DefaultPartitioner();
  for (let i = 0; i < 5_000; i += 1) {
    const bytes = randomBytes(i % 70);
    const key = i % 2 === 0 ? bytes : bytes.toString('base64');
    const partitionMetadata = partitions(1 + (i % 12));
    const args = { topic: 't', partitionMetadata, message: { key, value: null } };
    assert.equal(ours(args), theirs(args), `key ${String(key)}`);
  }
});

test('an explicit partition wins; records without a key go round the available partitions', () => {
  const choose = meshPartitioner();
  const metadata = partitions(4, [2]);
  assert.equal(
    choose({
      topic: 't',
      partitionMetadata: metadata,
      message: { key: 'k', value: null, partition: 2 },
    }),
    2,
  );
  const seen = Array.from({ length: 9 }, () =>
    choose({ topic: 't', partitionMetadata: metadata, message: { value: null } }),
  );
  assert.deepEqual(new Set(seen), new Set([0, 1, 3]));
  for (let i = 1; i < seen.length; i += 1) assert.notEqual(seen[i], seen[i - 1]);
  const none = choose({
    topic: 'u',
    partitionMetadata: partitions(3, [0, 1, 2]),
    message: { value: null },
  });
  assert.ok(none >= 0 && none < 3);
});
