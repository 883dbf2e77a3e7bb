/**
 * The kafkajs patch (`packages/kafka/patches/kafkajs.mjs`, run on install) is in effect and changes
 * no bytes: records with headers encode to the bytes the Kafka protocol prescribes and decode back
 * to the same headers, repeated and oddly named ones included.
 */
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import { test } from 'node:test';

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
