/**
 * The kafkajs patch (`packages/kafka/patches/kafkajs.mjs`, run on install) is in effect and changes
 * no bytes: records with headers encode to the bytes the Kafka protocol prescribes and decode back
 * to the same headers, repeated and oddly named ones included; a connection's request queue keeps no
 * timer armed while nothing waits, and still sends what waits; record batch checksums are still
 * CRC-32C.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { createRequire } from 'node:module';
import { test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';

const require = createRequire(import.meta.url);

interface Encoder {
  buf: Buffer;
  buffer: Buffer;
  writeUVarInt(value: number): Encoder;
}
type EncoderClass = new (initialSize?: number) => Encoder;
interface Decoder {
  readVarInt(): number;
}
type DecoderClass = new (buffer: Buffer) => Decoder;
type RecordEncoder = (record: {
  key: Buffer;
  value: Buffer;
  headers: Record<string, string | string[]>;
}) => Encoder;
type RecordDecoder = (
  decoder: Decoder,
  batch: { firstOffset: string; firstTimestamp: string },
) => { headers: Record<string, Buffer | Buffer[]> };
const batch = { firstOffset: '0', firstTimestamp: '0' };

const Encoder = require('kafkajs/src/protocol/encoder') as EncoderClass;
const Decoder = require('kafkajs/src/protocol/decoder') as DecoderClass;
const encodeRecord = require('kafkajs/src/protocol/recordBatch/record/v0') as RecordEncoder;
const decodeRecord = require('kafkajs/src/protocol/recordBatch/record/v0/decoder') as RecordDecoder;

test('the kafkajs patch is applied: encoders use the buffer pool', () => {
  const encoder = new Encoder();
  // A pooled buffer is a slice of Node's shared pool, not an ArrayBuffer of its own.
  assert.equal(encoder.buf.buffer.byteLength, Buffer.poolSize);
});

test('varints are written as LEB128, as before the patch', () => {
  for (const [value, bytes] of [
    [0, [0x00]],
    [1, [0x01]],
    [127, [0x7f]],
    [128, [0x80, 0x01]],
    [300, [0xac, 0x02]],
    [2 ** 31 - 1, [0xff, 0xff, 0xff, 0xff, 0x07]],
  ] as const) {
    assert.deepEqual([...new Encoder(1).writeUVarInt(value).buffer], bytes, `varint ${value}`);
  }
});

test('a record with headers encodes to the protocol bytes and decodes back', () => {
  const encoded = encodeRecord({
    key: Buffer.from('k'),
    value: Buffer.from('v'),
    headers: { ce_id: 'abc', dup: ['1', '2'] },
  }).buffer;
  // Record v2 (KIP-82): length, attributes, timestampDelta, offsetDelta, key, value, headers, all
  // varints zig-zag encoded.
  const expected = [
    0x3c, // length 30
    0x00, // attributes
    0x00, // timestamp delta 0
    0x00, // offset delta 0
    0x02,
    0x6b, // key "k"
    0x02,
    0x76, // value "v"
    0x06, // 3 headers
    0x0a,
    ...Buffer.from('ce_id'),
    0x06,
    ...Buffer.from('abc'),
    0x06,
    ...Buffer.from('dup'),
    0x02,
    ...Buffer.from('1'),
    0x06,
    ...Buffer.from('dup'),
    0x02,
    ...Buffer.from('2'),
  ];
  assert.deepEqual([...encoded], expected);

  const decoder = new Decoder(encoded);
  decoder.readVarInt(); // the length, read by the batch decoder before the record
  const { headers } = decodeRecord(decoder, batch);
  assert.deepEqual(
    Object.fromEntries(
      Object.entries(headers).map(([name, value]) => [
        name,
        Array.isArray(value) ? value.map(String) : String(value),
      ]),
    ),
    { ce_id: 'abc', dup: ['1', '2'] },
  );
});

test('headers named like Object.prototype members decode as plain own headers', () => {
  const encoded = encodeRecord({
    key: Buffer.from('k'),
    value: Buffer.from('v'),
    headers: { toString: 'a', ['__proto__']: 'b' },
  }).buffer;
  const decoder = new Decoder(encoded);
  decoder.readVarInt();
  const { headers } = decodeRecord(decoder, batch);
  assert.deepEqual(Object.keys(headers).sort(), ['__proto__', 'toString']);
  assert.equal(String(Object.getOwnPropertyDescriptor(headers, 'toString')?.value), 'a');
  assert.equal(String(Object.getOwnPropertyDescriptor(headers, '__proto__')?.value), 'b');
  assert.equal(Object.getPrototypeOf(headers), Object.prototype);
});

// A reference encoder of the record format written from the protocol (zig-zag LEB128 in BigInt), to
// hold the patched kafkajs encoder and decoders to the bytes over many random records.
function zigzag(value: bigint): number[] {
  let v = BigInt.asUintN(64, (value << 1n) ^ (value >> 63n));
  const out: number[] = [];
  while (v >= 0x80n) {
    out.push(Number(v & 0x7fn) | 0x80);
    v >>= 7n;
  }
  out.push(Number(v));
  return out;
}
function varBytes(value: Buffer | null): number[] {
  return value === null ? zigzag(-1n) : [...zigzag(BigInt(value.length)), ...value];
}
function referenceRecord(r: {
  key: Buffer | null;
  value: Buffer | null;
  headers: [string, Buffer][];
  timestampDelta: number;
  offsetDelta: number;
}): Buffer {
  const body = [
    0,
    ...zigzag(BigInt(r.timestampDelta)),
    ...zigzag(BigInt(r.offsetDelta)),
    ...varBytes(r.key),
    ...varBytes(r.value),
    ...zigzag(BigInt(r.headers.length)),
    ...r.headers.flatMap(([k, v]) => [...varBytes(Buffer.from(k)), ...varBytes(v)]),
  ];
  return Buffer.from([...zigzag(BigInt(body.length)), ...body]);
}

/** A deterministic pseudo-random source, so a failure can be replayed. */
function prng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s / 2 ** 32;
  };
}

test('random records encode to the reference bytes and decode back (offsets, times, headers)', () => {
  const random = prng(42);
  const int = (max: number): number => Math.floor(random() * max);
  const text = (n: number): string =>
    Array.from({ length: n }, () => 'aZ9_-é€😀'[int(8)] ?? 'a').join('');
  const deltas = [0, 1, -1, 63, 64, 8191, 8192, 2 ** 27, 2 ** 30 - 1, 2 ** 30, -(2 ** 30), 2 ** 40];
  for (let i = 0; i < 2_000; i += 1) {
    const headers: [string, Buffer][] = Array.from({ length: int(14) }, () => [
      `ce_${text(1 + int(12))}`,
      Buffer.from(text(int(300))),
    ]);
    // Repeated names go through kafkajs as arrays; the reference lists them in the same order.
    const asObject: Record<string, string | string[]> = {};
    const ordered: [string, Buffer][] = [];
    for (const [name, value] of headers) {
      const seen = asObject[name];
      if (seen === undefined) asObject[name] = value.toString();
      else asObject[name] = [...(Array.isArray(seen) ? seen : [seen]), value.toString()];
    }
    for (const [name, value] of Object.entries(asObject))
      for (const one of Array.isArray(value) ? value : [value])
        ordered.push([name, Buffer.from(one)]);
    const record = {
      key: random() < 0.1 ? null : Buffer.from(text(int(40))),
      value: random() < 0.05 ? null : Buffer.from(text(int(2_000))),
      timestampDelta: deltas[int(deltas.length)] ?? 0,
      offsetDelta: int(100_000),
    };
    const encoded = encodeRecord({
      ...record,
      headers: asObject,
    } as unknown as Parameters<RecordEncoder>[0]).buffer;
    assert.deepEqual(encoded, referenceRecord({ ...record, headers: ordered }), `record ${i}`);

    const firstOffset = [0n, 12_345n, 2n ** 53n - 1n, 2n ** 53n + 7n, 2n ** 62n][int(5)] ?? 0n;
    const firstTimestamp = BigInt(1_763_800_000_000 + int(1e9));
    const decoder = new Decoder(encoded);
    decoder.readVarInt();
    const decoded = decodeRecord(decoder, {
      firstOffset: String(firstOffset),
      firstTimestamp: String(firstTimestamp),
    }) as unknown as {
      offset: string;
      timestamp: string;
      key: Buffer | null;
      value: Buffer | null;
    };
    assert.equal(decoded.offset, String(firstOffset + BigInt(record.offsetDelta)), `offset ${i}`);
    assert.equal(
      decoded.timestamp,
      String(firstTimestamp + BigInt(record.timestampDelta)),
      `timestamp ${i}`,
    );
    assert.deepEqual(decoded.key, record.key);
    assert.deepEqual(decoded.value, record.value);
  }
});

test('header text of every length, ASCII or not, Buffer or string, encodes to the reference bytes', () => {
  // The patch copies short ASCII text itself and leaves the rest to Buffer: both sides of each
  // cut-off (ASCII or not, 64 characters or more) must give the bytes UTF-8 gives.
  for (let length = 0; length <= 70; length += 1) {
    const ascii = 'ce_traceparent-0123456789abcdef'.repeat(3).slice(0, length);
    const variants = [ascii, `${ascii.slice(1)}é`, `${ascii.slice(2)}😀`, `${ascii}\u007f`];
    for (const text of variants.filter((v) => v.length <= 70)) {
      const headers = { [text || 'empty']: text, buffer: Buffer.from(text) };
      const record = {
        key: Buffer.from('k'),
        value: Buffer.from('v'),
        timestampDelta: 0,
        offsetDelta: 0,
      };
      const encoded = encodeRecord({
        ...record,
        headers,
      } as unknown as Parameters<RecordEncoder>[0]).buffer;
      const ordered: [string, Buffer][] = [
        [text || 'empty', Buffer.from(text)],
        ['buffer', Buffer.from(text)],
      ];
      assert.deepEqual(
        encoded,
        referenceRecord({ ...record, headers: ordered }),
        JSON.stringify(text),
      );
    }
  }
});

test('a record of 100 headers, more than the header lengths kept at first, encodes to the reference bytes', () => {
  const ordered: [string, Buffer][] = Array.from({ length: 100 }, (_, i) => [
    `h${i}`,
    Buffer.from(`value ${i}`),
  ]);
  const headers = Object.fromEntries(ordered.map(([name, value]) => [name, value.toString()]));
  const record = { key: null, value: Buffer.from('v'), timestampDelta: 5, offsetDelta: 3 };
  for (let i = 0; i < 2; i += 1) {
    const encoded = encodeRecord({
      ...record,
      headers,
    } as unknown as Parameters<RecordEncoder>[0]).buffer;
    assert.deepEqual(encoded, referenceRecord({ ...record, headers: ordered }), `encode ${i + 1}`);
  }
});

test('varlongs decode to the reference value, short and long, and leave the decoder after them', () => {
  type LongDecoder = Decoder & { readVarLong(): { toString(): string }; offset: number };
  const values = [0n, 1n, -1n, 63n, -64n, 64n, 2n ** 27n - 1n, -(2n ** 27n), 2n ** 27n, 2n ** 31n];
  values.push(2n ** 62n, -(2n ** 63n), 2n ** 63n - 1n, 1_763_800_000_000n);
  for (const value of values) {
    // A trailing byte checks the offset: the next read must start right after the varlong.
    const bytes = Buffer.from([...zigzag(value), 0x7f]);
    const decoder = new Decoder(bytes) as LongDecoder;
    assert.equal(decoder.readVarLong().toString(), String(value), `varlong ${value}`);
    assert.equal(decoder.offset, bytes.length - 1, `offset after ${value}`);
  }
});

test('record batch checksums are the CRC-32C a bitwise reference computes', () => {
  const crc32C = require('kafkajs/src/protocol/recordBatch/crc32C/crc32C') as (b: Buffer) => number;
  // The reflected Castagnoli polynomial, one bit at a time: slow, and obviously the definition.
  const reference = (bytes: Buffer): number => {
    let crc = -1;
    for (const byte of bytes) {
      crc ^= byte;
      for (let bit = 0; bit < 8; bit += 1) crc = crc & 1 ? (crc >>> 1) ^ 0x82f63b78 : crc >>> 1;
    }
    return (crc ^ -1) >>> 0;
  };
  // The standard check value of CRC-32C (RFC 3720, appendix B.4).
  assert.equal(crc32C(Buffer.from('123456789')), 0xe3069283);
  const pool = randomBytes(4_200);
  // Every length around the 8-byte steps, at every alignment within a larger buffer.
  for (let length = 0; length <= 40; length += 1)
    for (let start = 0; start < 8; start += 1) {
      const bytes = pool.subarray(start, start + length);
      assert.equal(crc32C(bytes), reference(bytes), `length ${length} at ${start}`);
    }
  assert.equal(crc32C(pool), reference(pool), 'a batch-sized buffer');
});

test('messages are grouped per partition in their order', () => {
  const group = require('kafkajs/src/producer/groupMessagesPerPartition') as (args: {
    topic: string;
    partitionMetadata: unknown[];
    messages: { key: string }[];
    partitioner: (args: { message: { key: string } }) => number;
  }) => Record<string, { key: string }[]>;
  const messages = Array.from({ length: 1_000 }, (_, i) => ({ key: String(i) }));
  const grouped = group({
    topic: 't',
    partitionMetadata: [{}, {}, {}],
    messages,
    partitioner: ({ message }) => Number(message.key) % 3,
  });
  assert.deepEqual(Object.keys(grouped), ['0', '1', '2']);
  for (const [partition, list] of Object.entries(grouped))
    assert.deepEqual(
      list,
      messages.filter((m) => Number(m.key) % 3 === Number(partition)),
    );
  assert.deepEqual(
    group({ topic: 't', partitionMetadata: [], messages, partitioner: () => 0 }),
    {},
  );
});

interface QueuedRequest {
  entry: {
    correlationId: number;
    apiName: string;
    apiKey: number;
    apiVersion: number;
    resolve: () => void;
    reject: (error: Error) => void;
  };
  expectResponse: boolean;
  sendRequest: () => void;
}
interface RequestQueue {
  throttleCheckTimeoutId: NodeJS.Timeout | null;
  push(request: QueuedRequest): void;
  fulfillRequest(response: { correlationId: number; payload: Buffer | null; size: number }): void;
  maybeThrottle(ms: number): void;
  destroy(): void;
}

test('a request queue arms no timer while nothing waits, and still sends what waits', async () => {
  const Queue = require('kafkajs/src/network/requestQueue') as new (options: {
    maxInFlightRequests: number;
    requestTimeout: number;
    enforceRequestTimeout: boolean;
    clientId: string;
    broker: string;
    logger: Record<'debug' | 'info' | 'warn' | 'error', () => void>;
  }) => RequestQueue;
  const quiet = (): void => undefined;
  const queue = new Queue({
    maxInFlightRequests: 1,
    requestTimeout: 30_000,
    enforceRequestTimeout: false,
    clientId: 'patch-test',
    broker: 'localhost:9092',
    logger: { debug: quiet, info: quiet, warn: quiet, error: quiet },
  });
  const sent: number[] = [];
  const request = (correlationId: number): QueuedRequest => ({
    entry: {
      correlationId,
      apiName: 'Fetch',
      apiKey: 1,
      apiVersion: 11,
      resolve: quiet,
      reject: quiet,
    },
    expectResponse: true,
    sendRequest: () => void sent.push(correlationId),
  });
  const answer = (correlationId: number): void =>
    queue.fulfillRequest({ correlationId, payload: null, size: 0 });
  try {
    queue.push(request(1));
    queue.push(request(2)); // one request in flight at most: this one waits
    assert.deepEqual(sent, [1]);
    answer(1);
    assert.deepEqual(sent, [1, 2], 'the answer sends the request that waited');
    answer(2);
    await sleep(30);
    // Before the patch a timer re-armed itself every millisecond from here on, for ever.
    assert.equal(queue.throttleCheckTimeoutId, null, 'nothing waits, so no timer is armed');

    queue.maybeThrottle(60); // the broker asked for a pause
    queue.push(request(3));
    assert.deepEqual(sent, [1, 2], 'a throttled queue holds the request');
    assert.notEqual(queue.throttleCheckTimeoutId, null, 'and looks again when the pause ends');
    await sleep(150);
    assert.deepEqual(sent, [1, 2, 3], 'the held request is sent after the pause');
    answer(3);
    await sleep(30);
    assert.equal(queue.throttleCheckTimeoutId, null);
  } finally {
    queue.destroy();
  }
});
