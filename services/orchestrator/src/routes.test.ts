import { test } from 'node:test';
import assert from 'node:assert/strict';
import { waitingOn } from './routes.ts';
import type { TaskState } from './store.ts';

const task = (status: TaskState['status'], stages: TaskState['stages']): TaskState => ({
  id: 't',
  status,
  template: 'reviewed',
  createdAt: '2026-01-01T00:00:00.000Z',
  updatedAt: '2026-01-01T00:00:00.000Z',
  input: {},
  budget: {},
  usage: { promptTokens: 0, completionTokens: 0, costUsd: 0, steps: 0 },
  plan: [
    { id: 'research', dependsOn: [], final: false, nodes: [{ id: 'r', agent: 'research' }] },
    {
      id: 'check',
      dependsOn: [],
      final: false,
      nodes: [
        { id: 'a', agent: 'fact-check' },
        { id: 'b', agent: 'summarize' },
        { id: 'c', agent: 'fact-check' },
      ],
    },
    { id: 'review', dependsOn: ['research'], final: false, gate: { id: 'review' } },
    { id: 'draft', dependsOn: ['review'], final: true, nodes: [{ id: 'd', agent: 'draft' }] },
  ],
  stages,
});

test('an unfinished task waits on its started stages, in plan order, with their agents or gate', () => {
  const since = '2026-01-01T00:01:00.000Z';
  assert.deepEqual(
    waitingOn(
      task('awaiting_approval', {
        research: { status: 'completed' },
        check: { status: 'dispatched', startedAt: since },
        review: { status: 'awaiting_approval', startedAt: since },
        draft: { status: 'pending' },
      }),
    ),
    [
      { stage: 'check', status: 'dispatched', since, agents: ['fact-check', 'summarize'] },
      { stage: 'review', status: 'awaiting_approval', since, gate: 'review' },
    ],
  );
});

test('a finished task waits on nothing, whatever its stages say', () => {
  const stages = { research: { status: 'dispatched' as const } };
  assert.deepEqual(waitingOn(task('cancelled', stages)), []);
  assert.deepEqual(waitingOn(task('running', stages)), [
    { stage: 'research', status: 'dispatched', agents: ['research'] },
  ]);
});
