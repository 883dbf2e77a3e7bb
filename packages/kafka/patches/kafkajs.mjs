#!/usr/bin/env node
/**
 * Patches kafkajs 2.2.4 in node_modules (run by `npm install`/`npm ci` as the root `postinstall`,
 * and by the Dockerfile). Hot spots of the runtime's CPU profile; behaviour and wire bytes are
 * unchanged (`packages/kafka/src/kafkajs-patch.test.ts` holds them to a reference encoder):
 *
 * 1. `Encoder` allocated a zero-filled 512-byte buffer per instance and a fresh array + buffer per
 *    varint. Its buffer is only ever read up to the bytes written, so it now comes from Node's buffer
 *    pool (`allocUnsafe`), and varints are written in place.
 * 2. A record was encoded as one `Encoder` per header (~15 per mesh event) copied into the record's;
 *    it is now written into one buffer of the record's size, straight from the headers object (no
 *    `{ key, value }` object per header), each header's length measured once. A time delta that
 *    fits 30 bits is written as the varint it equals, without BigInt-backed `Long` arithmetic.
 * 3. The record decoder built the headers object with a spread per header (quadratic in headers),
 *    from an array of `{ key, value }` objects; it is now one loop over the bytes with the same
 *    result, repeated keys included (and a header named like an Object.prototype member, e.g.
 *    `toString`, no longer picks up the inherited function). Each
 *    record's offset and timestamp were computed in `Long` (BigInt) from decimal strings; they are
 *    now number arithmetic while every figure is a safe integer, and a short varlong is read
 *    without `Long`.
 * 4. Grouping a send's messages by partition copied the partition's array for every message
 *    (quadratic in the batch); messages are now appended in place.
 * 5. A fetcher whose partitions were all paused slept `maxWaitTime` before it looked again, so a
 *    partition resumed just after was fetched up to that long later: the runtime, which pauses a
 *    full partition and resumes it when half its backlog is done, sat idle in that wait (27% of the
 *    no-op benchmark's time). `resume` now ends the wait at once.
 * 6. A send to a topic deleted after the producer had sent to it was retried for as long as the
 *    producer retries (for ever here), and with one request in flight every later send of the
 *    process waited behind it. Once the cluster has said for 5 s that the topic does not exist, the
 *    send now fails; `MeshProducer` then looks the topic up again before its next send and refuses
 *    it (`not_found`).
 * 7. A broker certificate the client does not trust (an unknown CA, an expired certificate, another
 *    host name) failed the connection as retriable, so a wrong `MESH_KAFKA_SSL_CA_FILE` took the
 *    whole retry budget (about 20 s) to be reported. Nothing changes by trying again: it now fails
 *    at once (the codes of `certificateFault` in `@mesh/errors`), and `connectFailure` names the
 *    variable.
 *
 * 8. Every connection's request queue re-armed a timer to look for pending requests each time the
 *    last one ran, pending requests or not: from its first answer on, each connection woke every
 *    millisecond for as long as it lived (kafkajs issues #1556, #1604, #1704). One idle consumer
 *    spent 96 ms of CPU a second (15 ms without it), and every service paid it under load too. The
 *    queue now looks again only while requests wait; a new request or an answer still triggers the
 *    look at once.
 *
 * 9. A topic the client had used and another client then deleted stayed in the topics kafkajs
 *    tracks, and every metadata refresh that named it failed (kafkajs #1622): the producer's sends
 *    to every topic failed from its next refresh on, and the admin's offset reads of every topic
 *    at once, for as long as the process lived. Under `npx mesh start`, after
 *    `mesh.work.fact-check` was deleted, the orchestrator retried every task in place from the
 *    next one on ("produce failed: This server does not host this topic-partition"): 8 echo tasks
 *    over 8 minutes all stayed RUNNING; with the patch all 8 completed. A refresh that fails on an
 *    unknown topic now drops the tracked topics the cluster no longer lists and is made again (the
 *    failure itself is still thrown once, so whoever asked for the deleted topic sees it as before).
 *    A consumer's subscribed topics are never dropped: kafkajs tracks them only when subscribing,
 *    and a dropped one would not be fetched again once created anew.
 *
 * 10. The CRC-32C of every produced record batch was computed a byte at a time (2.4 µs per KB,
 *    3.5 µs of the runtime's ~75 µs of CPU per no-op event). It is now computed eight bytes at a
 *    time with the usual slicing-by-8 tables (0.8 µs per KB): the same checksum, which the test
 *    holds to a bitwise reference and the standard check value.
 *
 * 11. A request that timed out left its connection in use, and kafkajs wrote every retry to it
 *    again (kafkajs #919): a connection that stopped passing anything without a close or a reset
 *    (a NAT that forgot it, a proxy whose broker failed over) held the producer's sends, retried
 *    for ever, until TCP gave up, and for ever where something still acknowledged the packets. The
 *    connection now closes itself when one of its requests times out, as if the broker had closed
 *    it (its other requests fail as retriable), and the retry connects afresh. The smoke test
 *    sends through a relay that stops passing anything: each send lands once, a request timeout
 *    later.
 *
 * 12. A produce request copied each message whole (a spread) to hand five of its fields to the
 *    record encoder; it now hands over those five.
 *
 * 13. A consumer that crashed while the broker was away (the coordinator gone, connections refused)
 *    could not leave its group, and its restart joined under a new member id. The group kept the
 *    old id until its session timed out (30 s, counted afresh when a restarted broker loads the
 *    group), and its rebalance waited for it: after a 20 s outage of the local stack's broker no
 *    member consumed for 30 s after the broker was back, and stopping a service in that time took
 *    5 s (its leave waited on the join). The restart now rejoins under the id it was not able to
 *    give back, as the Java client keeps its id across coordinator changes; an id the group no
 *    longer knows is answered UNKNOWN_MEMBER_ID, on which kafkajs joins afresh. The reliability
 *    suite's broker outage times it: every service ready 29.6 s after the broker was back before,
 *    3.2 s after.
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
    to: `  /* mesh-patch: one object for all headers, not a copy per header, nor an object per header */
  const headers = {}
  const headerCount = decoder.readVarInt()
  for (let h = 0; h < headerCount; h++) {
    const key = decoder.readVarIntString()
    const value = decoder.readVarIntBytes()
    const seen = Object.prototype.hasOwnProperty.call(headers, key) ? headers[key] : undefined
    const next = seen === undefined ? value : Array.isArray(seen) ? seen.concat([value]) : [seen, value]
    // An own property even for a header named __proto__, as the spread it replaces made.
    if (key === '__proto__') Object.defineProperty(headers, key, { value: next, enumerable: true, writable: true, configurable: true })
    else headers[key] = next
  }`,
  },
  {
    file: 'src/protocol/recordBatch/record/v0/index.js',
    from: `  const headersArray = Object.keys(headers).flatMap(headerKey =>
    !Array.isArray(headers[headerKey])
      ? [{ key: headerKey, value: headers[headerKey] }]
      : headers[headerKey].map(headerValue => ({ key: headerKey, value: headerValue }))
  )

  const sizeOfBody =
    1 + // always one byte for attributes
    Encoder.sizeOfVarLong(timestampDelta) +
    Encoder.sizeOfVarInt(offsetDelta) +
    Encoder.sizeOfVarIntBytes(key) +
    Encoder.sizeOfVarIntBytes(value) +
    sizeOfHeaders(headersArray)

  return new Encoder()
    .writeVarInt(sizeOfBody)
    .writeInt8(0) // no used record attributes at the moment
    .writeVarLong(timestampDelta)
    .writeVarInt(offsetDelta)
    .writeVarIntBytes(key)
    .writeVarIntBytes(value)
    .writeVarIntArray(headersArray.map(Header))
}

const sizeOfHeaders = headersArray => {
  let size = Encoder.sizeOfVarInt(headersArray.length)

  for (const header of headersArray) {
    const keySize = Buffer.byteLength(header.key)
    const valueSize = Buffer.byteLength(header.value)

    size += Encoder.sizeOfVarInt(keySize) + keySize

    if (header.value === null) {
      size += Encoder.sizeOfVarInt(-1)
    } else {
      size += Encoder.sizeOfVarInt(valueSize) + valueSize
    }
  }

  return size
}`,
    to: `  /* mesh-patch: one buffer of the record's size, headers written into it (no encoder per header)
     straight from the headers object (no {key, value} object per header), each length measured once */
  // A header named once holds its value; a repeated one, an array of them.
  const headerKeys = Object.keys(headers)
  let headersSize = 0
  let measured = 0
  for (const headerKey of headerKeys) {
    const keySize = meshTextLength(headerKey)
    const headerValue = headers[headerKey]
    const many = Array.isArray(headerValue)
    for (let j = 0, n = many ? headerValue.length : 1; j < n; j++) {
      const one = many ? headerValue[j] : headerValue
      const valueSize = typeof one === 'string' ? meshTextLength(one) : Buffer.byteLength(one)
      if (measured + 2 > meshLengths.length) {
        const larger = new Int32Array(meshLengths.length * 2)
        larger.set(meshLengths)
        meshLengths = larger
      }
      meshLengths[measured++] = keySize
      meshLengths[measured++] = valueSize
      headersSize += Encoder.sizeOfVarInt(keySize) + keySize + Encoder.sizeOfVarInt(valueSize) + valueSize
    }
  }
  const headerCount = measured / 2

  // A delta that fits 30 bits has the same zig-zag varint as a varlong, without Long arithmetic.
  const smallDelta = typeof timestampDelta === 'number' && timestampDelta > -0x40000000 && timestampDelta < 0x40000000
  const sizeOfBody =
    1 + // always one byte for attributes
    (smallDelta ? Encoder.sizeOfVarInt(timestampDelta) : Encoder.sizeOfVarLong(timestampDelta)) +
    Encoder.sizeOfVarInt(offsetDelta) +
    Encoder.sizeOfVarIntBytes(key) +
    Encoder.sizeOfVarIntBytes(value) +
    Encoder.sizeOfVarInt(headerCount) +
    headersSize

  const encoder = new Encoder(Encoder.sizeOfVarInt(sizeOfBody) + sizeOfBody)
    .writeVarInt(sizeOfBody)
    .writeInt8(0) // no used record attributes at the moment
  if (smallDelta) encoder.writeVarInt(timestampDelta)
  else encoder.writeVarLong(timestampDelta)
  encoder
    .writeVarInt(offsetDelta)
    .writeVarIntBytes(key)
    .writeVarIntBytes(value)
    .writeVarInt(headerCount)
  let at = 0
  for (const headerKey of headerKeys) {
    const headerValue = headers[headerKey]
    const many = Array.isArray(headerValue)
    for (let j = 0, n = many ? headerValue.length : 1; j < n; j++) {
      const one = many ? headerValue[j] : headerValue
      meshWriteText(encoder, headerKey, meshLengths[at++])
      const valueSize = meshLengths[at++]
      if (Buffer.isBuffer(one)) encoder.writeVarInt(one.length).writeBufferInternal(one)
      else meshWriteText(encoder, String(one), valueSize)
    }
  }
  return encoder
}

/* mesh-patch: the header lengths of the record being encoded (one typed array, reused and grown
   as needed: a plain array emptied per record was allocated again as it refilled), and a string
   written with its length known; the encoder was sized for the record, so nothing grows. Header
   names and values are short and nearly always ASCII: such a string is measured and copied here
   byte by byte, which costs less than the two calls into C++ (byteLength, write) it replaces. A
   string's UTF-8 length equals its UTF-16 length exactly when it is all ASCII. */
let meshLengths = new Int32Array(64)
const meshShortText = 64
const meshTextLength = text => {
  const n = text.length
  if (n > meshShortText) return Buffer.byteLength(text)
  for (let i = 0; i < n; i++) if (text.charCodeAt(i) > 0x7f) return Buffer.byteLength(text)
  return n
}
const meshWriteText = (encoder, text, length) => {
  encoder.writeVarInt(length)
  const buf = encoder.buf
  let offset = encoder.offset
  if (length === text.length && length <= meshShortText) {
    for (let i = 0; i < length; i++) buf[offset++] = text.charCodeAt(i)
  } else {
    buf.write(text, offset, length, 'utf8')
    offset += length
  }
  encoder.offset = offset
}`,
  },
  {
    file: 'src/protocol/recordBatch/record/v0/decoder.js',
    from: `  const timestampDelta = decoder.readVarLong()
  const timestamp =
    timestampType === TimestampTypes.LOG_APPEND_TIME && maxTimestamp
      ? maxTimestamp
      : Long.fromValue(firstTimestamp)
          .add(timestampDelta)
          .toString()

  const offsetDelta = decoder.readVarInt()
  const offset = Long.fromValue(firstOffset)
    .add(offsetDelta)
    .toString()`,
    to: `  const timestampDelta = decoder.readVarLong()
  const timestamp =
    timestampType === TimestampTypes.LOG_APPEND_TIME && maxTimestamp
      ? maxTimestamp
      : meshAddToDecimal(firstTimestamp, timestampDelta)

  const offsetDelta = decoder.readVarInt()
  const offset = meshAddToDecimal(firstOffset, offsetDelta)`,
  },
  {
    file: 'src/protocol/recordBatch/record/v0/decoder.js',
    from: `const TimestampTypes = require('../../../timestampTypes')
`,
    to: `const TimestampTypes = require('../../../timestampTypes')

/* mesh-patch: base (a decimal string or a Long) plus delta, as a decimal string, in plain number
   arithmetic while every figure is a safe integer (offsets and millisecond times always are), in
   Long arithmetic otherwise. Same result as Long.fromValue(base).add(delta).toString(). */
const meshAddToDecimal = (base, delta) => {
  const b = typeof base === 'string' ? Number(base) : NaN
  const d = typeof delta === 'number' ? delta : Long.isLong(delta) ? delta.toNumber() : NaN
  const sum = b + d
  if (Number.isSafeInteger(b) && Number.isSafeInteger(d) && Number.isSafeInteger(sum) && String(b) === base) return String(sum)
  return Long.fromValue(base).add(delta).toString()
}
`,
  },
  {
    file: 'src/protocol/decoder.js',
    from: `  readVarLong() {
    let currentByte
    let result = Long.fromInt(0)`,
    to: `  readVarLong() {
    /* mesh-patch: a varlong of up to 4 bytes (28 bits: every record's time delta) is read in number
       arithmetic, as readVarInt does; longer ones with Long, as before. */
    const start = this.offset
    if (start + 4 <= this.buffer.length) {
      const b0 = this.buffer[start]
      const b1 = this.buffer[start + 1]
      const b2 = this.buffer[start + 2]
      const b3 = this.buffer[start + 3]
      let small = -1
      if (b0 < 0x80) { small = b0; this.offset = start + 1 }
      else if (b1 < 0x80) { small = (b0 & 0x7f) | (b1 << 7); this.offset = start + 2 }
      else if (b2 < 0x80) { small = (b0 & 0x7f) | ((b1 & 0x7f) << 7) | (b2 << 14); this.offset = start + 3 }
      else if (b3 < 0x80) { small = (b0 & 0x7f) | ((b1 & 0x7f) << 7) | ((b2 & 0x7f) << 14) | (b3 << 21); this.offset = start + 4 }
      if (small >= 0) return Long.fromInt((small >>> 1) ^ -(small & 1))
    }
    let currentByte
    let result = Long.fromInt(0)`,
  },
  {
    file: 'src/producer/groupMessagesPerPartition.js',
    from: `  return messages.reduce((result, message) => {
    const partition = partitioner({ topic, partitionMetadata, message })
    const current = result[partition] || []
    return Object.assign(result, { [partition]: [...current, message] })
  }, {})`,
    to: `  /* mesh-patch: each message appended in place, not the partition's array copied per message */
  const result = {}
  for (const message of messages) {
    const partition = partitioner({ topic, partitionMetadata, message })
    const current = result[partition]
    if (current === undefined) result[partition] = [message]
    else current.push(message)
  }
  return result`,
  },
  {
    file: 'src/consumer/consumerGroup.js',
    from: `      if (!requests.length) {
        await sleep(this.maxWaitTime)
        return []
      }`,
    to: `      if (!requests.length) {
        /* mesh-patch: every partition is paused; a resume ends this wait at once */
        await new Promise(resolve => {
          const wakers = (this.meshFetchWakers = this.meshFetchWakers || new Set())
          const wake = () => {
            clearTimeout(timer)
            wakers.delete(wake)
            resolve()
          }
          const timer = setTimeout(wake, this.maxWaitTime)
          wakers.add(wake)
        })
        return []
      }`,
  },
  {
    file: 'src/consumer/consumerGroup.js',
    from: `    this.subscriptionState.resume(topicPartitions)
  }`,
    to: `    this.subscriptionState.resume(topicPartitions)
    /* mesh-patch: wake the fetchers that wait because every partition was paused */
    if (this.meshFetchWakers) for (const wake of [...this.meshFetchWakers]) wake()
  }`,
  },
  {
    file: 'src/producer/sendMessages.js',
    from: `    return retrier(async (bail, retryCount, retryTime) => {
      const topics = topicMessages.map(({ topic }) => topic)`,
    to: `    /* mesh-patch: a send whose topic the cluster says does not exist gives up after 5 s instead
       of being retried for as long as the producer retries (for ever in the mesh), holding every
       later send of the producer behind it. A topic missing for a moment (just created) is retried
       as before. */
    let topicMissingSince
    return retrier(async (bail, retryCount, retryTime) => {
      try {
        return await attempt(bail, retryCount, retryTime)
      } catch (e) {
        if (
          e.type === 'UNKNOWN_TOPIC_OR_PARTITION' ||
          e.name === 'KafkaJSMetadataNotLoaded' ||
          e.name === 'KafkaJSTopicMetadataNotLoaded'
        ) {
          if (topicMissingSince === undefined) topicMissingSince = Date.now()
          else if (Date.now() - topicMissingSince >= 5000) bail(e)
        } else {
          topicMissingSince = undefined
        }
        throw e
      }
    })

    async function attempt(bail, retryCount, retryTime) {
      const topics = topicMessages.map(({ topic }) => topic)`,
  },
  {
    file: 'src/producer/sendMessages.js',
    from: `        logger.error(\`\${e.message}\`, { retryCount, retryTime })
        if (e.retriable) throw e
        bail(e)
      }
    })
  }
}`,
    to: `        logger.error(\`\${e.message}\`, { retryCount, retryTime })
        if (e.retriable) throw e
        bail(e)
      }
    } /* mesh-patch: end of attempt */
  }
}`,
  },
  {
    file: 'src/network/connection.js',
    from: `        const error = new KafkaJSConnectionError(\`Connection error: \${e.message}\`, {
          broker: \`\${this.host}:\${this.port}\`,
          code: e.code,
        })
`,
    to: `        const error = new KafkaJSConnectionError(\`Connection error: \${e.message}\`, {
          broker: \`\${this.host}:\${this.port}\`,
          code: e.code,
        })
        // mesh-patch: an untrusted certificate does not become trusted by trying again.
        if (/^(UNABLE_TO_|SELF_SIGNED_CERT|DEPTH_ZERO_SELF_SIGNED_CERT|CERT_|ERR_TLS_CERT_ALTNAME)/.test(e.code || '')) {
          error.retriable = false
        }
`,
  },
  {
    file: 'src/network/requestQueue/index.js',
    from: `    let scheduleAt = this.throttledUntil - Date.now()
    if (!this.throttleCheckTimeoutId) {
      if (this.pending.length > 0) {
        scheduleAt = scheduleAt > 0 ? scheduleAt : CHECK_PENDING_REQUESTS_INTERVAL
      }
      this.throttleCheckTimeoutId = setTimeout(() => {`,
    to: `    /* mesh-patch: nothing pending, nothing to look for; without this the timer below, armed with
       a negative delay, re-armed itself every millisecond for the life of the connection. push()
       schedules again when a request has to wait. */
    if (this.pending.length === 0) return
    let scheduleAt = this.throttledUntil - Date.now()
    if (!this.throttleCheckTimeoutId) {
      scheduleAt = scheduleAt > 0 ? scheduleAt : CHECK_PENDING_REQUESTS_INTERVAL
      this.throttleCheckTimeoutId = setTimeout(() => {`,
  },
  {
    file: 'src/cluster/index.js',
    from: `    this[PRIVATE.REFRESH_METADATA] = sharedPromiseTo(async () => {
      return await this.brokerPool.refreshMetadata(Array.from(this.targetTopics))
    })

    this[PRIVATE.REFRESH_METADATA_IF_NECESSARY] = sharedPromiseTo(async () => {
      return await this.brokerPool.refreshMetadataIfNecessary(Array.from(this.targetTopics))
    })`,
    to: `    /* mesh-patch: a tracked topic that another client deleted failed every later metadata refresh
       (kafkajs #1622), so the producer's sends to every topic failed from the next refresh on, and
       the admin's offset reads of every topic at once. When a refresh fails on an unknown topic,
       the tracked topics the cluster no longer has are dropped and the refresh is made again.
       The failure is still thrown: a caller that wanted a deleted topic gets it as before, and
       the others' retry finds fresh metadata. A consumer's subscribed topics are kept as before:
       kafkajs adds them only when subscribing, so one dropped would never be fetched again, even
       once created anew. */
    const meshRefreshDroppingDeleted = async refresh => {
      try {
        return await refresh(Array.from(this.targetTopics))
      } catch (e) {
        if (e.type !== 'UNKNOWN_TOPIC_OR_PARTITION' || this.targetTopics.size === 0) throw e
        let existing
        try {
          const broker = await this.brokerPool.findConnectedBroker()
          const { topicMetadata } = await broker.metadata([])
          existing = new Set(topicMetadata.map(({ topic }) => topic))
        } catch (_) {
          throw e
        }
        const kept = this.meshSubscribedTopics || new Set()
        const gone = Array.from(this.targetTopics).filter(
          topic => !existing.has(topic) && !kept.has(topic)
        )
        if (gone.length === 0) throw e
        for (const topic of gone) this.targetTopics.delete(topic)
        this.logger.warn('Topics gone from the cluster are no longer tracked', { topics: gone })
        await this.brokerPool.refreshMetadata(Array.from(this.targetTopics))
        // Still unknown to whoever asked for one of them; everyone else's retry now succeeds.
        throw e
      }
    }

    this[PRIVATE.REFRESH_METADATA] = sharedPromiseTo(async () => {
      return await meshRefreshDroppingDeleted(topics => this.brokerPool.refreshMetadata(topics))
    })

    this[PRIVATE.REFRESH_METADATA_IF_NECESSARY] = sharedPromiseTo(async () => {
      return await meshRefreshDroppingDeleted(topics =>
        this.brokerPool.refreshMetadataIfNecessary(topics)
      )
    })`,
  },
  {
    file: 'src/cluster/index.js',
    from: `            this.targetTopics = previousTopics`,
    to: `            /* mesh-patch: what this call added is taken back, and only that: putting the whole
               previous set back would track again a deleted topic the refresh had just dropped,
               and every later addition would fail on it */
            for (const topic of topics) if (!previousTopics.has(topic)) this.targetTopics.delete(topic)`,
  },
  {
    file: 'src/consumer/index.js',
    from: `    await cluster.addMultipleTargetTopics(topicsToSubscribe)
  }`,
    to: `    /* mesh-patch: subscribed topics stay tracked when deleted (see the cluster's refresh) */
    cluster.meshSubscribedTopics = new Set([
      ...(cluster.meshSubscribedTopics || []),
      ...topicsToSubscribe,
    ])
    await cluster.addMultipleTargetTopics(topicsToSubscribe)
  }`,
  },
  {
    file: 'src/protocol/recordBatch/crc32C/crc32C.js',
    from: `const crc32C = buffer => {
  let crc = 0 ^ -1
  for (let i = 0; i < buffer.length; i++) {
    crc = T[(crc ^ buffer[i]) & 0xff] ^ (crc >>> 8)
  }

  return (crc ^ -1) >>> 0
}

module.exports = crc32C
`,
    to: `/* mesh-patch: crc32C is defined at the end of the file, after the table it is made from */
`,
  },
  {
    file: 'src/protocol/recordBatch/crc32C/crc32C.js',
    from: `  0xbe2da0a5, 0x4c4623a6, 0x5f16d052, 0xad7d5351
]);
`,
    to: `  0xbe2da0a5, 0x4c4623a6, 0x5f16d052, 0xad7d5351
]);

/* mesh-patch: slicing-by-8. S holds eight tables of 256: table k (at k * 256) is the CRC of a
   byte followed by k zero bytes, so eight bytes are folded in per step instead of one. */
const S = new Int32Array(8 * 256)
S.set(T)
for (let k = 1; k < 8; k++)
  for (let b = 0; b < 256; b++) {
    const previous = S[(k - 1) * 256 + b]
    S[k * 256 + b] = S[previous & 0xff] ^ (previous >>> 8)
  }

const crc32C = buffer => {
  const n = buffer.length
  const end = n - (n & 7)
  let crc = -1
  let i = 0
  while (i < end) {
    const a = crc ^ (buffer[i] | (buffer[i + 1] << 8) | (buffer[i + 2] << 16) | (buffer[i + 3] << 24))
    crc =
      S[1792 + (a & 0xff)] ^
      S[1536 + ((a >>> 8) & 0xff)] ^
      S[1280 + ((a >>> 16) & 0xff)] ^
      S[1024 + (a >>> 24)] ^
      S[768 + buffer[i + 4]] ^
      S[512 + buffer[i + 5]] ^
      S[256 + buffer[i + 6]] ^
      S[buffer[i + 7]]
    i += 8
  }
  while (i < n) {
    crc = S[(crc ^ buffer[i]) & 0xff] ^ (crc >>> 8)
    i++
  }
  return (crc ^ -1) >>> 0
}

module.exports = crc32C
`,
  },
  {
    file: 'src/protocol/requests/produce/v3/request.js',
    from: `  const records = messages.map((message, i) =>
    Record({
      ...message,
      offsetDelta: i,
      timestampDelta: (message.timestamp || dateNow) - firstTimestamp,
    })
  )`,
    to: `  /* mesh-patch: the record encoder reads five fields; the message is not copied whole for it */
  const records = messages.map((message, i) =>
    Record({
      key: message.key,
      value: message.value,
      headers: message.headers,
      offsetDelta: i,
      timestampDelta: (message.timestamp || dateNow) - firstTimestamp,
    })
  )`,
  },
  {
    file: 'src/network/requestQueue/index.js',
    from: `      timeout: () => {
        this.inflight.delete(correlationId)
        this.checkPendingRequests()
        // Try to emit REQUEST_QUEUE_EMPTY. Otherwise, waitForPendingRequests may stuck forever
        this[PRIVATE.EMIT_REQUEST_QUEUE_EMPTY]()
      },`,
    to: `      timeout: () => {
        this.inflight.delete(correlationId)
        this.checkPendingRequests()
        // Try to emit REQUEST_QUEUE_EMPTY. Otherwise, waitForPendingRequests may stuck forever
        this[PRIVATE.EMIT_REQUEST_QUEUE_EMPTY]()
        // mesh-patch: the connection is told, and gives itself up (see connection.js)
        if (this.meshOnRequestTimeout) this.meshOnRequestTimeout()
      },`,
  },
  {
    file: 'src/network/connection.js',
    from: `      isConnected: () => this.isConnected(),
    })
`,
    to: `      isConnected: () => this.isConnected(),
    })
    /* mesh-patch: a request that timed out leaves its connection in use, and every retry was
       written to it again (kafkajs #919): a connection that stopped passing anything without a
       close or a reset (a NAT that forgot it, a proxy whose broker failed over) held the producer's
       sends, retried for ever, until TCP gave up (about 15 minutes, never where something still
       acknowledges the packets). The connection now closes itself as if the broker had closed it:
       its other requests fail as retriable, and the next attempt connects afresh. */
    this.requestQueue.meshOnRequestTimeout = () => {
      if (!this.isConnected()) return
      // Logged at ERROR to pass kafkajs's level; @mesh/kafka logs it as the warning it is.
      this.logError('Request timed out; closing the connection, the next request opens a new one')
      this.rejectRequests(
        new KafkaJSConnectionClosedError('Closed connection after a request timed out', {
          host: this.host,
          port: this.port,
        })
      )
      const socket = this.socket
      this.disconnect().then(
        () => socket && socket.destroy(),
        () => socket && socket.destroy()
      )
    }
`,
  },
  {
    file: 'src/consumer/index.js',
    from: `  let consumerGroup = null
  let restartTimeout = null
`,
    to: `  let consumerGroup = null
  let restartTimeout = null
  /* mesh-patch: the member id a crashed member had not given back (see onCrash) */
  let meshRejoinMemberId = null
`,
  },
  {
    file: 'src/consumer/index.js',
    from: `      runner = new Runner({
        logger: rootLogger,
        consumerGroup,`,
    to: `      /* mesh-patch: a restart after a crash rejoins as the member it was, as the Java client
         does, so the group does not wait for that member's session to expire (see onCrash) */
      if (meshRejoinMemberId) consumerGroup.memberId = meshRejoinMemberId
      meshRejoinMemberId = null

      runner = new Runner({
        logger: rootLogger,
        consumerGroup,`,
  },
  {
    file: 'src/consumer/index.js',
    from: `      await disconnect()

      const getOriginalCause = error => {`,
    to: `      /* mesh-patch: a crash with the broker away cannot leave the group, which keeps the member
         until its session times out and has its rebalance wait for it. The id that was not given
         back (leave() clears it when it succeeds) is kept for the restart (13 in the header). */
      const meshCrashedGroup = consumerGroup
      await disconnect()
      meshRejoinMemberId = meshCrashedGroup ? meshCrashedGroup.memberId : null

      const getOriginalCause = error => {`,
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
