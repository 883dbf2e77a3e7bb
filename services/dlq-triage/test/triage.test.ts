/**
 * dlq-triage against the real stack: every dead letter is recorded and remediated by its class,
 * retried events come back to their origin when due, operators replay and discard.
 */
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { newEvent, toKafka, type MeshEvent } from '@mesh/envelope';
import type { MeshRuntime } from '@mesh/runtime';
import { startService, type RunningService } from '@mesh/service';
import {
  meshEnv,
  onCleanup,
  probeTopics,
  testConfig,
  waitFor,
  type TopicProbe,
} from '@mesh/testkit';
import { testRuntime } from '@mesh/testkit/runtime';
import { dlqTriageService } from '../src/index.ts';

interface Harness {
  client: MeshRuntime;
  service: RunningService;
  probe: TopicProbe;
  url: string;
}

async function start(t: TestContext, vars: Record<string, string> = {}): Promise<Harness> {
  const stack = await meshEnv();
  const config = testConfig(stack, 'triage-test', { MESH_RETRY_TIERS: '1s,2s', ...vars });
  const client = testRuntime(t, config, { agents: ['echo'] });
  await client.start();
  const service = await startService(dlqTriageService, {
    ...stack,
    MESH_TOPIC_PREFIX: config.topicPrefix,
    MESH_PARTITIONS: '3',
    MESH_RETRY_TIERS: '1s,2s',
    MESH_HTTP_PORT: '0',
    MESH_HTTP_HOST: '127.0.0.1',
    MESH_LOG_LEVEL: 'warn',
    ...vars,
  });
  onCleanup(t, () => service.stop());
  const probe = await probeTopics(client.kafka, [
    client.topics.work('echo'),
    client.topics.escalations,
    client.topics.retry('1s'),
    client.topics.dlq,
  ]);
  onCleanup(t, () => probe.stop());
  return { client, service, probe, url: `http://127.0.0.1:${service.port}` };
}

function assignment(taskId: string): MeshEvent {
  return newEvent({
    type: 'io.mesh.subtask.assigned',
    source: '/test',
    correlationid: taskId,
    agent: 'echo',
    data: { taskId, stageId: 's', nodeId: 'n', agent: 'echo', input: { q: 1 } },
  });
}

/** Puts an event on mesh.dlq the way the runtime does: original record, failure headers added. */
async function deadLetter(
  h: Harness,
  event: MeshEvent | undefined,
  failure: string,
  detail: string,
  raw?: { value: Buffer; headers: Record<string, string> },
): Promise<void> {
  const message = event === undefined ? undefined : await h.client.codec.encode(event);
  await h.client.producer.send([
    {
      topic: h.client.topics.dlq,
      key: message?.key ?? 'raw',
      value: raw?.value ?? message?.value ?? Buffer.alloc(0),
      headers: {
        ...(raw?.headers ?? message?.headers),
        ce_meshfailure: failure,
        ce_meshfailuredetail: detail,
        ce_meshfailedby: `worker/${h.client.groupId('worker.echo')}`,
        ce_meshorigintopic: h.client.topics.work('echo'),
      },
    },
  ]);
}

async function listDlq(
  h: Harness,
  query = '',
): Promise<
  { id: string; failure: string; status: string; action: string; taskId?: string; reason: string }[]
> {
  const response = await fetch(`${h.url}/v1/dlq${query}`);
  return (
    (await response.json()) as {
      items: {
        id: string;
        failure: string;
        status: string;
        action: string;
        taskId?: string;
        reason: string;
      }[];
    }
  ).items;
}

test('each failure class is recorded and remediated as the contract says', async (t) => {
  const h = await start(t);
  await deadLetter(h, undefined, 'malformed_event', 'not a CloudEvent', {
    value: Buffer.from('garbage'),
    headers: {},
  });
  await deadLetter(h, assignment('task-schema'), 'schema_violation', 'data breaks its contract');
  await deadLetter(
    h,
    assignment('task-hops'),
    'hop_limit_exceeded',
    'hopcount 11 is over the limit of 10',
  );
  await deadLetter(h, assignment('task-ctx'), 'context_overflow', 'prompt too long');
  await deadLetter(h, assignment('task-strict'), 'invalid_output', 'not JSON');
  await deadLetter(h, assignment('task-handler'), 'handler_error', 'it broke');
  const items = await waitFor(async () => {
    const list = await listDlq(h);
    return list.length === 6 ? list : undefined;
  });
  const byTask = (task: string | undefined) => items.find((i) => i.taskId === task);
  assert.equal(items.find((i) => i.failure === 'malformed_event')?.status, 'parked');
  assert.equal(byTask('task-schema')?.status, 'escalated');
  assert.equal(byTask('task-hops')?.status, 'escalated');
  assert.equal(byTask('task-ctx')?.status, 'retrying');
  assert.equal(byTask('task-strict')?.status, 'retrying');
  assert.equal(byTask('task-handler')?.status, 'escalated', 'no fallback model configured');
  assert.match(byTask('task-handler')?.reason ?? '', /no fallback model/);

  // Escalations are events on mesh.escalations and a queryable list.
  const escalations = await waitFor(() => {
    const list = h.probe.on(h.client.topics.escalations);
    return list.length === 3 ? list : undefined;
  });
  assert.deepEqual(escalations.map((r) => h.probe.header(r, 'ce_correlationid')).sort(), [
    'task-handler',
    'task-hops',
    'task-schema',
  ]);
  const listed = (await (await fetch(`${h.url}/v1/escalations`)).json()) as {
    items: { failure: string }[];
  };
  assert.deepEqual(listed.items.map((e) => e.failure).sort(), [
    'handler_error',
    'hop_limit_exceeded',
    'schema_violation',
  ]);

  // Filters.
  assert.equal((await listDlq(h, '?failure=schema_violation')).length, 1);
  assert.equal((await listDlq(h, '?task=task-ctx')).length, 1);
  assert.equal(
    (await listDlq(h, '?agent=echo')).length,
    6,
    'the agent comes from the origin topic when the event cannot be read',
  );

  // The retried ones come back to their origin with the flag their class calls for.
  const back = await waitFor(
    () => {
      const list = h.probe.on(h.client.topics.work('echo'));
      return list.length === 2 ? list : undefined;
    },
    { timeout: 15_000 },
  );
  for (const record of back) {
    const event = await h.client.codec.decode(record);
    const flags = (event.data as { flags?: Record<string, boolean> }).flags;
    if (event.correlationid === 'task-ctx') assert.deepEqual(flags, { truncateContext: true });
    else assert.deepEqual(flags, { strictOutput: true });
    assert.equal(event.meshattempt, 1);
    assert.equal(
      h.probe.header(record, 'ce_meshfailure'),
      undefined,
      'failure headers are removed',
    );
  }
  const metrics = await (await fetch(`${h.url}/metrics`)).text();
  assert.match(metrics, /mesh_triage_dead_letters_total\{failure="context_overflow"\} 1/);
  assert.match(metrics, /mesh_triage_remediations_total\{action="escalate"\} 3/);
  assert.match(metrics, /mesh_triage_parked 4/);
});

test('a retry tier holds each event until its meshnotbefore, then sends it to its origin', async (t) => {
  const h = await start(t);
  const event = assignment('task-due');
  const message = toKafka(event, (await h.client.codec.encode(event)).value);
  const due = Date.now() + 1_500;
  const retired = h.client.topics.work('retired');
  await h.client.producer.send([
    // Ahead of the next one on its partition (same key): an agent whose topic no longer exists.
    {
      topic: h.client.topics.retry('1s'),
      key: message.key,
      value: message.value,
      headers: {
        ...message.headers,
        ce_meshnotbefore: new Date().toISOString(),
        ce_meshfailure: 'timeout',
        ce_meshorigintopic: retired,
      },
    },
    {
      topic: h.client.topics.retry('1s'),
      key: message.key,
      value: message.value,
      headers: {
        ...message.headers,
        ce_meshattempt: '2',
        ce_meshnotbefore: new Date(due).toISOString(),
        ce_meshfailure: 'timeout',
        ce_meshorigintopic: h.client.topics.work('echo'),
      },
    },
    {
      topic: h.client.topics.retry('1s'),
      key: 'lost',
      value: message.value,
      headers: {
        ...message.headers,
        ce_meshnotbefore: new Date().toISOString(),
        ce_meshorigintopic: 'elsewhere',
      },
    },
  ]);
  const back = await waitFor(() => h.probe.on(h.client.topics.work('echo'))[0], {
    timeout: 15_000,
  });
  assert.ok(
    Number(back.timestamp) >= due,
    `re-dispatched ${due - Number(back.timestamp)} ms early`,
  );
  assert.equal(h.probe.header(back, 'ce_meshattempt'), '2', 'the attempt count is kept');
  assert.equal(h.probe.header(back, 'ce_id'), event.id);
  // Found by its key: the retired topic's event is a malformed_event too, on another partition.
  const rejected = await waitFor(
    () => h.probe.on(h.client.topics.dlq).find((r) => r.key?.toString() === 'lost'),
    { timeout: 15_000 },
  );
  assert.equal(h.probe.header(rejected, 'ce_meshfailure'), 'malformed_event');
  assert.match(
    h.probe.header(rejected, 'ce_meshfailuredetail') ?? '',
    /without a valid meshorigintopic/,
  );
  // Written before the echo event behind it was sent back: a dead letter, not a stalled partition.
  const gone = await waitFor(
    () =>
      h.probe
        .on(h.client.topics.dlq)
        .find((r) => h.probe.header(r, 'ce_meshfailuredetail')?.includes('does not exist')),
    { timeout: 15_000 },
  );
  assert.equal(
    h.probe.header(gone, 'ce_meshfailuredetail'),
    `origin topic ${retired} does not exist`,
  );
  assert.equal(h.probe.header(gone, 'ce_meshorigintopic'), retired, 'replayable once it exists');
});

test('remediations are bounded: a timeout retried twice is escalated the third time', async (t) => {
  const h = await start(t, { MESH_TRIAGE_MAX_REMEDIATIONS: '2' });
  const event = assignment('task-bounded');
  for (let i = 1; i <= 3; i += 1) {
    await deadLetter(h, event, 'timeout', `took too long (${i})`);
    await waitFor(async () => (await listDlq(h)).length === i);
  }
  const statuses = (await listDlq(h)).map((i) => i.status);
  assert.deepEqual(statuses, ['escalated', 'retrying', 'retrying'], 'newest first');
});

test('an exhausted handler_error is retried on the fallback model, then escalated', async (t) => {
  const h = await start(t, { MESH_FALLBACK_MODEL: 'small-model' });
  await deadLetter(h, assignment('task-fallback'), 'handler_error', 'model crashed');
  const back = await waitFor(() => h.probe.on(h.client.topics.work('echo'))[0], {
    timeout: 15_000,
  });
  const event = await h.client.codec.decode(back);
  assert.equal((event.data as { model?: string }).model, 'small-model');
  await deadLetter(h, event, 'handler_error', 'crashed on the fallback too');
  await waitFor(async () =>
    (await listDlq(h)).some((i) => i.status === 'escalated' && /fallback model too/.test(i.reason)),
  );
});

test('replay re-runs a dead letter on its origin and discard needs a reason; writes need the token', async (t) => {
  const h = await start(t, { MESH_API_TOKEN: 'sekret' });
  const event = assignment('task-replay');
  await deadLetter(h, event, 'schema_violation', 'broken producer');
  const [item] = await waitFor(async () => {
    const list = await listDlq(h);
    return list.length === 1 ? list : undefined;
  });
  assert.ok(item);
  const doneKey = h.client.idempotency.key(h.client.groupId('worker.echo'), event.id);
  await h.client.redis.set(doneKey, 'done:dlq');

  const post = (path: string, body: unknown, token?: string) =>
    fetch(`${h.url}${path}`, {
      method: 'POST',
      headers: {
        'content-type': 'application/json',
        ...(token === undefined ? {} : { authorization: `Bearer ${token}` }),
      },
      body: JSON.stringify(body),
    });
  assert.equal((await post(`/v1/dlq/${item.id}/replay`, {})).status, 401);
  assert.equal((await post(`/v1/dlq/${item.id}/replay`, {}, 'wrong')).status, 401);
  const replayed = await post(`/v1/dlq/${item.id}/replay`, {}, 'sekret');
  assert.equal(replayed.status, 202);
  const back = await waitFor(() => h.probe.on(h.client.topics.work('echo'))[0]);
  assert.equal(h.probe.header(back, 'ce_id'), event.id);
  assert.equal(h.probe.header(back, 'ce_meshfailure'), undefined);
  assert.equal(
    await h.client.redis.get(doneKey),
    null,
    "the failed group's done marker is cleared so the event runs again",
  );
  assert.equal((await listDlq(h))[0]?.status, 'replayed');

  assert.equal(
    (await post(`/v1/dlq/${item.id}/discard`, {}, 'sekret')).status,
    400,
    'a reason is required',
  );
  const discarded = await post(
    `/v1/dlq/${item.id}/discard`,
    { reason: 'fixed upstream' },
    'sekret',
  );
  assert.equal(discarded.status, 200);
  const detail = (await (await fetch(`${h.url}/v1/dlq/${item.id}`)).json()) as {
    status: string;
    history: { note: string }[];
  };
  assert.equal(detail.status, 'discarded');
  assert.ok(detail.history.some((h2) => h2.note === 'fixed upstream'));
  assert.equal((await post(`/v1/dlq/${item.id}/replay`, {}, 'sekret')).status, 409);
  assert.equal((await post('/v1/dlq/0123456789abcdef0123/replay', {}, 'sekret')).status, 404);
});

test('replay by filter: a dry run lists the waiting letters, a replay sends back only those, oldest first', async (t) => {
  const h = await start(t, { MESH_API_TOKEN: 'sekret' });
  const violations = ['bulk-1', 'bulk-2', 'bulk-3'].map(assignment);
  for (const event of violations) {
    await deadLetter(h, event, 'schema_violation', 'old producer');
    // Letters are ordered by the time of their record on mesh.dlq: a millisecond apart at least.
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
  const malformed = assignment('bulk-4');
  await deadLetter(h, malformed, 'malformed_event', 'bad header');
  // A letter whose origin is no topic a letter may go back to: its replay fails, the rest go.
  const stray = await h.client.codec.encode(assignment('bulk-5'));
  await h.client.producer.send([
    {
      topic: h.client.topics.dlq,
      key: stray.key,
      value: stray.value,
      headers: {
        ...stray.headers,
        ce_meshfailure: 'cycle_detected',
        ce_meshfailuredetail: 'a loop',
        ce_meshorigintopic: h.client.topics.outputs,
      },
    },
  ]);
  await waitFor(async () => {
    const list = await listDlq(h);
    return list.length === 5 && list.every((l) => ['escalated', 'parked'].includes(l.status))
      ? list
      : undefined;
  });
  const post = async (body: unknown, token: string | null = 'sekret') => {
    const response = await fetch(`${h.url}/v1/dlq/replay`, {
      method: 'POST',
      headers: {
        'content-type': 'application/json',
        ...(token === null ? {} : { authorization: `Bearer ${token}` }),
      },
      body: JSON.stringify(body),
    });
    return {
      status: response.status,
      body: (await response.json()) as {
        matched: number;
        replayed?: number;
        failed?: number;
        message?: string;
        items: { id: string; status: string; taskId?: string; error?: string }[];
      },
    };
  };
  assert.equal((await post({ failure: 'schema_violation' }, null)).status, 401);
  const unnamed = await post({});
  assert.equal(unnamed.status, 400, 'replaying everything takes all: true');
  assert.match(unnamed.body.message ?? '', /name the dead letters to replay/);

  const dry = await post({ failure: 'schema_violation', dryRun: true });
  assert.equal(dry.status, 200);
  assert.equal(dry.body.matched, 3);
  assert.deepEqual(
    dry.body.items.map((i) => i.taskId),
    ['bulk-1', 'bulk-2', 'bulk-3'],
    'oldest first',
  );
  await new Promise((resolve) => setTimeout(resolve, 500));
  assert.equal(h.probe.on(h.client.topics.work('echo')).length, 0, 'a dry run replays nothing');

  const replay = await post({ failure: 'schema_violation' });
  assert.equal(replay.status, 202);
  assert.deepEqual(
    { matched: replay.body.matched, replayed: replay.body.replayed, failed: replay.body.failed },
    { matched: 3, replayed: 3, failed: 0 },
  );
  assert.deepEqual(
    replay.body.items.map((i) => i.id),
    dry.body.items.map((i) => i.id),
  );
  const back = await waitFor(() => {
    const records = h.probe.on(h.client.topics.work('echo'));
    return records.length >= 3 ? records : undefined;
  });
  assert.deepEqual(
    back.map((r) => h.probe.header(r, 'ce_id')).sort(),
    violations.map((e) => e.id).sort(),
  );
  const statuses = new Map((await listDlq(h)).map((l) => [l.taskId, l.status]));
  assert.deepEqual(Object.fromEntries(statuses), {
    'bulk-1': 'replayed',
    'bulk-2': 'replayed',
    'bulk-3': 'replayed',
    'bulk-4': 'parked',
    'bulk-5': 'escalated',
  });
  assert.equal((await post({ failure: 'schema_violation' })).body.matched, 0, 'nothing waits');

  const rest = await post({ all: true });
  assert.equal(rest.status, 202);
  assert.deepEqual(
    { matched: rest.body.matched, replayed: rest.body.replayed, failed: rest.body.failed },
    { matched: 2, replayed: 1, failed: 1 },
  );
  const byTask = new Map((await listDlq(h)).map((l) => [l.taskId, l] as const));
  const failedItem = rest.body.items.find((i) => i.id === byTask.get('bulk-5')?.id);
  assert.equal(failedItem?.status, 'failed');
  assert.match(failedItem?.error ?? '', /is not a topic a dead letter can be replayed to/);
  assert.equal(byTask.get('bulk-5')?.status, 'escalated', 'a letter that did not go still waits');
  await waitFor(() => h.probe.on(h.client.topics.work('echo')).length === 4 || undefined);
});
