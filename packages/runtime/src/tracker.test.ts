// node:test's test() and describe() return promises the runner itself awaits.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { PartitionTracker } from './tracker.ts';
import { topicNames, topicSpecs } from './topics.ts';

function tracker(taken: number[]): PartitionTracker {
  const t = new PartitionTracker('mesh.work.writer', 3);
  for (const offset of taken) t.take(offset);
  return t;
}

describe('PartitionTracker', () => {
  test('starts empty', () => {
    const t = new PartitionTracker('topic', 0);
    assert.equal(t.topic, 'topic');
    assert.equal(t.partition, 0);
    assert.equal(t.pending, 0);
    assert.equal(t.highestTaken, -1);
    assert.equal(t.committed, -1);
    assert.equal(t.commitPosition(), undefined);
    assert.equal(t.seen(0), false);
  });

  test('the commit position never passes an unfinished offset', () => {
    const t = tracker([0, 1, 2, 3]);
    t.finish(2);
    t.finish(3);
    assert.equal(t.commitPosition(), 0);
    t.finish(0);
    assert.equal(t.commitPosition(), 1);
    t.finish(1);
    assert.equal(t.commitPosition(), 4);
  });

  test('offsets with gaps (compacted or transactional logs) commit one past the last finished', () => {
    const t = tracker([10, 15, 40]);
    t.finish(15);
    assert.equal(t.commitPosition(), 10);
    t.finish(10);
    assert.equal(t.commitPosition(), 40);
    t.finish(40);
    assert.equal(t.commitPosition(), 41);
  });

  test('the position is offered again until it is marked committed', () => {
    const t = tracker([0, 1]);
    t.finish(0);
    assert.equal(t.commitPosition(), 1);
    assert.equal(t.commitPosition(), 1, 'a failed commit is retried with the same position');
    t.markCommitted(1);
    assert.equal(t.committed, 1);
    assert.equal(t.commitPosition(), undefined);
    t.finish(1);
    assert.equal(t.commitPosition(), 2);
    t.markCommitted(2);
    assert.equal(t.commitPosition(), undefined);
  });

  test('markCommitted never moves backwards', () => {
    const t = tracker([0, 1, 2]);
    t.finish(0);
    t.finish(1);
    t.finish(2);
    t.markCommitted(3);
    t.markCommitted(1);
    assert.equal(t.committed, 3);
    assert.equal(t.commitPosition(), undefined);
  });

  test('the position offered after a commit of the head-of-line offset is not re-offered', () => {
    const t = tracker([0, 1]);
    assert.equal(t.commitPosition(), 0);
    t.markCommitted(0);
    assert.equal(t.commitPosition(), undefined, 'nothing new while 0 is still running');
  });

  test('pending counts taken and not finished offsets; a second finish is ignored', () => {
    const t = tracker([5, 6, 7, 8]);
    assert.equal(t.pending, 4);
    t.finish(7);
    assert.equal(t.pending, 3);
    t.finish(7);
    assert.equal(t.pending, 3);
    t.finish(5);
    t.finish(6);
    t.finish(8);
    assert.equal(t.pending, 0);
    assert.equal(t.commitPosition(), 9);
  });

  test('seen identifies redeliveries of taken offsets', () => {
    const t = tracker([0, 1, 2]);
    assert.equal(t.highestTaken, 2);
    assert.equal(t.seen(0), true);
    assert.equal(t.seen(2), true);
    assert.equal(t.seen(3), false);
    t.finish(0);
    t.commitPosition();
    assert.equal(t.seen(0), true, 'still seen after the books dropped it');
  });

  test('taking an offset twice or out of order throws', () => {
    const t = tracker([0, 1, 2]);
    assert.throws(() => t.take(1), /offset 1 taken twice on mesh\.work\.writer\/3/);
    assert.throws(() => t.take(2), /taken twice/);
    assert.equal(t.pending, 3);
    t.take(3);
    assert.equal(t.highestTaken, 3);
  });

  test('a long run finished in reverse commits only when the head finishes', () => {
    const offsets = Array.from({ length: 100 }, (_, i) => i);
    const t = tracker(offsets);
    for (const offset of offsets.slice(1).reverse()) {
      t.finish(offset);
      assert.equal(t.commitPosition(), 0);
    }
    t.finish(0);
    assert.equal(t.commitPosition(), 100);
    assert.equal(t.pending, 0);
  });
});

describe('topicNames', () => {
  test('applies the prefix to every contract topic', () => {
    const names = topicNames('mesh.');
    assert.equal(names.requests, 'mesh.requests');
    assert.equal(names.results, 'mesh.results');
    assert.equal(names.stages, 'mesh.stages');
    assert.equal(names.outputs, 'mesh.outputs');
    assert.equal(names.control, 'mesh.control');
    assert.equal(names.escalations, 'mesh.escalations');
    assert.equal(names.dlq, 'mesh.dlq');
    assert.equal(names.work('writer'), 'mesh.work.writer');
    assert.equal(names.retry('30s'), 'mesh.retry.30s');
  });

  test('works with another prefix, including none', () => {
    assert.equal(topicNames('dev-1.').work('a'), 'dev-1.work.a');
    assert.equal(topicNames('').dlq, 'dlq');
  });

  test('agentOf reads the agent of a work topic only', () => {
    const names = topicNames('t.');
    assert.equal(names.agentOf('t.work.writer'), 'writer');
    assert.equal(names.agentOf('t.work.web.search'), 'web.search');
    assert.equal(names.agentOf('t.results'), undefined);
    assert.equal(names.agentOf('mesh.work.writer'), undefined);
  });
});

describe('topicSpecs', () => {
  const config = {
    topicPrefix: 'p.',
    partitions: 12,
    replicationFactor: 3,
    retryTiers: [
      { name: '5s', delayMs: 5_000 },
      { name: '30s', delayMs: 30_000 },
      { name: '5m', delayMs: 300_000 },
    ],
  };

  test('lists the fixed topics, one per retry tier and one work topic per agent', () => {
    const specs = topicSpecs(config, ['writer', 'researcher', 'writer']);
    assert.deepEqual(
      specs.map((spec) => spec.topic),
      [
        'p.requests',
        'p.results',
        'p.stages',
        'p.outputs',
        'p.control',
        'p.escalations',
        'p.dlq',
        'p.retry.5s',
        'p.retry.30s',
        'p.retry.5m',
        'p.work.writer',
        'p.work.researcher',
      ],
    );
  });

  test('every topic gets the configured partitions and replication factor', () => {
    for (const spec of topicSpecs(config, ['a'])) {
      assert.equal(spec.numPartitions, 12, spec.topic);
      assert.equal(spec.replicationFactor, 3, spec.topic);
    }
  });

  test('dlq and escalations keep 30 days; other topics use the broker default', () => {
    const byTopic = new Map(topicSpecs(config, ['a']).map((spec) => [spec.topic, spec]));
    const thirtyDays = String(30 * 24 * 60 * 60 * 1000);
    assert.deepEqual(byTopic.get('p.dlq')?.configs, { 'retention.ms': thirtyDays });
    assert.deepEqual(byTopic.get('p.escalations')?.configs, { 'retention.ms': thirtyDays });
    for (const topic of ['p.requests', 'p.results', 'p.retry.5s', 'p.work.a']) {
      assert.equal(byTopic.get(topic)?.configs, undefined, topic);
    }
  });

  test('no agents and no tiers give the seven fixed topics', () => {
    assert.equal(topicSpecs({ ...config, retryTiers: [] }, []).length, 7);
  });
});
