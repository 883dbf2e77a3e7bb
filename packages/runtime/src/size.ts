/**
 * How much data one event can carry. Kafka refuses a record over its limit (the producer's
 * `defaultMaxRecordBytes`, from the broker's default `message.max.bytes`), and an event's record is
 * its data as JSON plus the wire-format prefix, its `ce_` headers and its key. A service that joins
 * or forwards outputs checks what it builds against `maxEventDataBytes` first, so that it can end a
 * task with a reason instead of publishing an event that Kafka would refuse every time.
 */
import { defaultMaxRecordBytes } from '@mesh/kafka';

/**
 * Room kept for the headers, the key and the wire-format prefix: the mesh's own headers take well
 * under 2 KiB; the rest is for extensions a client set, which derived events carry forward.
 */
const recordOverheadBytes = 65_536;

/** The most bytes of JSON an event's data may take: 982,964. */
export const maxEventDataBytes = defaultMaxRecordBytes - recordOverheadBytes;

/** The bytes `data` takes as the registry codec encodes it (UTF-8 JSON). */
export function dataBytes(data: unknown): number {
  return Buffer.byteLength(JSON.stringify(data) ?? '');
}

/** A size for a message: `982,964 bytes`. */
export function formatBytes(bytes: number): string {
  return `${bytes.toLocaleString('en-US')} bytes`;
}
