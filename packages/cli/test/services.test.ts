/**
 * `mesh task` and `mesh dlq` against the real orchestrator and dlq-triage, run as processes on the
 * real stack with a prefix of their own: the CLI reads a task's state and causal chain, cancels it
 * with the bearer token, and lists, replays and discards dead letters; failures are one line.
 */
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { MeshProducer } from '@mesh/kafka';
import { disposable, freePort, onCleanup, waitFor } from '@mesh/testkit';
import { cliHarness, lines, root, show, type CliHarness } from './helpers.ts';
import type { TaskSummary } from '../src/commands/task.ts';

const token = 'cli-test-token';

/** Starts `services/<name>` on a free port with the harness's prefix; stopped when the test ends. */
async function startService(t: TestContext, h: CliHarness, name: string): Promise<string> {
  const entry = join(root, 'services', name, 'src', 'main.ts');
  const port = await freePort();
  const output: string[] = [];
  const child = spawn(process.execPath, [entry], {
    cwd: root,
    env: {
      PATH: process.env.PATH ?? '',
      ...h.env,
      MESH_HTTP_PORT: String(port),
      MESH_HTTP_HOST: '127.0.0.1',
      MESH_API_TOKEN: token,
      MESH_LOG_LEVEL: 'warn',
      MESH_SHUTDOWN_TIMEOUT: '5s',
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  child.stdout.on('data', (chunk: Buffer) => output.push(chunk.toString()));
  child.stderr.on('data', (chunk: Buffer) => output.push(chunk.toString()));
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  onCleanup(t, async () => {
    child.kill('SIGTERM');
    const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
    await exited;
    clearTimeout(timer);
  });
  const url = `http://127.0.0.1:${port}`;
  await waitFor(
    async () => {
      if (child.exitCode !== null)
        throw new Error(`${name} exited: ${output.join('').slice(-2000)}`);
      const response = await fetch(`${url}/readyz`);
      return response.status === 200;
    },
    { timeout: 60_000, interval: 250, message: `${name} did not become ready` },
  );
  return url;
}

test('mesh task: state, causal chain, cancel with the token, one-line errors', async (t) => {
  const h = await cliHarness(t);
  assert.equal((await h.run(['topics', 'init'])).code, 0);
  assert.equal((await h.run(['schemas', 'register'])).code, 0);
  const url = await startService(t, h, 'orchestrator');
  const env = { MESH_ORCHESTRATOR_URL: url };

  const published = await h.run(['publish', 'examples/reviewed.json']);
  assert.equal(published.code, 0, show(published));
  const taskId = published.stdout.trim();

  // No worker runs: the task waits at its first stage, dispatched to the research agent.
  const state = await waitFor(
    async () => {
      const result = await h.run(['task', taskId, '--json'], { env });
      if (result.code !== 0) return undefined;
      const view = JSON.parse(result.stdout) as {
        task: {
          id: string;
          status: string;
          template: string;
          stages: Record<string, { status: string }>;
        };
        events: { type: string; causationid?: string; id: string }[];
      };
      return view.events.some((e) => e.type === 'io.mesh.subtask.assigned') ? view : undefined;
    },
    { timeout: 30_000, interval: 500, message: 'the task was not dispatched' },
  );
  assert.equal(state.task.id, taskId);
  assert.equal(state.task.template, 'reviewed');
  assert.equal(state.task.stages.research?.status, 'dispatched');
  const request = state.events.find((e) => e.type === 'io.mesh.task.requested');
  assert.equal(request?.id, taskId);
  assert.equal(
    state.events.find((e) => e.type === 'io.mesh.subtask.assigned')?.causationid,
    taskId,
  );

  const text = await h.run(['task', taskId], { env });
  assert.equal(text.code, 0, show(text));
  assert.match(text.stdout, new RegExp(`^task ${taskId} {2}RUNNING {2}template reviewed$`, 'm'));
  assert.match(text.stdout, /^\s+research\s+dispatched\s+research$/m);
  assert.match(text.stdout, /^\s+review\s+pending\s+gate review: /m);
  assert.match(text.stdout, /^\S+\s+io\.mesh\.task\.requested {2}hop 0$/m);
  assert.match(text.stdout, /^\S+\s{3}io\.mesh\.subtask\.assigned {2}→ research, hop 1/m);

  // `mesh tasks`: the stuck task, what it waits on, and the filters.
  const stuck = await h.run(['tasks', '--status', 'running,awaiting_approval', '--json'], { env });
  assert.equal(stuck.code, 0, show(stuck));
  const listed = (JSON.parse(stuck.stdout) as { tasks: TaskSummary[] }).tasks;
  assert.deepEqual(
    listed.map((t) => ({ id: t.id, status: t.status, waitingOn: t.waitingOn })),
    [
      {
        id: taskId,
        status: 'running',
        waitingOn: [
          {
            stage: 'research',
            status: 'dispatched',
            since: listed[0]?.waitingOn?.[0]?.since,
            agents: ['research'],
          },
        ],
      },
    ],
  );
  assert.ok(Date.parse(listed[0]?.waitingOn?.[0]?.since ?? '') <= Date.now());
  const tasksTable = await h.run(['tasks', '--status', 'running'], { env });
  assert.match(
    tasksTable.stdout,
    new RegExp(`^${taskId}\\s+running\\s+reviewed\\s+\\d+s\\s+research \\[research\\] \\d+s$`, 'm'),
  );
  assert.match(tasksTable.stdout, /^1 task\nkept: running 1 \(oldest \d+s\)\n$/m);
  const none = await h.run(['tasks', '--status', 'running', '--older-than', '1h', '--json'], {
    env,
  });
  const noneListed = JSON.parse(none.stdout) as {
    tasks: TaskSummary[];
    byStatus: Record<string, { count: number; oldestCreatedAt?: string }>;
  };
  assert.deepEqual(noneListed.tasks, [], 'created less than an hour ago');
  assert.deepEqual(
    Object.fromEntries(Object.entries(noneListed.byStatus).map(([s, c]) => [s, c.count])),
    { accepted: 0, running: 1, awaiting_approval: 0, completed: 0, failed: 0, cancelled: 0 },
    'every task kept, by status',
  );
  const oldest = Date.parse(noneListed.byStatus.running?.oldestCreatedAt ?? '');
  assert.ok(oldest <= Date.now() && oldest > Date.now() - 120_000, 'the oldest running task');
  const done = await h.run(['tasks', '--status', 'completed'], { env });
  assert.match(done.stdout, /^no tasks\nkept: running 1 \(oldest \d+s\)\n$/);
  // The same from the metrics, for an alert on work stuck for too long.
  const metrics = await (await fetch(`${url}/metrics`)).text();
  assert.match(metrics, /^mesh_tasks\{status="running"\} 1$/m);
  assert.match(metrics, /^mesh_tasks\{status="completed"\} 0$/m);
  const age = Number(
    /^mesh_task_oldest_age_seconds\{status="running"\} (\S+)$/m.exec(metrics)?.[1],
  );
  assert.ok(age > 0 && age < 120, `the oldest running task's age: ${age}`);
  assert.match(metrics, /^mesh_task_oldest_age_seconds\{status="awaiting_approval"\} 0$/m);
  const badStatus = await h.run(['tasks', '--status', 'runing'], { env });
  assert.equal(badStatus.code, 1);
  assert.match(badStatus.stderr, /status "runing" is not a task status \(accepted, running, /);

  const early = await h.run(['task', taskId, '--approve'], {
    env: { ...env, MESH_API_TOKEN: token },
  });
  assert.equal(early.code, 1, show(early));
  assert.match(
    lines(early.stderr)[0] ?? '',
    /^mesh: orchestrator answered 409 \(conflict, POST \/v1\/tasks\/\S+\/approve\): task \S+ is not waiting at an approval gate$/,
  );

  const unauthorized = await h.run(['task', taskId, '--cancel'], { env });
  assert.equal(unauthorized.code, 1, show(unauthorized));
  assert.match(unauthorized.stderr, /^mesh: orchestrator answered 401 .*set MESH_API_TOKEN/);

  const cancelled = await h.run(['task', taskId, '--cancel', '--reason', 'test over', '--json'], {
    env: { ...env, MESH_API_TOKEN: token },
  });
  assert.equal(cancelled.code, 0, show(cancelled));
  assert.deepEqual(JSON.parse(cancelled.stdout), { taskId, status: 'cancelling' });
  await waitFor(
    async () => {
      const result = await h.run(['task', taskId, '--json'], { env });
      return (
        (JSON.parse(result.stdout) as { task: { status: string } }).task.status === 'cancelled'
      );
    },
    { timeout: 30_000, interval: 500, message: 'the task was not cancelled' },
  );

  const missing = await h.run(['task', 'no-such-task'], { env });
  assert.equal(missing.code, 1);
  assert.deepEqual(lines(missing.stderr), [
    'mesh: orchestrator answered 404 (not_found, GET /v1/tasks/no-such-task): no task no-such-task',
  ]);
  const down = await h.run(['task', taskId], {
    env: { MESH_ORCHESTRATOR_URL: `http://127.0.0.1:${await freePort()}` },
  });
  assert.equal(down.code, 1);
  assert.equal(down.stdout, '');
  assert.match(
    lines(down.stderr).join('\n'),
    /^mesh: cannot reach orchestrator at http:\/\/127\.0\.0\.1:\d+ \(connect ECONNREFUSED [^)]+\); is it running\?/,
  );
});

test('mesh dlq: list with filters, replay one or by filter, discard with a reason', async (t) => {
  const h = await cliHarness(t);
  assert.equal((await h.run(['topics', 'init'])).code, 0);
  assert.equal((await h.run(['schemas', 'register'])).code, 0);
  await startService(t, h, 'orchestrator');
  const url = await startService(t, h, 'dlq-triage');
  const env = { MESH_DLQ_URL: url, MESH_API_TOKEN: token };

  // Two records the orchestrator cannot read: it dead-letters them, dlq-triage parks them.
  const producer = disposable(t, new MeshProducer(h.kafka), (p) => p.disconnect());
  await producer.connect();
  await producer.send(
    ['first', 'second'].map((key) => ({
      topic: `${h.prefix}requests`,
      key,
      value: Buffer.from(`not a cloudevent (${key})`),
      headers: {},
    })),
  );
  type Item = {
    id: string;
    failure: string;
    status: string;
    originTopic?: string;
    detail?: string;
  };
  const items = await waitFor(
    async () => {
      const result = await h.run(['dlq', 'list', '--failure', 'malformed_event', '--json'], {
        env,
      });
      assert.equal(result.code, 0, show(result));
      const found = (JSON.parse(result.stdout) as { items: Item[] }).items;
      return found.length >= 2 ? found : undefined;
    },
    { timeout: 30_000, interval: 500, message: 'the dead letters were not listed' },
  );
  assert.ok(
    items.every((i) => i.failure === 'malformed_event' && i.originTopic === `${h.prefix}requests`),
  );
  const other = await h.run(['dlq', 'list', '--failure', 'timeout', '--json'], { env });
  assert.deepEqual(JSON.parse(other.stdout), { items: [] });
  const table = await h.run(['dlq', 'list'], { env });
  assert.match(
    table.stdout,
    /^ID\s+AT\s+STATUS\s+FAILURE\s+AGENT\s+TASK\s+TYPE\s+ORIGIN\s+DETAIL$/m,
  );
  assert.match(table.stdout, /^2 dead letters$/m);

  const [first, second] = items as [Item, Item];
  const noReason = await h.run(['dlq', 'discard', first.id], { env });
  assert.equal(noReason.code, 1);
  assert.match(noReason.stderr, /^mesh: mesh dlq discard needs --reason/);
  const discarded = await h.run(
    ['dlq', 'discard', first.id, '--reason', 'garbage from a test', '--json'],
    { env },
  );
  assert.equal(discarded.code, 0, show(discarded));
  assert.deepEqual(JSON.parse(discarded.stdout), { id: first.id, status: 'discarded' });
  const replayDiscarded = await h.run(['dlq', 'replay', first.id], { env });
  assert.equal(replayDiscarded.code, 1);
  assert.match(
    lines(replayDiscarded.stderr)[0] ?? '',
    /^mesh: dlq-triage answered 409 \(conflict, POST \/v1\/dlq\/\w+\/replay\): dead letter \w+ was discarded$/,
  );

  const replayed = await h.run(['dlq', 'replay', second.id], { env });
  assert.equal(replayed.code, 0, show(replayed));
  assert.equal(replayed.stdout, `dead letter ${second.id} replayed to ${h.prefix}requests\n`);

  const after = await h.run(['dlq', 'list', '--json'], { env });
  const statuses = new Map(
    (JSON.parse(after.stdout) as { items: Item[] }).items.map((i) => [i.id, i.status]),
  );
  assert.equal(statuses.get(first.id), 'discarded');
  assert.ok(
    ['replayed', 'parked'].includes(statuses.get(second.id) ?? ''),
    String(statuses.get(second.id)),
  );

  // By filter: what still waits (the replayed record, dead-lettered again by the orchestrator).
  const neither = await h.run(['dlq', 'replay'], { env });
  assert.equal(neither.code, 1);
  assert.match(neither.stderr, /^mesh: mesh dlq replay needs a dead-letter id, or --failure/);
  const both = await h.run(['dlq', 'replay', second.id, '--all'], { env });
  assert.equal(both.code, 1);
  assert.match(both.stderr, /takes a dead-letter id or a filter, not both/);
  const waiting = await waitFor(
    async () => {
      const dry = await h.run(
        ['dlq', 'replay', '--failure', 'malformed_event', '--dry-run', '--json'],
        { env },
      );
      assert.equal(dry.code, 0, show(dry));
      const answer = JSON.parse(dry.stdout) as { matched: number; items: Item[] };
      return answer.matched >= 1 ? answer : undefined;
    },
    { timeout: 30_000, interval: 500, message: 'the replayed record was not dead-lettered again' },
  );
  assert.ok(waiting.items.every((i) => i.status === 'parked' && i.id !== first.id));
  const dryTable = await h.run(['dlq', 'replay', '--failure', 'malformed_event', '--dry-run'], {
    env,
  });
  assert.match(dryTable.stdout, /^would replay \d+; nothing was replayed \(--dry-run\)$/m);
  const bulk = await h.run(['dlq', 'replay', '--failure', 'malformed_event'], { env });
  assert.equal(bulk.code, 0, show(bulk));
  assert.match(bulk.stdout, /^replayed (\d+) of \1 dead letters?$/m);
  const replayedIds = new Set(
    (
      JSON.parse((await h.run(['dlq', 'list', '--json'], { env })).stdout) as { items: Item[] }
    ).items
      .filter((i) => i.status === 'replayed')
      .map((i) => i.id),
  );
  for (const item of waiting.items) assert.ok(replayedIds.has(item.id), item.id);
});
