#!/usr/bin/env node
/**
 * Patches kafkajs 2.2.4 in node_modules (run by `npm install`/`npm ci` as the root `postinstall`,
 * and by the Dockerfile). Two allocation hot spots that profiles of the runtime put at about a
 * fifth of its CPU; behaviour and wire bytes are unchanged:
 *
 * 1. `Encoder` allocated a zero-filled 512-byte buffer per instance (one per record header, ~15 per
 *    mesh event) and a fresh array + buffer per varint. Its buffer is only ever read up to the bytes
 *    written, so it now comes from Node's buffer pool (`allocUnsafe`), sized for what it holds, and
 *    varints are written in place.
 * 2. The record decoder built the headers object with a spread per header (quadratic in headers);
 *    it is now one loop with the same result, repeated keys included (and a header named like an
 *    Object.prototype member, e.g. `toString`, no longer picks up the inherited function).
 *
 * Idempotent: an already patched file is left alone. Any other content (a different kafkajs) stops
 * the install with a message, so the patch can never be silently half-applied.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';

const expectedVersion = '2.2.4';

const patches = [
  {
    file: 'src/protocol/encoder.js',
    from: 'this.buf = Buffer.alloc(Encoder.nextPowerOfTwo(initialSize))',
    to: 'this.buf = Buffer.allocUnsafe(Encoder.nextPowerOfTwo(initialSize)) /* mesh-patch */',
  },
  {
    file: 'src/protocol/encoder.js',
    from: 'const newBuffer = Buffer.alloc(newLength)',
    to: 'const newBuffer = Buffer.allocUnsafe(newLength) /* mesh-patch */',
  },
  {
    file: 'src/protocol/encoder.js',
    from: `  writeUVarInt(value) {
    const byteArray = []
    while ((value & UNSIGNED_INT32_MAX_NUMBER) !== 0) {
      byteArray.push((value & OTHER_BITS) | MOST_SIGNIFICANT_BIT)
      value >>>= 7
    }
    byteArray.push(value & OTHER_BITS)
    this.writeBufferInternal(Buffer.from(byteArray))
    return this
  }`,
    to: `  writeUVarInt(value) {
    /* mesh-patch: written in place, no array and buffer per varint */
    this.ensureAvailable(5)
    while ((value & UNSIGNED_INT32_MAX_NUMBER) !== 0) {
      this.buf[this.offset++] = (value & OTHER_BITS) | MOST_SIGNIFICANT_BIT
      value >>>= 7
    }
    this.buf[this.offset++] = value & OTHER_BITS
    return this
  }`,
  },
  {
    file: 'src/protocol/recordBatch/header/v0/index.js',
    from: `module.exports = ({ key, value }) => {
  return new Encoder().writeVarIntString(key).writeVarIntBytes(value)
}`,
    to: `module.exports = ({ key, value }) => {
  /* mesh-patch: sized for the header instead of 512 bytes */
  const size = Buffer.byteLength(key) + (value == null ? 0 : Buffer.byteLength(value)) + 10
  return new Encoder(size).writeVarIntString(key).writeVarIntBytes(value)
}`,
  },
  {
    file: 'src/protocol/recordBatch/record/v0/decoder.js',
    from: `  const headers = decoder.readVarIntArray(HeaderDecoder).reduce(
    (obj, { key, value }) => ({
      ...obj,
      [key]:
        obj[key] === undefined
          ? value
          : Array.isArray(obj[key])
          ? obj[key].concat([value])
          : [obj[key], value],
    }),
    {}
  )`,
    to: `  /* mesh-patch: one object for all headers, not a copy per header */
  const headers = {}
  for (const { key, value } of decoder.readVarIntArray(HeaderDecoder)) {
    const seen = Object.prototype.hasOwnProperty.call(headers, key) ? headers[key] : undefined
    const next = seen === undefined ? value : Array.isArray(seen) ? seen.concat([value]) : [seen, value]
    // An own property even for a header named __proto__, as the spread it replaces made.
    if (key === '__proto__') Object.defineProperty(headers, key, { value: next, enumerable: true, writable: true, configurable: true })
    else headers[key] = next
  }`,
  },
];

const require = createRequire(import.meta.url);
const root = dirname(require.resolve('kafkajs/package.json'));
const { version } = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8'));
if (version !== expectedVersion) {
  console.error(
    `kafkajs patch: found kafkajs ${version}, the patch is for ${expectedVersion}; ` +
      'update packages/kafka/patches/kafkajs.mjs with the new version',
  );
  process.exit(1);
}

const sources = new Map();
for (const { file, from, to } of patches) {
  const path = join(root, file);
  const text = sources.get(path) ?? readFileSync(path, 'utf8');
  if (text.includes(to)) {
    sources.set(path, text);
    continue;
  }
  if (!text.includes(from)) {
    console.error(`kafkajs patch: ${file} has neither the original nor the patched code`);
    process.exit(1);
  }
  sources.set(path, text.replace(from, to));
}
let changed = 0;
for (const [path, text] of sources) {
  if (readFileSync(path, 'utf8') === text) continue;
  writeFileSync(path, text);
  changed += 1;
}
console.log(`kafkajs patch: ${changed === 0 ? 'already applied' : `${changed} files patched`}`);
