/**
 * The dead-letter store against the real Redis: what it keeps, and that it keeps nothing for ever.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { testRedis } from '@mesh/testkit';
import { DeadLetterStore, type DeadLetter } from '../src/index.ts';

test('the dead-letter index forgets letters that came more than the TTL ago', async (t) => {
  const { redis, prefix } = await testRedis(t, 'dlq');
  const store = new DeadLetterStore(redis, { ttlMs: 60_000, prefix });
  const letter = (id: string, ageMs: number): DeadLetter => ({
    id,
    failure: 'malformed_event',
    detail: 'not a CloudEvent',
    at: new Date(Date.now() - ageMs).toISOString(),
    status: 'parked',
    action: 'park',
    reason: 'default',
    history: [],
    partition: 0,
    offset: '0',
    key: null,
    value: '',
    headers: {},
  });

  for (const [id, age] of [
    ['old', 120_000],
    ['older', 180_000],
  ] as const)
    assert.equal(await store.add(letter(id, age)), true);
  // Each add trims what came before the TTL, itself included when it is that old.
  assert.equal(await redis.zcard(`${prefix}dlq:index`), 0);
  assert.equal(await store.add(letter('recent', 1_000)), true);
  assert.equal(await store.add(letter('recent', 1_000)), false, 'a redelivery is stored once');
  assert.equal(await store.add(letter('new', 0)), true);
  assert.deepEqual(await redis.zrevrange(`${prefix}dlq:index`, 0, -1), ['new', 'recent']);
  assert.deepEqual(
    (await store.list({ limit: 10 })).map((l) => l.id),
    ['new', 'recent'],
  );
  // The letter itself is still readable by id until its own TTL.
  assert.equal((await store.get('old'))?.id, 'old');
});
