/**
 * End to end: the four services as separate processes against the real Kafka, registry and Redis.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { newEvent } from '@mesh/envelope';
import { topicSpecs } from '@mesh/runtime';
import { freePort, onCleanup, pythonWith, waitFor } from '@mesh/testkit';
import {
  getJson,
  kcat,
  metricTotal,
  outcomesOf,
  postJson,
  root,
  startMesh,
} from '../support/mesh.ts';

const templates = fileURLToPath(new URL('./templates/', import.meta.url));

test('a DAG task completes with the structured output of its stages and a full causal chain', async (t) => {
  const mesh = await startMesh(t, { vars: { MESH_TEMPLATES_DIR: templates } });
  const posted = await postJson(`${mesh.url('orchestrator')}/v1/tasks`, {
    template: 'research',
    input: { topic: 'tidal energy' },
  });
  assert.equal(posted.status, 202);
  const taskId = String(posted.body.taskId);
  const outcome = await waitFor(() => outcomesOf(mesh, taskId)[0], {
    timeout: 60_000,
    message: () => `no outcome\n${mesh.tails()}`,
  });
  assert.equal(outcome.type, 'io.mesh.task.completed', JSON.stringify(outcome.data));
  const output = outcome.data.output as Record<string, Record<string, unknown>>;
  assert.ok(output.draft !== undefined, 'the final stage is the draft');
  assert.equal(typeof output.draft.title, 'string');
  assert.match(
    JSON.stringify(output.draft),
    /tidal energy/i,
    'the draft is built from the research on the topic',
  );

  const state = await waitFor(async () => {
    const { body } = await getJson(`${mesh.url('orchestrator')}/v1/tasks/${taskId}`);
    return body.status === 'completed' ? body : undefined;
  });
  const stages = state.stages as Record<
    string,
    { status: string; results: Record<string, unknown> }
  >;
  assert.deepEqual(Object.keys(stages).sort(), ['analyze', 'draft', 'research']);
  assert.deepEqual(Object.keys(stages.analyze?.results ?? {}).sort(), ['fact-check', 'summarize']);
  assert.equal((state.usage as { steps: number }).steps, 4);

  const chain = await waitFor(async () => {
    const { body } = await getJson(`${mesh.url('orchestrator')}/v1/tasks/${taskId}/events`);
    const events = body.events as { id: string; type: string; causationid?: string }[];
    return events.some((e) => e.type === 'io.mesh.task.completed') ? events : undefined;
  });
  const count = (type: string): number => chain.filter((e) => e.type === type).length;
  assert.equal(count('io.mesh.task.requested'), 1);
  assert.equal(count('io.mesh.subtask.assigned'), 4);
  assert.equal(count('io.mesh.subtask.completed'), 4);
  assert.equal(count('io.mesh.stage.completed'), 3);
  assert.equal(count('io.mesh.task.completed'), 1);
  const ids = new Set<string>();
  for (const event of chain) {
    if (event.causationid !== undefined)
      assert.ok(ids.has(event.causationid), `${event.type} comes after its cause`);
    ids.add(event.id);
  }
});

test('an outside client: kcat publishes a structured CloudEvent and the task completes', async (t) => {
  const mesh = await startMesh(t, { services: ['orchestrator', 'worker', 'aggregator'] });
  const client = kcat(mesh, String(mesh.env.MESH_KAFKA_BROKERS));
  const taskId = client.publishTask({ text: 'hello from kcat' });
  const outcome = await waitFor(() => outcomesOf(mesh, taskId)[0], {
    timeout: 60_000,
    message: () => `no outcome\n${mesh.tails()}`,
  });
  assert.equal(outcome.type, 'io.mesh.task.completed');
  assert.deepEqual((outcome.data.output as { echo: unknown }).echo, {
    task: { text: 'hello from kcat' },
    previous: {},
  });
  // And kcat reads the outcome back: an outside consumer sees binary-mode CloudEvents headers.
  assert.match(
    client.readOutputs(),
    new RegExp(`${taskId} .*ce_type=io\\.mesh\\.task\\.completed`),
  );
});

test('cancel mid-flight: the task is cancelled and its pending subtasks do not run', async (t) => {
  const mesh = await startMesh(t, {
    vars: { MESH_TEMPLATES_DIR: templates, MESH_PARTITIONS: '1' },
    serviceVars: { worker: { MESH_AGENT_DELAY: '1500ms', MESH_PARTITION_CONCURRENCY: '1' } },
  });
  const { body } = await postJson(`${mesh.url('orchestrator')}/v1/tasks`, {
    template: 'slow-fan',
    input: {},
  });
  const taskId = String(body.taskId);
  const completedSubtasks = (): number =>
    mesh.probe
      .on(mesh.client.topics.results)
      .filter(
        (r) =>
          mesh.probe.header(r, 'ce_correlationid') === taskId &&
          mesh.probe.header(r, 'ce_type') === 'io.mesh.subtask.completed',
      ).length;
  await waitFor(
    async () =>
      (await getJson(`${mesh.url('orchestrator')}/v1/tasks/${taskId}`)).body.status === 'running',
  );
  const cancel = await postJson(`${mesh.url('orchestrator')}/v1/tasks/${taskId}/cancel`, {
    reason: 'changed my mind',
  });
  assert.equal(cancel.status, 202);
  const outcome = await waitFor(() => outcomesOf(mesh, taskId)[0], { timeout: 30_000 });
  assert.equal(outcome.type, 'io.mesh.task.cancelled');
  // Give the worker time to reach the queued subtasks: they are skipped, not run.
  await new Promise((resolve) => setTimeout(resolve, 5_000));
  assert.ok(
    completedSubtasks() < 3,
    `only subtasks already running when the cancel came may finish (${completedSubtasks()})`,
  );
  assert.equal(outcomesOf(mesh, taskId).length, 1, 'one final state');
  const state = (await getJson(`${mesh.url('orchestrator')}/v1/tasks/${taskId}`)).body;
  assert.equal(state.status, 'cancelled');
  assert.equal(
    (state.stages as Record<string, { status: string }>).after?.status,
    'pending',
    'the next stage was never dispatched',
  );
});

test('an approval gate waits, proceeds on approve and fails on deny', async (t) => {
  const mesh = await startMesh(t, {
    vars: { MESH_TEMPLATES_DIR: templates, MESH_API_TOKEN: 'test-token' },
  });
  const orchestrator = mesh.url('orchestrator');
  const unauthorised = await postJson(`${orchestrator}/v1/tasks`, {
    template: 'reviewed',
    input: { topic: 'x' },
  });
  assert.equal(unauthorised.status, 401, 'write endpoints need the bearer token');
  const start = async (): Promise<string> =>
    String(
      (
        await postJson(
          `${orchestrator}/v1/tasks`,
          { template: 'reviewed', input: { topic: 'solar sails' } },
          'test-token',
        )
      ).body.taskId,
    );
  const approved = await start();
  const denied = await start();
  for (const id of [approved, denied]) {
    await waitFor(
      async () =>
        (await getJson(`${orchestrator}/v1/tasks/${id}`)).body.status === 'awaiting_approval',
      { timeout: 30_000 },
    );
  }
  // The state is saved before the request is published: give the probe a moment to see both.
  await waitFor(
    () =>
      mesh.probe
        .on(mesh.client.topics.escalations)
        .filter((r) => mesh.probe.header(r, 'ce_type') === 'io.mesh.approval.requested').length >=
      2,
    { timeout: 10_000, message: 'each gate asks for approval on mesh.escalations' },
  );
  const requests = mesh.probe
    .on(mesh.client.topics.escalations)
    .filter((r) => mesh.probe.header(r, 'ce_type') === 'io.mesh.approval.requested');
  assert.equal(requests.length, 2, 'exactly one approval request per gate');
  assert.equal(outcomesOf(mesh, approved).length, 0, 'nothing proceeds without a decision');

  assert.equal(
    (await postJson(`${orchestrator}/v1/tasks/${approved}/approve`, { by: 'ada' }, 'test-token'))
      .status,
    202,
  );
  assert.equal(
    (
      await postJson(
        `${orchestrator}/v1/tasks/${denied}/deny`,
        { by: 'ada', comment: 'not now' },
        'test-token',
      )
    ).status,
    202,
  );
  const yes = await waitFor(() => outcomesOf(mesh, approved)[0], { timeout: 30_000 });
  const no = await waitFor(() => outcomesOf(mesh, denied)[0], { timeout: 30_000 });
  assert.equal(yes.type, 'io.mesh.task.completed');
  assert.ok((yes.data.output as Record<string, unknown>).draft !== undefined);
  assert.equal(no.type, 'io.mesh.task.failed');
  assert.equal(no.data.reason, 'approval_denied');
  assert.match(String(no.data.detail), /not now/);
  const conflict = await postJson(`${orchestrator}/v1/tasks/${approved}/approve`, {}, 'test-token');
  assert.equal(conflict.status, 409, 'a task not at a gate cannot be approved');
});

test('a task over its step budget fails with budget_exceeded', async (t) => {
  const mesh = await startMesh(t, { vars: { MESH_TEMPLATES_DIR: templates } });
  const { body } = await postJson(`${mesh.url('orchestrator')}/v1/tasks`, {
    template: 'research',
    input: { topic: 'x' },
    budget: { maxSteps: 2 },
  });
  const outcome = await waitFor(() => outcomesOf(mesh, String(body.taskId))[0], {
    timeout: 60_000,
    message: () => mesh.tails(),
  });
  assert.equal(outcome.type, 'io.mesh.task.failed');
  assert.equal(outcome.data.reason, 'budget_exceeded');
  assert.match(String(outcome.data.detail), /step budget of 2/);
});

test('a planner agent plans the task at run time and the mesh runs its plan', async (t) => {
  const mesh = await startMesh(t, {
    agents: ['planner', 'research', 'summarize', 'fact-check', 'draft'],
    vars: { MESH_TEMPLATES_DIR: templates },
  });
  const { body } = await postJson(`${mesh.url('orchestrator')}/v1/tasks`, {
    template: 'planned',
    input: { topic: 'coral reefs', angles: ['biology', 'economics', 'policy'] },
  });
  const taskId = String(body.taskId);
  const outcome = await waitFor(() => outcomesOf(mesh, taskId)[0], {
    timeout: 60_000,
    message: () => `no outcome\n${mesh.tails()}`,
  });
  assert.equal(outcome.type, 'io.mesh.task.completed', JSON.stringify(outcome.data));
  assert.match(JSON.stringify(outcome.data.output), /coral reefs/i);
  const state = await waitFor(async () => {
    const { body: task } = await getJson(`${mesh.url('orchestrator')}/v1/tasks/${taskId}`);
    return task.status === 'completed' ? task : undefined;
  });
  // The planner was told which agents it may choose from: those with a work topic.
  const plan = state.plan as { id: string; nodes: { input?: { agents?: string[] } }[] }[];
  assert.deepEqual(plan[0]?.nodes[0]?.input?.agents, [
    'draft',
    'fact-check',
    'planner',
    'research',
    'summarize',
  ]);
  const stages = state.stages as Record<string, { status: string; results?: object }>;
  assert.deepEqual(
    Object.keys(stages).sort(),
    ['gather', 'plan', 'review', 'write'],
    'the stages are the plan stage and the ones the planner chose',
  );
  assert.deepEqual(
    Object.keys(stages.gather?.results ?? {}).sort(),
    ['research-1', 'research-2', 'research-3'],
    'one research node per angle the task asked for',
  );
  for (const [id, stage] of Object.entries(stages)) assert.equal(stage.status, 'completed', id);
});

test('an invalid plan fails the task with invalid_plan before anything of it is dispatched', async (t) => {
  const mesh = await startMesh(t, {
    agents: ['planner', 'echo'],
    vars: { MESH_TEMPLATES_DIR: templates },
  });
  const plans: [unknown, RegExp][] = [
    // A stage depending on a later one: a cycle in waiting.
    [
      {
        stages: [
          { id: 'a', dependsOn: ['b'], nodes: [{ id: 'x', agent: 'echo' }] },
          { id: 'b', nodes: [{ id: 'y', agent: 'echo' }] },
        ],
      },
      /stage a depends on b, which is not an earlier stage/,
    ],
    // Not the template schema at all.
    [{ stages: [{ id: 'Bad Id!', nodes: [] }] }, /plan is invalid: \/stages\/0/],
    // Two sinks: the plan has no single final stage.
    [
      {
        stages: [
          { id: 'a', dependsOn: [], nodes: [{ id: 'x', agent: 'echo' }] },
          { id: 'b', dependsOn: [], nodes: [{ id: 'y', agent: 'echo' }] },
        ],
      },
      /must end in exactly one stage/,
    ],
  ];
  const ids: string[] = [];
  for (const [plan] of plans) {
    const { body } = await postJson(`${mesh.url('orchestrator')}/v1/tasks`, {
      template: 'planned',
      input: { plan },
    });
    ids.push(String(body.taskId));
  }
  for (const [i, [, detail]] of plans.entries()) {
    const taskId = ids[i] ?? '';
    const outcome = await waitFor(() => outcomesOf(mesh, taskId)[0], {
      timeout: 60_000,
      message: () => `no outcome for plan ${i}\n${mesh.tails()}`,
    });
    assert.equal(outcome.type, 'io.mesh.task.failed', JSON.stringify(outcome.data));
    assert.equal(outcome.data.reason, 'invalid_plan');
    assert.match(String(outcome.data.detail), detail);
    const chain = await waitFor(async () => {
      const { body } = await getJson(`${mesh.url('orchestrator')}/v1/tasks/${taskId}/events`);
      const events = body.events as { type: string; data?: { agent?: string } }[];
      return events.some((e) => e.type === 'io.mesh.task.failed') ? events : undefined;
    });
    assert.equal(
      chain.filter((e) => e.type === 'io.mesh.subtask.assigned').length,
      1,
      'only the planner was ever dispatched',
    );
  }
  assert.equal(mesh.probe.on(mesh.client.topics.dlq).length, 0, 'a bad plan is not a dead letter');
});

test('an agent nobody runs, named by a plan or a delegation, fails its task clearly and stalls nothing', async (t) => {
  const mesh = await startMesh(t, {
    agents: ['planner', 'echo', 'ping'],
    vars: { MESH_TEMPLATES_DIR: templates, MESH_RELAY_AGENTS: 'ping' },
  });
  const post = async (plan: unknown): Promise<string> => {
    const { body } = await postJson(`${mesh.url('orchestrator')}/v1/tasks`, {
      template: 'planned',
      input: { plan },
    });
    return String(body.taskId);
  };
  // No work topic, no worker: an assignment to it could never be written nor taken.
  const planned = await post({
    stages: [
      { id: 'first', nodes: [{ id: 'x', agent: 'echo' }] },
      { id: 'then', dependsOn: ['first'], nodes: [{ id: 'y', agent: 'nosuch' }] },
    ],
  });
  // ping hands its work on to the agent its input names.
  const delegated = await post({
    stages: [{ id: 'hand', nodes: [{ id: 'h', agent: 'ping', input: { next: 'nosuch' } }] }],
  });
  const fine = await post({ stages: [{ id: 'only', nodes: [{ id: 'z', agent: 'echo' }] }] });
  const outcome = (taskId: string) =>
    waitFor(() => outcomesOf(mesh, taskId)[0], {
      timeout: 60_000,
      message: () => `no outcome for ${taskId}\n${mesh.tails()}`,
    });

  const invalid = await outcome(planned);
  assert.equal(invalid.type, 'io.mesh.task.failed', JSON.stringify(invalid.data));
  assert.equal(invalid.data.reason, 'invalid_plan');
  assert.match(
    String(invalid.data.detail),
    /stage then names agent nosuch, which has no work topic \S+work\.nosuch/,
  );
  const { body: chain } = await getJson(`${mesh.url('orchestrator')}/v1/tasks/${planned}/events`);
  assert.deepEqual(
    (chain.events as { type: string; agent?: string }[])
      .filter((e) => e.type === 'io.mesh.subtask.assigned')
      .map((e) => e.agent),
    ['planner'],
    'nothing of the plan was dispatched, not even its first stage',
  );

  const failed = await outcome(delegated);
  assert.equal(failed.type, 'io.mesh.task.failed', JSON.stringify(failed.data));
  assert.equal(failed.data.reason, 'stage_failed');
  assert.match(
    String(failed.data.detail),
    /ping delegated to agent nosuch, which has no work topic/,
  );

  const completed = await outcome(fine);
  assert.equal(completed.type, 'io.mesh.task.completed', JSON.stringify(completed.data));
  assert.equal(
    mesh.probe.on(mesh.client.topics.dlq).length,
    0,
    'a plan naming an absent agent is a failed task, not a dead letter',
  );
});

test('an agent of your own (examples/custom-agent.ts) runs in a worker of its own, with its guarantees', async (t) => {
  const mesh = await startMesh(t, {
    agents: ['planner'],
    vars: { MESH_TEMPLATES_DIR: templates },
  });
  onCleanup(t, () =>
    mesh.client.admin.deleteTopics([mesh.client.topics.work('word-stats')]).catch(() => undefined),
  );
  // The example as a user runs it; its work topic is created when it starts.
  const own = await mesh.start(
    'word-stats-worker',
    { MESH_WORKER_AGENTS: 'word-stats' },
    'examples/custom-agent.ts',
  );
  const { body: hosted } = await getJson(`${own.url}/v1/agents`);
  assert.deepEqual(
    (hosted.agents as { name: string; kind: string; topic: string }[]).map((a) => [
      a.name,
      a.kind,
      a.topic,
    ]),
    [['word-stats', 'custom', mesh.client.topics.work('word-stats')]],
  );

  const request = JSON.parse(
    await readFile(new URL('../../examples/custom-agent.json', import.meta.url), 'utf8'),
  ) as { template: string; input: { text: string; plan: unknown } };
  const { body } = await postJson(`${mesh.url('orchestrator')}/v1/tasks`, request);
  const done = await waitFor(() => outcomesOf(mesh, String(body.taskId))[0], {
    timeout: 60_000,
    message: () => `no outcome\n${mesh.tails()}`,
  });
  assert.equal(done.type, 'io.mesh.task.completed', JSON.stringify(done.data));
  const words = request.input.text.toLowerCase().match(/[\p{L}\p{N}']+/gu) ?? [];
  const stats = (done.data.output as { stats: { words: number; distinct: number; top: object[] } })
    .stats;
  assert.equal(stats.words, words.length);
  assert.equal(stats.distinct, new Set(words).size);
  assert.deepEqual(stats.top[0], { word: 'the', count: words.filter((w) => w === 'the').length });

  // Its terminal error fails the node, the task says why, and the event is dead-lettered with it.
  const { body: bad } = await postJson(`${mesh.url('orchestrator')}/v1/tasks`, {
    ...request,
    input: { ...request.input, text: ' ' },
  });
  const failed = await waitFor(() => outcomesOf(mesh, String(bad.taskId))[0], {
    timeout: 60_000,
    message: () => `no outcome\n${mesh.tails()}`,
  });
  assert.equal(failed.type, 'io.mesh.task.failed', JSON.stringify(failed.data));
  assert.equal(failed.data.reason, 'stage_failed');
  assert.match(String(failed.data.detail), /word-stats needs a non-empty input\.text/);
  const letter = await waitFor(() =>
    mesh.probe
      .on(mesh.client.topics.dlq)
      .find((r) => mesh.probe.header(r, 'ce_correlationid') === String(bad.taskId)),
  );
  assert.equal(mesh.probe.header(letter, 'ce_meshfailure'), 'handler_error');
  assert.match(
    mesh.probe.header(letter, 'ce_meshfailedby') ?? '',
    /^worker\/\S+worker\.word-stats$/,
  );

  await mesh.kill('word-stats-worker');
  assert.equal(own.child.exitCode, 0, 'SIGTERM drains and exits cleanly');
});

test('an agent in Python (examples/python-agent) joins the mesh through Kafka and the registry alone', async (t) => {
  const python = pythonWith(['confluent-kafka==2.16.1']);
  const mesh = await startMesh(t, {
    // The client runtime creates py-title's work topic; the built-in worker only plans.
    agents: ['planner', 'py-title'],
    vars: { MESH_TEMPLATES_DIR: templates },
    serviceVars: { worker: { MESH_WORKER_AGENTS: 'planner' } },
  });
  const output: string[] = [];
  const agent = spawn(python, ['examples/python-agent/agent.py'], {
    cwd: root,
    env: mesh.env,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const exited = new Promise<number | null>((resolve) => agent.once('exit', resolve));
  for (const stream of [agent.stdout, agent.stderr])
    stream.on('data', (chunk: Buffer) => output.push(...chunk.toString().split('\n')));
  onCleanup(t, async () => {
    if (agent.exitCode === null && agent.signalCode === null) agent.kill('SIGKILL');
    await exited;
  });
  await waitFor(() => output.some((line) => line.includes('ready:')), {
    timeout: 60_000,
    message: () => `the Python agent did not join its group: ${output.join(' | ')}`,
  });

  // Something it cannot read, ahead of the task: a dead letter with the reason, not a stall.
  await mesh.client.producer.send([
    {
      topic: mesh.client.topics.work('py-title'),
      key: 'junk',
      value: Buffer.from('{"not":"wire format"}'),
      headers: { ce_type: 'io.mesh.subtask.assigned', ce_id: 'junk-1' },
    },
  ]);
  const request = JSON.parse(
    await readFile(new URL('../../examples/python-agent/task.json', import.meta.url), 'utf8'),
  ) as { input: { text: string } };
  const { body } = await postJson(`${mesh.url('orchestrator')}/v1/tasks`, request);
  const taskId = String(body.taskId);
  const done = await waitFor(() => outcomesOf(mesh, taskId)[0], {
    timeout: 60_000,
    message: () => `no outcome\n${output.join('\n')}\n${mesh.tails()}`,
  });
  assert.equal(done.type, 'io.mesh.task.completed', JSON.stringify(done.data));
  const { text } = request.input;
  assert.deepEqual((done.data.output as { title: object }).title, {
    title: text.replace(/\b\w/g, (c) => c.toUpperCase()),
    words: text.split(/\s+/).length,
  });
  // Its result carries the lineage on: one more hop, the agent on the path, the same trace.
  const result = mesh.probe
    .on(mesh.client.topics.results)
    .find(
      (r) =>
        mesh.probe.header(r, 'ce_correlationid') === taskId &&
        mesh.probe.header(r, 'ce_source') === '/agents/py-title',
    );
  assert.ok(result, 'the Python agent published the result');
  const assignment = (await getJson(`${mesh.url('orchestrator')}/v1/tasks/${taskId}/events`)).body
    .events as { id: string; type: string; agent?: string; hopcount?: number }[];
  const cause = assignment.find(
    (e) => e.type === 'io.mesh.subtask.assigned' && e.agent === 'py-title',
  );
  assert.equal(mesh.probe.header(result, 'ce_causationid'), cause?.id);
  assert.equal(mesh.probe.header(result, 'ce_hopcount'), String((cause?.hopcount ?? 0) + 1));
  assert.equal(mesh.probe.header(result, 'ce_agentpath'), 'py-title');
  const letters = await waitFor(() => {
    const on = mesh.probe.on(mesh.client.topics.dlq);
    return on.length > 0 ? on : undefined;
  });
  assert.deepEqual(
    letters.map((r) => [
      mesh.probe.header(r, 'ce_id'),
      mesh.probe.header(r, 'ce_meshfailure'),
      mesh.probe.header(r, 'ce_meshorigintopic'),
    ]),
    [['junk-1', 'malformed_event', mesh.client.topics.work('py-title')]],
  );
  const [letter] = letters;
  assert.ok(letter);
  assert.match(mesh.probe.header(letter, 'ce_meshfailuredetail') ?? '', /wire format/);

  agent.kill('SIGTERM');
  assert.equal(await exited, 0, 'SIGTERM closes the consumer and exits 0');
});

test('results too large for one event fail their task with the reason, and nothing waits or is dead-lettered', async (t) => {
  const mesh = await startMesh(t, { vars: { MESH_TEMPLATES_DIR: templates } });
  // `echo` returns its input, which carries the task input: each of the four outputs is about as
  // large as the request. 4 × 250 kB of results is more than one event can carry (983 kB): the
  // aggregator fails the stage. 4 × 200 kB fits, but the next stage's input (the task input and
  // those results, 1 MB) does not: the orchestrator fails the task before dispatching it.
  const tasks: Record<string, string> = {};
  for (const [name, size] of [
    ['joined', 250_000],
    ['passed-on', 200_000],
  ] as const) {
    const { status, body } = await postJson(`${mesh.url('orchestrator')}/v1/tasks`, {
      template: 'wide-fan',
      input: { text: 'x'.repeat(size) },
    });
    assert.equal(status, 202, JSON.stringify(body));
    tasks[name] = String(body.taskId);
  }
  const ended = async (taskId: string) => {
    const outcome = await waitFor(() => outcomesOf(mesh, taskId)[0], {
      timeout: 60_000,
      message: () => `task ${taskId} never ended\n${mesh.tails()}`,
    });
    const state = (await getJson(`${mesh.url('orchestrator')}/v1/tasks/${taskId}`)).body;
    return { outcome, state, stages: state.stages as Record<string, { status: string }> };
  };

  const joined = await ended(tasks.joined ?? '');
  assert.equal(joined.outcome.type, 'io.mesh.task.failed');
  assert.equal(joined.outcome.data.reason, 'stage_failed');
  const detail = String(joined.outcome.data.detail);
  for (const node of ['a', 'b', 'c', 'd'])
    assert.match(detail, new RegExp(`${node}: invalid_output \\(output of 250,0\\d\\d bytes`));
  assert.match(detail, /more than the 982,964 bytes one event can carry/);
  assert.equal(joined.stages.fan?.status, 'failed');
  assert.equal(joined.stages.after?.status, 'pending', 'nothing after the failed stage ran');

  const passed = await ended(tasks['passed-on'] ?? '');
  assert.equal(passed.outcome.type, 'io.mesh.task.failed');
  assert.equal(passed.outcome.data.reason, 'invalid_output');
  assert.match(
    String(passed.outcome.data.detail),
    /^stage after cannot start: its io\.mesh\.subtask\.assigned would carry 1,000,\d{3} bytes of data, more than the 982,964 bytes .* the task input \(200,0\d\d bytes\) and the results of stage fan \(800,\d{3} bytes\)$/,
  );
  assert.equal(passed.stages.fan?.status, 'completed');
  assert.equal(passed.stages.after?.status, 'failed');
  const results = mesh.probe
    .on(mesh.client.topics.results)
    .filter((r) => mesh.probe.header(r, 'ce_correlationid') === tasks['passed-on'])
    .map(
      (r) => JSON.parse((r.value ?? Buffer.alloc(0)).subarray(5).toString()) as { stageId: string },
    );
  assert.deepEqual(
    results.map((r) => r.stageId),
    ['fan', 'fan', 'fan', 'fan'],
    'the stage that cannot start never ran',
  );

  // One outcome each, and nothing anywhere was refused by Kafka or dead-lettered.
  await new Promise((resolve) => setTimeout(resolve, 2_000));
  for (const id of Object.values(tasks)) assert.equal(outcomesOf(mesh, id).length, 1);
  assert.equal(mesh.probe.on(mesh.client.topics.dlq).length, 0, mesh.tails());
});

test('a task past its deadline fails with deadline_exceeded, and its late result changes nothing', async (t) => {
  const mesh = await startMesh(t, {
    vars: { MESH_TEMPLATES_DIR: templates },
    serviceVars: { worker: { MESH_AGENT_DELAY: '4s' } },
  });
  const { body } = await postJson(`${mesh.url('orchestrator')}/v1/tasks`, {
    template: 'default',
    input: { text: 'slow' },
    timeoutMs: 1_500,
  });
  const taskId = String(body.taskId);
  const started = Date.now();
  const outcome = await waitFor(() => outcomesOf(mesh, taskId)[0], {
    timeout: 30_000,
    message: () => `no outcome\n${mesh.tails()}`,
  });
  assert.equal(outcome.type, 'io.mesh.task.failed', JSON.stringify(outcome.data));
  assert.equal(outcome.data.reason, 'deadline_exceeded');
  assert.ok(Date.now() - started < 4_000, 'failed at its deadline, not when the slow step ended');
  // The echo step ends 4 s after it started, past the deadline: its late result is no second final state.
  await new Promise((resolve) => setTimeout(resolve, Math.max(0, started + 7_000 - Date.now())));
  assert.equal(outcomesOf(mesh, taskId).length, 1, 'exactly one final state');
  const state = (await getJson(`${mesh.url('orchestrator')}/v1/tasks/${taskId}`)).body;
  assert.equal(state.status, 'failed');
  assert.equal((state.failure as { reason: string }).reason, 'deadline_exceeded');
});

test('an ended task is kept for MESH_TASK_RETENTION: then it reads as ended and a redelivered request runs nothing', async (t) => {
  // An ended task's state for 3 s after its last change; an unfinished task's state, done and final
  // markers for the default 7 days.
  const mesh = await startMesh(t, {
    services: ['orchestrator', 'worker', 'aggregator'],
    vars: { MESH_TASK_RETENTION: '3s', MESH_TEMPLATES_DIR: templates },
  });
  const orchestrator = mesh.url('orchestrator');
  const { client } = mesh;
  // A task waiting at an approval gate for longer than the retention is still there to approve.
  const gated = String(
    (await postJson(`${orchestrator}/v1/tasks`, { template: 'reviewed', input: { topic: 'x' } }))
      .body.taskId,
  );
  await waitFor(
    async () =>
      (await getJson(`${orchestrator}/v1/tasks/${gated}`)).body.status === 'awaiting_approval',
    { timeout: 30_000, message: () => `the task never reached its gate\n${mesh.tails()}` },
  );
  await new Promise((resolve) => setTimeout(resolve, 4_000));
  const waiting = await getJson(`${orchestrator}/v1/tasks?status=awaiting_approval`);
  assert.deepEqual(
    (waiting.body.tasks as { id: string }[]).map((task) => task.id),
    [gated],
    'still listed: only ended tasks go after the retention',
  );
  assert.ok((await client.redis.pttl(`${client.keyPrefix}task:${gated}:events`)) > 86_400_000);
  assert.equal(
    (await postJson(`${orchestrator}/v1/tasks/${gated}/approve`, { by: 'ada' })).status,
    202,
  );
  const approved = await waitFor(() => outcomesOf(mesh, gated)[0], {
    timeout: 30_000,
    message: () => `the approved task did not end\n${mesh.tails()}`,
  });
  assert.equal(approved.type, 'io.mesh.task.completed');
  const request = newEvent({
    type: 'io.mesh.task.requested',
    source: '/test/e2e',
    data: { input: { text: 'kept briefly' } },
  });
  const taskId = request.id;
  await client.publish([{ topic: client.topics.requests, event: request }]);
  // And one through the API with an idempotency key, which a client may send again much later.
  const asked = { input: { text: 'posted' }, idempotencyKey: 'kept-briefly' };
  const posted = await postJson(`${orchestrator}/v1/tasks`, asked);
  const postedId = String(posted.body.taskId);
  for (const id of [taskId, postedId]) {
    const outcome = await waitFor(() => outcomesOf(mesh, id)[0], {
      timeout: 60_000,
      message: () => `no outcome\n${mesh.tails()}`,
    });
    assert.equal(outcome.type, 'io.mesh.task.completed');
  }

  const forgotten = (id: string) =>
    new RegExp(
      `^task ${id} ended \\(io\\.mesh\\.task\\.completed\\) and its state is no longer kept`,
    );
  for (const id of [taskId, postedId, gated])
    await waitFor(
      async () => {
        const { status, body } = await getJson(`${orchestrator}/v1/tasks/${id}`);
        return status === 404 && forgotten(id).test(String(body.message));
      },
      { timeout: 15_000, message: 'the task state was not forgotten after its retention' },
    );
  const again = await postJson(`${orchestrator}/v1/tasks`, asked);
  assert.equal(again.status, 200);
  assert.deepEqual(
    again.body,
    { taskId: postedId, status: 'completed', repeated: true },
    'the key still names the task, which says how it ended',
  );
  const key = (name: string) => `${client.keyPrefix}${name}`;
  assert.equal(await client.redis.exists(key(`task:${taskId}`), key(`task:${taskId}:events`)), 0);
  assert.ok(
    (await client.redis.pttl(key(`final:${taskId}`))) > 6 * 86_400_000,
    'the final marker is kept for MESH_IDEMPOTENCY_TTL',
  );

  // The request comes again (a producer retry, a topic replayed): the orchestrator must not plan it
  // as a new task, which would wait for ever on subtasks the workers skip as done.
  await client.publish([{ topic: client.topics.requests, event: request }]);
  await waitFor(
    async () => {
      const partitions = await client.admin.lag(client.groupId('orchestrator'), [
        client.topics.requests,
      ]);
      // The four requests, committed past.
      return (
        partitions.reduce((n, p) => n + p.high, 0) === 4 &&
        partitions.every((p) => p.high === 0 || p.committed === p.high)
      );
    },
    { timeout: 30_000, message: `the orchestrator did not consume the redelivered request` },
  );
  const { status, body } = await getJson(`${orchestrator}/v1/tasks/${taskId}`);
  assert.equal(status, 404);
  assert.match(String(body.message), forgotten(taskId));
  const running = await getJson(`${orchestrator}/v1/tasks?status=running,accepted`);
  assert.deepEqual(running.body.tasks, [], 'no task was planned again');
  assert.equal(outcomesOf(mesh, taskId).length, 1, 'exactly one final state');
});

test('a POST whose request Kafka did not take leaves no task behind, and its retry with the same key runs it once', async (t) => {
  const mesh = await startMesh(t, {
    services: ['orchestrator', 'worker', 'aggregator'],
    vars: { MESH_TEMPLATES_DIR: templates },
  });
  const orchestrator = mesh.url('orchestrator');
  const { client } = mesh;
  const requests = topicSpecs(client.config, []).find(
    (spec) => spec.topic === client.topics.requests,
  );
  assert.ok(requests !== undefined);
  // The request cannot be written: its topic is gone (the producer refuses it, `not_found`).
  await client.admin.deleteTopics([requests.topic]);
  await waitFor(async () => !(await client.admin.listTopics()).includes(requests.topic), {
    message: 'the requests topic was not deleted',
  });
  const asked = { input: { text: 'sent again' }, idempotencyKey: 'sent-again' };
  const refused = await postJson(`${orchestrator}/v1/tasks`, asked);
  assert.equal(refused.status, 404, JSON.stringify(refused.body));
  assert.match(String(refused.body.message), /does not exist; nothing of this send was written/);
  const accepted = await getJson(`${orchestrator}/v1/tasks?status=accepted`);
  assert.deepEqual(accepted.body.tasks, [], 'no task is left accepted that nothing would ever run');

  await client.admin.ensureTopics([requests]);
  // The same request again: the key names the task of the first POST, whose request is now written.
  const retried = await waitFor(
    async () => {
      const response = await postJson(`${orchestrator}/v1/tasks`, asked);
      return response.status === 200 ? response : undefined;
    },
    { timeout: 30_000, message: 'the POST was not taken once the topic was back' },
  );
  assert.equal(retried.body.repeated, true);
  assert.equal(retried.body.status, 'accepted');
  const taskId = String(retried.body.taskId);
  const outcome = await waitFor(() => outcomesOf(mesh, taskId)[0], {
    timeout: 60_000,
    message: () => `the retried task never ended\n${mesh.tails()}`,
  });
  assert.equal(outcome.type, 'io.mesh.task.completed', JSON.stringify(outcome.data));
  const again = await postJson(`${orchestrator}/v1/tasks`, asked);
  assert.deepEqual(again.body, { taskId, status: 'completed', repeated: true });
  const { body } = await getJson(`${orchestrator}/v1/tasks?limit=10`);
  assert.deepEqual(
    (body.tasks as { id: string }[]).map((task) => task.id),
    [taskId],
    'one task for the key',
  );
  assert.equal(outcomesOf(mesh, taskId).length, 1, 'exactly one final state');
});

test('kill -9 of the worker mid-task: the task still completes, exactly once on mesh.outputs', async (t) => {
  const mesh = await startMesh(t, {
    vars: { MESH_TEMPLATES_DIR: templates, MESH_LEASE_TTL: '3s' },
    serviceVars: { worker: { MESH_AGENT_DELAY: '2s' } },
  });
  const ids: string[] = [];
  for (let i = 0; i < 5; i += 1) {
    const { body } = await postJson(`${mesh.url('orchestrator')}/v1/tasks`, {
      template: 'sequential',
      input: { topic: `t${i}` },
    });
    ids.push(String(body.taskId));
  }
  // Wait until subtasks are running, then kill the worker without warning.
  await waitFor(() => mesh.probe.on(mesh.client.topics.results).length >= 2, { timeout: 30_000 });
  await mesh.kill('worker', 'SIGKILL');
  await mesh.start('worker');
  for (const id of ids) {
    const outcome = await waitFor(() => outcomesOf(mesh, id)[0], {
      timeout: 90_000,
      message: () => `task ${id} never finished\n${mesh.tails()}`,
    });
    assert.equal(outcome.type, 'io.mesh.task.completed');
  }
  await new Promise((resolve) => setTimeout(resolve, 2_000));
  for (const id of ids)
    assert.equal(outcomesOf(mesh, id).length, 1, `task ${id} has exactly one outcome`);
});

test('a worker stopped while its agent call outlasts the drain hands the subtask over: the next one runs it at once, no retry spent', async (t) => {
  const mesh = await startMesh(t, {
    vars: { MESH_TEMPLATES_DIR: templates },
    serviceVars: { worker: { MESH_AGENT_DELAY: '60s', MESH_SHUTDOWN_TIMEOUT: '1s' } },
  });
  const { body } = await postJson(`${mesh.url('orchestrator')}/v1/tasks`, {
    template: 'sequential',
    input: { topic: 'handover' },
  });
  const id = String(body.taskId);
  // The first subtask's agent call is under way: its lease is held (30 s) and renewed.
  await waitFor(async () => (await metricTotal(mesh.url('worker'), 'mesh_inflight')) > 0, {
    timeout: 30_000,
    message: () => `no subtask started\n${mesh.tails()}`,
  });
  await mesh.kill('worker', 'SIGTERM');
  const restarted = Date.now();
  await mesh.start('worker', { MESH_AGENT_DELAY: '0ms' });
  const outcome = await waitFor(() => outcomesOf(mesh, id)[0], {
    timeout: 60_000,
    message: () => `task ${id} never finished\n${mesh.tails()}`,
  });
  const took = Date.now() - restarted;
  assert.equal(outcome.type, 'io.mesh.task.completed');
  assert.ok(took < 20_000, `the next worker did not wait for the old lease to lapse (${took} ms)`);
  const retried = await Promise.all(
    mesh.client.config.retryTiers.map(async (tier) =>
      (await mesh.client.admin.endOffsets(mesh.client.topics.retry(tier.name))).reduce(
        (sum, p) => sum + p.high,
        0,
      ),
    ),
  );
  assert.deepEqual(retried, [0, 0], 'the stop put nothing on a retry tier');
  assert.equal(mesh.probe.on(mesh.client.topics.dlq).length, 0, 'nothing dead-lettered');
});

test('a request published with the client library and an unknown template fails clearly', async (t) => {
  const mesh = await startMesh(t, { services: ['orchestrator'] });
  const event = newEvent({
    type: 'io.mesh.task.requested',
    source: 'test',
    data: { template: 'no-such-template', input: {} },
  });
  await mesh.client.publish([{ topic: mesh.client.topics.requests, event }]);
  const outcome = await waitFor(() => outcomesOf(mesh, event.id)[0], { timeout: 30_000 });
  assert.equal(outcome.type, 'io.mesh.task.failed');
  assert.equal(outcome.data.reason, 'unknown_template');
});

test('a 429 storm from the fake LLM is absorbed: every task finishes, nothing on mesh.dlq', async (t) => {
  const port = await freePort();
  const fake = spawn(process.execPath, ['services/worker/src/fake-llm-main.ts'], {
    cwd: root,
    env: {
      ...process.env,
      FAKE_LLM_PORT: String(port),
      FAKE_LLM_429_STORM: '12',
      FAKE_LLM_RETRY_AFTER: '1',
      FAKE_LLM_LATENCY_MS: '20',
    },
    stdio: 'ignore',
  });
  t.after(() => {
    fake.kill('SIGKILL');
  });
  await waitFor(async () => (await fetch(`http://127.0.0.1:${port}/admin/stats`)).ok, {
    timeout: 15_000,
  });
  const mesh = await startMesh(t, {
    agents: ['llm'],
    vars: { MESH_TEMPLATES_DIR: templates },
    serviceVars: {
      worker: {
        MESH_WORKER_AGENTS: 'llm',
        MESH_LLM_AGENTS: 'llm',
        MESH_LLM_BASE_URL: `http://127.0.0.1:${port}/v1`,
        MESH_LLM_MODEL: 'fake-model',
        MESH_LLM_API_KEY: 'sk-test-storm-key',
      },
    },
  });
  const ids: string[] = [];
  for (let i = 0; i < 6; i += 1)
    ids.push(
      String(
        (await postJson(`${mesh.url('orchestrator')}/v1/tasks`, { template: 'llm', input: { i } }))
          .body.taskId,
      ),
    );
  for (const id of ids) {
    const outcome = await waitFor(() => outcomesOf(mesh, id)[0], {
      timeout: 90_000,
      message: () => `task ${id} did not finish\n${mesh.tails()}`,
    });
    assert.equal(outcome.type, 'io.mesh.task.completed', JSON.stringify(outcome.data));
  }
  const stats = (await (await fetch(`http://127.0.0.1:${port}/admin/stats`)).json()) as {
    byOutcome: Record<string, number>;
  };
  assert.equal(
    Object.entries(stats.byOutcome).find(([outcome]) => /rate/i.test(outcome))?.[1],
    12,
    'the fake answered the whole storm of 429s',
  );
  assert.equal(mesh.probe.on(mesh.client.topics.dlq).length, 0, 'nothing was dead-lettered');
  // Token usage of the model calls reaches the task's projection with the stage event.
  const tokens = async (): Promise<number> =>
    (
      (await getJson(`${mesh.url('orchestrator')}/v1/tasks/${ids[0] ?? ''}`)).body.usage as {
        promptTokens: number;
      }
    ).promptTokens;
  await waitFor(async () => (await tokens()) > 0, {
    timeout: 10_000,
    message: 'no token usage on the task',
  });
});
