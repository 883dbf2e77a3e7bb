import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Memo } from './memo.ts';

test('concurrent first uses share one load; the value is then read without an await', async () => {
  const memo = new Memo<string, number>();
  let loads = 0;
  const load = async () => {
    loads += 1;
    await new Promise((resolve) => setTimeout(resolve, 5));
    return 42;
  };
  assert.equal(memo.settled('a'), undefined);
  const values = await Promise.all([memo.get('a', load), memo.get('a', load), memo.get('a', load)]);
  assert.deepEqual(values, [42, 42, 42]);
  assert.equal(loads, 1);
  assert.equal(memo.settled('a'), 42);
  assert.equal(await memo.get('a', load), 42);
  assert.equal(loads, 1, 'a settled value is not loaded again');
});

test('a failed load is forgotten: the next use loads again', async () => {
  const memo = new Memo<string, number>();
  let calls = 0;
  const flaky = async () => {
    calls += 1;
    if (calls === 1) throw new Error('registry away');
    return 7;
  };
  await assert.rejects(memo.get('k', flaky), /registry away/);
  assert.equal(memo.settled('k'), undefined);
  assert.equal(await memo.get('k', flaky), 7);
  assert.equal(calls, 2);
});

test('a value set while an older load runs wins over that load', async () => {
  const memo = new Memo<string, number>();
  let finish = (_value: number): void => undefined;
  const slow = () => new Promise<number>((resolve) => (finish = resolve));
  const older = memo.get('type', slow);
  memo.set('type', 2);
  finish(1);
  assert.equal(await older, 1, 'the caller of the older load still gets its answer');
  assert.equal(memo.settled('type'), 2);
  assert.equal(await memo.get('type', slow), 2);
});
