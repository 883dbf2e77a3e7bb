/**
 * The worker with its built-in agents against the real Kafka, registry and Redis: results on
 * `mesh.results` with the contract's data and lineage, output-schema violations on a retry tier,
 * subtask timeouts, terminal failures with `io.mesh.subtask.failed`, and subtasks of ended tasks
 * skipped.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { onCleanup, waitFor } from '@mesh/testkit';
import type { SubtaskCompleted, SubtaskFailed } from '../src/index.ts';
import { assignment, publish, recordsOf, resultOf, retriedOf, startWorker } from './helpers.ts';

const stage = { nodes: ['n1'], join: 'all', final: false, template: 'research' } as const;

test('each built-in agent completes its subtask with structured output, usage and lineage', async (t) => {
  const h = await startWorker(t);
  const task = { topic: 'ocean tides', audience: 'students' };
  const research = {
    topic: 'ocean tides',
    findings: ['Tides follow the moon.', 'Spring tides are larger.'],
    sources: ['https://example.org/a'],
  };
  const summary = {
    summary: 'Tides are driven by the moon.',
    points: ['Tides follow the moon.', 'Spring tides are larger.'],
  };
  const checks = {
    claims: [{ claim: 'Tides follow the moon.', verdict: 'supported', confidence: 0.9 }],
  };
  const events = {
    echo: assignment('echo', { task, text: 'hello' }, { stage }),
    research: assignment('research', { task, previous: {}, focus: 'physics' }, { stage }),
    summarize: assignment(
      'summarize',
      { task, previous: { research: { r1: research } } },
      { stage },
    ),
    'fact-check': assignment(
      'fact-check',
      { task, previous: { summarize: { s1: summary } } },
      { stage },
    ),
    draft: assignment(
      'draft',
      {
        task,
        previous: { research: { r1: research }, summarize: { s1: summary }, check: { c1: checks } },
      },
      { stage: { ...stage, final: true } },
    ),
  };
  await publish(h, ...Object.values(events));
  const results = Object.fromEntries(
    await Promise.all(
      Object.entries(events).map(
        async ([agent, event]) => [agent, await resultOf<SubtaskCompleted>(h, event)] as const,
      ),
    ),
  );

  for (const [agent, event] of Object.entries(events)) {
    const result = results[agent];
    assert.ok(result);
    assert.equal(result.type, 'io.mesh.subtask.completed', agent);
    assert.equal(result.causationid, event.id, `${agent} causationid`);
    assert.equal(result.correlationid, event.correlationid);
    assert.equal(result.agentpath, agent, `${agent} is appended to agentpath`);
    assert.equal(result.hopcount, 1);
    assert.equal(result.data.agent, agent);
    assert.equal(result.data.nodeId, 'n1');
    assert.deepEqual(result.data.stage, event.data.stage, `${agent} copies the stage spec`);
    assert.deepEqual(result.data.usage, {
      promptTokens: 0,
      completionTokens: 0,
      costUsd: 0,
      steps: 1,
    });
    assert.ok(result.data.durationMs >= 0);
    assert.equal(result.data.delegate, undefined);
  }

  assert.deepEqual(results.echo?.data.output, events.echo.data.input, 'echo returns its input');

  const r = results.research?.data.output as {
    topic: string;
    findings: string[];
    sources: string[];
  };
  assert.equal(r.topic, 'ocean tides');
  assert.equal(r.findings.length, 3);
  assert.ok(r.findings.every((f) => f.startsWith('Ocean tides (physics):')));
  assert.ok(r.sources.every((s) => s.startsWith('https://example.org/ocean-tides/')));

  const s = results.summarize?.data.output as { summary: string; points: string[] };
  assert.deepEqual(
    s.points,
    research.findings,
    'summarize draws its points from the research stage',
  );
  assert.match(s.summary, /^Ocean tides: 2 key points drawn from 1 input citing 1 source\./);

  const c = results['fact-check']?.data.output as {
    claims: { claim: string; verdict: string; confidence: number }[];
  };
  assert.deepEqual(
    c.claims.map((claim) => claim.claim),
    summary.points,
  );
  for (const claim of c.claims) {
    assert.ok(['supported', 'unverified', 'disputed'].includes(claim.verdict));
    assert.ok(claim.confidence >= 0.5 && claim.confidence <= 1);
  }

  const d = results.draft?.data.output as { title: string; body: string };
  assert.equal(d.title, 'Ocean tides: a brief');
  assert.ok(d.body.startsWith(summary.summary), 'the draft opens with the summary');
  assert.match(d.body, /- Spring tides are larger\./);
  assert.match(d.body, /Fact check: 1 claim reviewed — 1 supported, 0 unverified, 0 disputed\./);
  assert.match(d.body, /Sources:\n- https:\/\/example\.org\/a/);

  // Deterministic: the same input in another task gives the same output.
  const again = assignment('research', events.research.data.input as Record<string, unknown>);
  await publish(h, again);
  assert.deepEqual((await resultOf<SubtaskCompleted>(h, again)).data.output, r);

  // One consumer group per agent, listed by the worker's HTTP API.
  const listed = await h.worker.app.inject({ method: 'GET', url: '/v1/agents' });
  assert.deepEqual(
    listed
      .json<{ agents: { name: string; group: string; kind: string }[] }>()
      .agents.map((a) => [a.name, a.kind, a.group]),
    ['echo', 'research', 'summarize', 'fact-check', 'draft', 'planner'].map((name) => [
      name,
      'builtin',
      `${h.client.config.topicPrefix}worker.${name}`,
    ]),
  );
  assert.equal(h.probe.on(h.client.topics.dlq).length, 0);
});

test('an output that breaks its outputSchema goes to a retry tier as invalid_output; a valid one completes', async (t) => {
  const h = await startWorker(t, { MESH_WORKER_AGENTS: 'echo,research' });
  const bad = assignment(
    'echo',
    { text: 'no summary here' },
    {
      outputSchema: {
        type: 'object',
        required: ['summary'],
        properties: { summary: { type: 'string' } },
      },
    },
  );
  const good = assignment(
    'research',
    { topic: 'volcanoes' },
    {
      outputSchema: {
        $schema: 'https://json-schema.org/draft/2020-12/schema',
        type: 'object',
        required: ['topic', 'findings', 'sources'],
        properties: {
          topic: { type: 'string' },
          findings: { type: 'array', items: { type: 'string' }, minItems: 1 },
          sources: { type: 'array', items: { type: 'string', format: 'uri' } },
        },
        additionalProperties: false,
      },
    },
  );
  await publish(h, bad, good);
  const retried = await retriedOf(h, bad, '1s');
  assert.equal(h.probe.header(retried, 'ce_meshfailure'), 'invalid_output');
  assert.match(
    h.probe.header(retried, 'ce_meshfailuredetail') ?? '',
    /required property 'summary'/,
  );
  assert.equal(h.probe.header(retried, 'ce_meshattempt'), '2');
  assert.equal(h.probe.header(retried, 'ce_meshorigintopic'), h.client.topics.work('echo'));
  assert.equal((await resultOf<SubtaskCompleted>(h, good)).type, 'io.mesh.subtask.completed');
  assert.equal(
    recordsOf(h, h.client.topics.results, bad).length,
    0,
    'no result for the invalid output',
  );
  assert.equal(h.probe.on(h.client.topics.dlq).length, 0);
});

test('a subtask over its timeoutMs fails as timeout; out of attempts it is dead-lettered with subtask.failed', async (t) => {
  const h = await startWorker(t, {
    MESH_WORKER_AGENTS: 'research',
    MESH_AGENT_DELAY: '400ms',
    MESH_MAX_ATTEMPTS: '2',
  });
  const slow = assignment('research', { topic: 'glaciers' }, { timeoutMs: 100, stage });
  const lastAttempt = assignment('research', { topic: 'glaciers' }, { timeoutMs: 100, stage });
  const inTime = assignment('research', { topic: 'glaciers' }, { timeoutMs: 5_000 });
  // The second delivery of a subtask (as dlq-triage re-dispatches it) is its last attempt here.
  await h.client.publish([
    { topic: h.client.topics.work('research'), event: slow },
    { topic: h.client.topics.work('research'), event: { ...lastAttempt, meshattempt: 2 } },
    { topic: h.client.topics.work('research'), event: inTime },
  ]);
  const retried = await retriedOf(h, slow, '1s');
  assert.equal(h.probe.header(retried, 'ce_meshfailure'), 'timeout');
  assert.match(
    h.probe.header(retried, 'ce_meshfailuredetail') ?? '',
    /within the subtask's 100 ms/,
  );

  const dead = await waitFor(() => recordsOf(h, h.client.topics.dlq, lastAttempt)[0]);
  assert.equal(h.probe.header(dead, 'ce_meshfailure'), 'timeout');
  assert.match(h.probe.header(dead, 'ce_meshfailuredetail') ?? '', /after 2 attempts/);
  const failed = await resultOf<SubtaskFailed>(h, lastAttempt);
  assert.equal(failed.type, 'io.mesh.subtask.failed');
  assert.equal(failed.data.failure, 'timeout');
  assert.equal(failed.data.attempts, 2);
  assert.match(failed.data.detail, /^timeout: agent research did not finish/);
  assert.deepEqual(failed.data.stage, stage, 'the stage spec is copied so the stage can be joined');
  assert.equal(failed.agentpath, 'research');

  assert.equal((await resultOf<SubtaskCompleted>(h, inTime)).type, 'io.mesh.subtask.completed');
});

test('a subtask of a task whose final marker is set is skipped, emitting nothing', async (t) => {
  const h = await startWorker(t, { MESH_WORKER_AGENTS: 'echo', MESH_PARTITIONS: '1' });
  const ended = assignment('echo', { text: 'too late' });
  const live = assignment('echo', { text: 'on time' });
  const taskId = ended.data.taskId as string;
  // The marker the orchestrator and the aggregator claim, under this mesh's key prefix.
  const marker = h.client.key('final', taskId);
  await h.client.redis.set(marker, 'io.mesh.task.cancelled', 'PX', 60_000);
  onCleanup(t, () => h.client.redis.del(marker));
  await publish(h, ended, live);
  await resultOf(h, live);
  const group = h.client.groupId('worker.echo');
  // Both offsets are committed only once each event has its outcome: for the ended task, none.
  await waitFor(
    async () =>
      (await h.client.admin.lag(group, [h.client.topics.work('echo')])).every((l) => l.lag === 0),
    { message: 'the worker did not commit past the skipped subtask' },
  );
  const done = await h.client.redis.get(h.client.idempotency.key(group, ended.id));
  assert.match(done ?? '', /^done:/, 'the skipped subtask counts as handled');
  for (const topic of [h.client.topics.results, h.client.topics.dlq, h.client.topics.retry('1s')])
    assert.equal(recordsOf(h, topic, ended).length, 0, `nothing for the ended task on ${topic}`);
});
