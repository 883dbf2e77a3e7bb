import { test } from 'node:test';
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { pino } from 'pino';
import { everyRound } from './rounds.ts';

function capture(): { log: pino.Logger; written: Record<string, unknown>[] } {
  const written: Record<string, unknown>[] = [];
  const log = pino(
    { level: 'info' },
    { write: (line: string) => written.push(JSON.parse(line) as Record<string, unknown>) },
  );
  return { log, written };
}

test('rounds never overlap, and each failing one is retried but told once', async () => {
  const { log, written } = capture();
  let running = 0;
  let most = 0;
  let calls = 0;
  const rounds = everyRound({
    everyMs: 5,
    round: async () => {
      calls += 1;
      running += 1;
      most = Math.max(most, running);
      await sleep(20);
      running -= 1;
      throw new Error('Redis did not answer');
    },
    log,
    what: 'deadline round',
  });
  await sleep(200);
  assert.equal(await rounds.stop(), true, 'the round under way ended within the wait');
  assert.equal(most, 1, 'one round at a time, however long a round takes');
  assert.ok(calls >= 4, `a failed round is tried again (${calls} rounds)`);
  assert.deepEqual(
    written.map(({ level, msg, err }) => ({ level, msg, err })),
    [{ level: 40, msg: 'deadline round failed; will retry', err: 'Error: Redis did not answer' }],
  );
  const after = calls;
  await sleep(50);
  assert.equal(calls, after, 'no round after the stop');
});

test('stop waits for a round under way, but only so long', async () => {
  const { log } = capture();
  let finished = false;
  const quick = everyRound({
    everyMs: 1,
    round: async () => {
      await sleep(50);
      finished = true;
    },
    log,
    what: 'round',
  });
  await sleep(10);
  assert.equal(await quick.stop(), true);
  assert.equal(finished, true, 'the round under way finished before stop returned');

  // A round stuck on a broker that does not answer must not hold the service's stop.
  const stuck = everyRound({
    everyMs: 1,
    round: () => new Promise<void>(() => undefined),
    log,
    what: 'round',
  });
  await sleep(10);
  const started = performance.now();
  assert.equal(await stuck.stop(100), false, 'a round still running is reported');
  const waited = performance.now() - started;
  assert.ok(waited >= 90 && waited < 1_000, `stop waited ${Math.round(waited)} ms`);
});
