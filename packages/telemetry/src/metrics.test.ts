import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createMetrics } from './metrics.ts';

/** The value of one sample of the registry's text exposition, or undefined when it is absent. */
async function sample(
  metrics: ReturnType<typeof createMetrics>,
  name: string,
  labels: string,
): Promise<number | undefined> {
  const text = await metrics.registry.metrics();
  const line = text.split('\n').find((l) => l.startsWith(`${name}{${labels}} `));
  return line === undefined ? undefined : Number(line.slice(line.lastIndexOf(' ') + 1));
}

test('hot-path counts reach a scrape once each, beside direct increments of the same metric', async () => {
  const metrics = createMetrics({ defaultMetrics: false });
  for (let i = 0; i < 3; i += 1) metrics.countConsumed('worker', 'mesh.work.echo', 'a.b');
  metrics.countConsumed('worker', 'mesh.work.echo', 'c.d');
  metrics.consumed.inc({ service: 'worker', topic: 'mesh.work.echo', type: 'a.b' });
  metrics.countProduced('worker', 'mesh.results', 'a.b');

  const consumed = 'service="worker",topic="mesh.work.echo",type="a.b"';
  assert.equal(await sample(metrics, 'mesh_events_consumed_total', consumed), 4);
  assert.equal(
    await sample(
      metrics,
      'mesh_events_consumed_total',
      'service="worker",topic="mesh.work.echo",type="c.d"',
    ),
    1,
  );
  assert.equal(
    await sample(
      metrics,
      'mesh_events_produced_total',
      'service="worker",topic="mesh.results",type="a.b"',
    ),
    1,
  );
  // A second scrape adds nothing that was counted already; later counts are added to the total.
  assert.equal(await sample(metrics, 'mesh_events_consumed_total', consumed), 4);
  metrics.countConsumed('worker', 'mesh.work.echo', 'a.b');
  assert.equal(await sample(metrics, 'mesh_events_consumed_total', consumed), 5);
  assert.deepEqual((await metrics.consumed.get()).values.map((v) => v.value).sort(), [1, 5]);
});

test('in-flight events are a level: what was added and not yet taken away, per agent', async () => {
  const metrics = createMetrics({ defaultMetrics: false });
  metrics.addInflight('worker', 'echo', 1);
  metrics.addInflight('worker', 'echo', 1);
  metrics.addInflight('worker', 'llm', 1);
  assert.equal(await sample(metrics, 'mesh_inflight', 'service="worker",agent="echo"'), 2);
  metrics.addInflight('worker', 'echo', -1);
  metrics.addInflight('worker', 'llm', -1);
  assert.equal(await sample(metrics, 'mesh_inflight', 'service="worker",agent="echo"'), 1);
  assert.equal(await sample(metrics, 'mesh_inflight', 'service="worker",agent="llm"'), 0);
});
