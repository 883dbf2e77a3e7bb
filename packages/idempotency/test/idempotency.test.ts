/**
 * The idempotency store against the real Redis: one holder at a time, renewal while a handler runs,
 * done markers, release, and a lost lease reported.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { isMeshError } from '@mesh/errors';
import { resultWithin } from '@mesh/kafka';
import { createRedis, evictionRisk, waitForRedis } from '@mesh/redis';
import {
  blackholingRelay,
  onCleanup,
  privateRedis,
  redisBehindRelay,
  testRedis,
  waitFor,
} from '@mesh/testkit';
import { IdempotencyStore, type Lease, type LeaseTrouble } from '../src/index.ts';

async function store(t: Parameters<typeof onCleanup>[0], leaseTtlMs: number) {
  const { redis, prefix: keyPrefix } = await testRedis(t, 'idem');
  return {
    redis,
    idempotency: new IdempotencyStore(redis, { leaseTtlMs, doneTtlMs: 60_000, keyPrefix }),
  };
}

function claimed(claim: Awaited<ReturnType<IdempotencyStore['claim']>>): Lease {
  assert.equal(claim.state, 'claimed');
  return claim.lease;
}

test('one holder at a time; done is final; a released event can be claimed again', async (t) => {
  const { idempotency } = await store(t, 5_000);
  const lease = claimed(await idempotency.claim('g', 'e1'));
  assert.equal(lease.idempotencyKey, 'g:e1');
  const other = await idempotency.claim('g', 'e1');
  assert.equal(other.state, 'leased');
  assert.ok(other.state === 'leased' && other.retryInMs > 0 && other.retryInMs <= 5_000);
  assert.equal((await idempotency.claim('other-group', 'e1')).state, 'claimed', 'groups are apart');

  await idempotency.release(lease);
  const again = claimed(await idempotency.claim('g', 'e1'));
  await idempotency.complete(again, 'ok');
  assert.deepEqual(await idempotency.claim('g', 'e1'), { state: 'done', outcome: 'ok' });
});

test('a lease is renewed while its handler runs past the TTL, then lapses when nobody renews it', async (t) => {
  const { idempotency } = await store(t, 600);
  const lease = claimed(await idempotency.claim('g', 'long'));
  const troubles: LeaseTrouble[] = [];
  await idempotency.withRenewal(
    lease,
    async () => {
      // Three TTLs: without renewal another replica could take the event over.
      for (let i = 0; i < 6; i += 1) {
        await sleep(300);
        assert.equal((await idempotency.claim('g', 'long')).state, 'leased', `held at ${i}`);
      }
    },
    (trouble) => troubles.push(trouble),
  );
  assert.deepEqual(troubles, [], 'the lease was never lost');
  await sleep(900);
  claimed(await idempotency.claim('g', 'long'));
});

test('a lease taken over while its handler runs is reported lost, once', async (t) => {
  const { redis, idempotency } = await store(t, 600);
  const lease = claimed(await idempotency.claim('g', 'stolen'));
  const troubles: LeaseTrouble[] = [];
  await idempotency.withRenewal(
    lease,
    async () => {
      // Another holder's lease replaces ours (as after our lease expired and it claimed the event).
      await redis.set(lease.key, 'lease:someone-else', 'PX', 10_000);
      await sleep(1_200);
    },
    (trouble) => troubles.push(trouble),
  );
  assert.deepEqual(troubles, [{ kind: 'lost', reason: 'lease expired and was taken over' }]);
});

test('renewals that fail while Redis is away are reported once, not at every attempt', async (t) => {
  const server = await privateRedis(t);
  const relay = await blackholingRelay(t, server.url);
  const redis = createRedis({ url: relay.url }, { connectionName: 'idem-renewal-test' });
  onCleanup(t, () => redis.disconnect());
  await waitForRedis(redis);
  const idempotency = new IdempotencyStore(redis, { leaseTtlMs: 600, doneTtlMs: 60_000 });
  const lease = claimed(await idempotency.claim('g', 'away'));
  const troubles: LeaseTrouble[] = [];
  await idempotency.withRenewal(
    lease,
    async () => {
      // Renewals are due every 200 ms: about seven fail while Redis cannot be reached.
      const restore = relay.sever();
      await sleep(1_500);
      restore();
      // Back, the lease has lapsed (600 ms): the next renewal finds it gone.
      await waitFor(() => troubles.length >= 2, {
        timeout: 5_000,
        message: () => JSON.stringify(troubles),
      });
    },
    (trouble) => troubles.push(trouble),
  );
  assert.equal(troubles.length, 2, JSON.stringify(troubles));
  // First the failing spell (the lease may still be ours), then the lapse found once Redis is back:
  // nobody took it over, which the report says rather than suggesting another holder.
  assert.equal(troubles[0]?.kind, 'unrenewed');
  assert.match(troubles[0]?.reason ?? '', /could not renew a lease/);
  assert.deepEqual(troubles[1], { kind: 'lost', reason: 'lease expired, and nobody holds it now' });
});

test('claims and done markers made together go to Redis as one script call, each answered on its own', async (t) => {
  const { redis, idempotency } = await store(t, 5_000);
  const done = claimed(await idempotency.claim('g', 'done-before'));
  await idempotency.complete(done, 'ok');
  const held = claimed(await idempotency.claim('g', 'held-before'));
  assert.ok(held);

  const scriptCalls = async (): Promise<number> => {
    const stats = await redis.info('commandstats');
    let calls = 0;
    for (const match of stats.matchAll(/cmdstat_(?:evalsha|eval):calls=(\d+)/g))
      calls += Number(match[1]);
    return calls;
  };
  const before = await scriptCalls();
  const ids = Array.from({ length: 200 }, (_, i) => `e${i}`);
  const claims = await Promise.all([
    ...ids.map((id) => idempotency.claim('g', id)),
    idempotency.claim('g', 'done-before'),
    idempotency.claim('g', 'held-before'),
    // The same event twice in one batch: only one of the two may hold it.
    idempotency.claim('g', 'e0'),
  ]);
  const calls = (await scriptCalls()) - before;
  // `INFO` itself is not a script; the first use of a script on a connection may add one EVAL.
  assert.ok(calls <= 2, `202 claims took ${calls} script calls`);
  assert.deepEqual(
    claims.slice(0, 200).map((c) => c.state),
    ids.map(() => 'claimed'),
  );
  assert.deepEqual(claims[200], { state: 'done', outcome: 'ok' });
  assert.equal(claims[201]?.state, 'leased');
  assert.equal(claims[202]?.state, 'leased', 'a second claim of e0 in the same batch waits');

  const leases = claims.slice(0, 200).map(claimed);
  const beforeDone = await scriptCalls();
  await Promise.all(leases.map((lease) => idempotency.complete(lease, 'ok')));
  assert.ok((await scriptCalls()) - beforeDone <= 2, 'the done markers went in one script call');
  const again = await Promise.all(ids.map((id) => idempotency.claim('g', id)));
  assert.ok(again.every((c) => c.state === 'done' && c.outcome === 'ok'));
});

test('each lease of one batch is its own: releasing one leaves the others held; outcomes stay apart', async (t) => {
  const { idempotency } = await store(t, 5_000);
  const leases = (await Promise.all(['a', 'b', 'c'].map((id) => idempotency.claim('g', id)))).map(
    claimed,
  );
  assert.equal(new Set(leases.map((lease) => lease.token)).size, 3, 'three tokens');
  const [a, b, c] = leases as [Lease, Lease, Lease];
  // A release names its own token: one of another lease of the same batch releases nothing.
  await idempotency.release({ ...a, token: b.token });
  assert.equal((await idempotency.claim('g', 'a')).state, 'leased');
  await idempotency.release(b);
  claimed(await idempotency.claim('g', 'b'));
  assert.equal(await idempotency.renew(c), true, 'c is still held by its lease');
  // Done markers with different outcomes, made in one turn, each keep their own.
  await Promise.all([idempotency.complete(a, 'ok'), idempotency.complete(c, 'dlq')]);
  assert.deepEqual(await idempotency.claim('g', 'a'), { state: 'done', outcome: 'ok' });
  assert.deepEqual(await idempotency.claim('g', 'c'), { state: 'done', outcome: 'dlq' });
});

test('a Redis that may evict the keys when full is named; noeviction or no maxmemory is not', async (t) => {
  const { redis } = await store(t, 5_000);
  const [, policy] = (await redis.config('GET', 'maxmemory-policy')) as [string, string];
  const [, limit] = (await redis.config('GET', 'maxmemory')) as [string, string];
  onCleanup(t, async () => {
    await redis.config('SET', 'maxmemory-policy', policy);
    await redis.config('SET', 'maxmemory', limit);
  });
  assert.equal(policy, 'noeviction', "the stack's Redis keeps the default");
  assert.equal(await evictionRisk(redis), undefined);
  // A limit far above what any test stores: nothing is evicted while the other tests run.
  await redis.config('SET', 'maxmemory-policy', 'volatile-lru');
  assert.equal(await evictionRisk(redis), undefined, 'without maxmemory nothing is evicted');
  await redis.config('SET', 'maxmemory', String(16 * 1024 ** 3));
  assert.equal(
    await evictionRisk(redis),
    `maxmemory-policy volatile-lru with maxmemory ${16 * 1024 ** 3} bytes`,
  );
  await redis.config('SET', 'maxmemory-policy', 'noeviction');
  assert.equal(await evictionRisk(redis), undefined);
});

test('claims on a connection that went dead without closing are made again on a new one', async (t) => {
  const socketTimeoutMs = 1_000;
  const { redis, blackhole } = await redisBehindRelay(
    t,
    'idem-dead-connection-test',
    socketTimeoutMs,
  );
  const idempotency = new IdempotencyStore(redis, { leaseTtlMs: 30_000, doneTtlMs: 60_000 });
  claimed(await idempotency.claim('g', 'before'));
  const noAnswer = Symbol('no answer');
  const within = async <T>(work: Promise<T>): Promise<T> => {
    const answer = await resultWithin<T | typeof noAnswer>(work, socketTimeoutMs + 5_000, noAnswer);
    if (answer === noAnswer) throw new Error('no answer: the command waits on the dead connection');
    return answer;
  };

  // Nothing gets through: the claim never reached Redis, and is sent again on a new connection.
  blackhole('both');
  let started = performance.now();
  const lost = claimed(await within(idempotency.claim('g', 'lost-request')));
  const tookRequest = performance.now() - started;
  await within(idempotency.complete(lost, 'ok'));

  // Redis ran the claim but its answer was lost: the same call again answers claimed, not leased,
  // so the event runs now instead of after its lease's 30 s.
  blackhole('replies');
  started = performance.now();
  const applied = claimed(await within(idempotency.claim('g', 'lost-reply')));
  const tookReply = performance.now() - started;
  await within(idempotency.complete(applied, 'ok'));

  for (const took of [tookRequest, tookReply])
    assert.ok(
      took >= socketTimeoutMs - 100 && took < socketTimeoutMs + 3_000,
      `answered after ${Math.round(took)} ms, on the connection made after ${socketTimeoutMs} ms of silence`,
    );
  assert.deepEqual(await idempotency.claim('g', 'lost-reply'), { state: 'done', outcome: 'ok' });
  assert.deepEqual(await idempotency.claim('g', 'lost-request'), { state: 'done', outcome: 'ok' });
});

test('leases a failed claim may have taken are given back once Redis answers, not left to lapse', async (t) => {
  // No socket timeout here: the client's own disconnect fails the call instead.
  const { redis, failAfterApplied } = await redisBehindRelay(t, 'idem-lost-claim-test', 0);
  const idempotency = new IdempotencyStore(redis, { leaseTtlMs: 30_000, doneTtlMs: 60_000 });
  // Redis takes the lease; its answer is lost, and the claim fails with its connection.
  const failure = await failAfterApplied(() => idempotency.claim('g', 'e1'));
  assert.ok(isMeshError(failure) && failure.code === 'redis_unavailable', String(failure));

  const started = performance.now();
  let claim = await idempotency.claim('g', 'e1');
  while (claim.state === 'leased' && performance.now() - started < 5_000) {
    await sleep(100);
    claim = await idempotency.claim('g', 'e1');
  }
  const took = performance.now() - started;
  assert.equal(claim.state, 'claimed', 'the event is claimed again, not held by the lost lease');
  assert.ok(took < 3_000, `claimed after ${Math.round(took)} ms; the lease lapses only after 30 s`);
});
