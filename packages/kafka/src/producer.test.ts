/**
 * The producer's size estimate, against the bytes kafkajs really writes for a record: it must never
 * be below them, or a request the producer thinks fits would be refused by Kafka as too large.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import { recordBytes, type OutgoingRecord } from './producer.ts';

const require = createRequire(import.meta.url);
const encodeRecord = require('kafkajs/src/protocol/recordBatch/record/v0') as (record: {
  offsetDelta: number;
  timestampDelta: number;
  key: Buffer | null;
  value: Buffer;
  headers: Record<string, string | Buffer>;
}) => { buffer: Buffer };

test('recordBytes is never below the bytes kafkajs writes, whatever the characters', () => {
  const texts = ['', 'plain ascii', 'é', 'ça coûte 5 €', '中文标题', 'emoji 🤖🧠', 'x'.repeat(500)];
  const records: OutgoingRecord[] = [];
  for (const text of texts) {
    records.push({
      topic: 't',
      key: text === '' ? null : `task-${text}`,
      value: Buffer.from(JSON.stringify({ text })),
      headers: {
        ce_id: 'ab3f6c1e-1d7e-4a59-9a55-3c2b0f0a9d11',
        [`ce_x${text}`]: text,
        ce_buffer: Buffer.from(text),
        ce_agentpath: `research,${text}`,
      },
    });
  }
  for (const record of records) {
    // The largest deltas a request of 1,000 records spread over a minute can carry.
    const written = encodeRecord({
      offsetDelta: 999,
      timestampDelta: 60_000,
      key: record.key === null ? null : Buffer.from(record.key),
      value: record.value,
      headers: record.headers,
    }).buffer.length;
    assert.ok(
      recordBytes(record) >= written,
      `estimate ${recordBytes(record)} below ${written} bytes for ${JSON.stringify(record.key)}`,
    );
    // And not wildly above for plain ASCII, or requests would be cut needlessly small.
    if (record.key === 'task-plain ascii')
      assert.ok(recordBytes(record) < 3 * written, `${recordBytes(record)} vs ${written}`);
  }
});
