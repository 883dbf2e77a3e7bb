/**
 * The producer's partitioner. It picks the partition the Java client's default partitioner (and
 * kafkajs's `Partitioners.DefaultPartitioner`) picks: the key's murmur2 hash, made positive, modulo
 * the partition count. So a task's events land where any Kafka client would put that key.
 *
 * kafkajs computes murmur2 in BigInt arithmetic, about 3.5 µs a key in the runtime's CPU profile, for
 * every record the mesh produces; this is the same hash in 32-bit integer arithmetic.
 */
import { Partitioners, type ICustomPartitioner } from 'kafkajs';

const seed = 0x9747b28c;
const m = 0x5bd1e995;

/** Kafka's murmur2 (`org.apache.kafka.common.utils.Utils.murmur2`) of `data`, as a signed 32-bit int. */
export function murmur2(data: Uint8Array): number {
  const length = data.length;
  let h = seed ^ length;
  const whole = length & ~3;
  for (let i = 0; i < whole; i += 4) {
    let k =
      (data[i] as number) |
      ((data[i + 1] as number) << 8) |
      ((data[i + 2] as number) << 16) |
      ((data[i + 3] as number) << 24);
    k = Math.imul(k, m);
    k ^= k >>> 24;
    k = Math.imul(k, m);
    h = Math.imul(h, m) ^ k;
  }
  // The last one to three bytes, as the Java switch with fall-through folds them in.
  const tail = length & 3;
  if (tail > 0) {
    if (tail === 3) h ^= (data[whole + 2] as number) << 16;
    if (tail >= 2) h ^= (data[whole + 1] as number) << 8;
    h ^= data[whole] as number;
    h = Math.imul(h, m);
  }
  h ^= h >>> 13;
  h = Math.imul(h, m);
  h ^= h >>> 15;
  return h | 0;
}

/**
 * For `kafka.producer({ createPartitioner })`: keyed records by our murmur2, the rest (an explicit
 * partition, or no key: round-robin over the available partitions) by kafkajs's own partitioner.
 */
export const meshPartitioner: ICustomPartitioner = () => {
  const kafkajs = Partitioners.DefaultPartitioner();
  return (args) => {
    const { partitionMetadata, message } = args;
    const { key } = message;
    const explicit = message.partition !== undefined && message.partition !== null;
    if (explicit || key === null || key === undefined) return kafkajs(args);
    const bytes = Buffer.isBuffer(key) ? key : Buffer.from(String(key));
    return (murmur2(bytes) & 0x7fffffff) % partitionMetadata.length;
  };
};
