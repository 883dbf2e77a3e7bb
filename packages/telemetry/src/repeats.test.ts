import { test } from 'node:test';
import assert from 'node:assert/strict';
import { pino } from 'pino';
import { RepeatedLines } from './repeats.ts';

test('a line that repeats is logged once per window, the next one with how many were held back', () => {
  let now = 0;
  const repeats = new RepeatedLines(30_000, () => now);
  assert.deepEqual(repeats.admit('refused'), {}, 'the first is logged');
  // An outage: the same failure four times a second for a minute.
  const admitted: ({ suppressed?: number } | undefined)[] = [];
  for (let i = 0; i < 240; i += 1) {
    now += 250;
    admitted.push(repeats.admit('refused'));
  }
  const logged = admitted.filter((a) => a !== undefined);
  assert.deepEqual(logged, [{ suppressed: 119 }, { suppressed: 119 }]);
  // Another kind is not held back by the first.
  assert.deepEqual(repeats.admit('timed out'), {});
  // One more within the window, then quiet: the next line still says it was held back.
  now += 1_000;
  assert.equal(repeats.admit('refused'), undefined);
  now += 60_000;
  assert.deepEqual(repeats.admit('refused'), { suppressed: 1 });
  now += 30_000;
  assert.deepEqual(repeats.admit('refused'), {}, 'nothing held back since');
});

test('kinds are remembered up to a bound; beyond it a new kind is logged, never held back', () => {
  let now = 0;
  const repeats = new RepeatedLines(1_000, () => now);
  for (let i = 0; i < RepeatedLines.maxKinds; i += 1) assert.deepEqual(repeats.admit(`k${i}`), {});
  // Full of kinds still in their window: a new one is logged every time.
  assert.deepEqual(repeats.admit('new'), {});
  assert.deepEqual(repeats.admit('new'), {});
  // Their windows passed: they are forgotten, and the new kind is counted again.
  now += 1_000;
  assert.deepEqual(repeats.admit('new'), {});
  assert.equal(repeats.admit('new'), undefined);
});

test('warn logs through pino once per window, with the fields and the count held back', () => {
  const written: Record<string, unknown>[] = [];
  const log = pino(
    { level: 'info' },
    { write: (line: string) => written.push(JSON.parse(line) as Record<string, unknown>) },
  );
  let now = 0;
  const repeats = new RepeatedLines(1_000, () => now);
  for (let i = 0; i < 5; i += 1) {
    repeats.warn(log, 'down', { err: 'redis_unavailable: down' }, 'round failed');
    now += 300;
  }
  assert.deepEqual(
    written.map(({ level, msg, err, suppressed }) => ({ level, msg, err, suppressed })),
    [
      { level: 40, msg: 'round failed', err: 'redis_unavailable: down', suppressed: undefined },
      { level: 40, msg: 'round failed', err: 'redis_unavailable: down', suppressed: 3 },
    ],
  );
});
