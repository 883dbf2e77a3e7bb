/**
 * `waitFor`, which every integration test waits with: what it returns, and what a timed-out wait
 * says. A message given as a function tells the state at the timeout, not at the start of the wait
 * (service log tails, counts), which is what someone reading a red run needs.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { waitFor } from './index.ts';

test('waitFor returns the first truthy value, polling through falsy values and throws', async () => {
  let calls = 0;
  const value = await waitFor(
    () => {
      calls += 1;
      if (calls === 1) throw new Error('not yet');
      return calls >= 3 ? `after ${calls}` : false;
    },
    { interval: 1 },
  );
  assert.equal(value, 'after 3');
});

test('a timed-out wait says its message and the last failure; a message function is read at the timeout', async () => {
  let count = 0;
  await assert.rejects(
    waitFor(
      () => {
        count += 1;
        return false;
      },
      { timeout: 50, interval: 5, message: () => `count ${count}` },
    ),
    (error: Error) => {
      const said = /^count (\d+) after 50 ms: condition returned false$/.exec(error.message);
      assert.ok(said !== null, error.message);
      assert.ok(Number(said[1]) > 1, `the message was read at the timeout: ${error.message}`);
      return true;
    },
  );
  await assert.rejects(
    waitFor(
      () => {
        throw new Error('broker away');
      },
      { timeout: 20, interval: 5, message: 'no broker' },
    ),
    /^Error: no broker after 20 ms: broker away$/,
  );
});
