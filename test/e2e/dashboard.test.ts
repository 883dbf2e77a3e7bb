/**
 * The orchestrator's built-in dashboard in a real browser (Debian's chromium driven by
 * playwright-core) against the four services as processes, and the lag it shows checked against the
 * real broker.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';
import { chromium, type Page } from 'playwright-core';
import { GroupConsumer, type TopicPartition } from '@mesh/kafka';
import { MeshRuntime } from '@mesh/runtime';
import { meshEnv, onCleanup, testConfig, waitFor } from '@mesh/testkit';
import { getJson, postJson, root, startMesh } from '../support/mesh.ts';

const chromiumPath = '/usr/bin/chromium';
const results = fileURLToPath(new URL('../results/', import.meta.url));
const screenshot = `${results}dashboard.png`;

interface LagBody {
  at: string;
  error?: string;
  groups: {
    group: string;
    lag: number;
    lagSeconds: number;
    partitions: { topic: string; committed: number; end: number; lag: number }[];
  }[];
  topics: { topic: string; end: number; ratePerSec: number }[];
  history?: { at: string; byGroup: Record<string, number> }[];
}

async function lagOf(orchestrator: string): Promise<LagBody> {
  const { status, body } = await getJson(`${orchestrator}/v1/lag?history=1`);
  assert.equal(status, 200, JSON.stringify(body));
  return body as unknown as LagBody;
}

type LagSample = Awaited<ReturnType<MeshRuntime['lag']['collect']>>[number];

/** The number the page shows as the total lag (NaN while it shows none yet). */
async function totalLag(page: Page): Promise<number> {
  return Number(await page.locator('#total-lag').textContent());
}

/** The events/s the page shows for a topic (NaN when the topic is not listed). */
async function shownRate(page: Page, topic: string): Promise<number> {
  const cell = page.locator(`#throughput [data-topic="${topic}"]`);
  return (await cell.count()) === 0 ? Number.NaN : Number(await cell.textContent());
}

test('the dashboard shows lag rising while the worker is down and draining when it is back', async (t) => {
  assert.ok(
    existsSync(chromiumPath),
    `${chromiumPath} is missing: the dashboard test drives Debian's chromium. Install it with ` +
      '`apt-get update && apt-get install -y chromium` (playwright-core downloads no browser).',
  );
  // dlq-triage first, so that the orchestrator can be told where the page fetches dead letters.
  const mesh = await startMesh(t, { services: ['worker', 'aggregator', 'dlq-triage'] });
  await mesh.start('orchestrator', { MESH_DLQ_URL: mesh.url('dlq-triage') });
  const orchestrator = mesh.url('orchestrator');
  const prefix = String(mesh.env.MESH_TOPIC_PREFIX);
  const workerGroup = `${prefix}worker.echo`;

  const browser = await chromium.launch({
    executablePath: chromiumPath,
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
  });
  onCleanup(t, () => browser.close());
  const context = await browser.newContext({ viewport: { width: 1440, height: 1000 } });
  const page = await context.newPage();
  const pageErrors: string[] = [];
  page.on('pageerror', (error) => pageErrors.push(error.message));
  const response = await page.goto(`${orchestrator}/dashboard`);
  assert.equal(response?.status(), 200);
  assert.match(response?.headers()['content-type'] ?? '', /^text\/html/);

  // A few tasks through the whole mesh, so that the worker group exists with committed offsets.
  const post = async (): Promise<string> => {
    const { status, body } = await postJson(`${orchestrator}/v1/tasks`, { input: { n: 1 } });
    assert.equal(status, 202);
    return String(body.taskId);
  };
  const completed = async (ids: string[]): Promise<void> => {
    for (const id of ids)
      await waitFor(
        async () => (await getJson(`${orchestrator}/v1/tasks/${id}`)).body.status === 'completed',
        { timeout: 60_000, message: () => `task ${id} did not complete\n${mesh.tails()}` },
      );
  };
  const warmup = [await post(), await post(), await post()];
  await completed(warmup);
  let lastLag: LagBody | undefined;
  await waitFor(
    async () => {
      lastLag = await lagOf(orchestrator);
      const group = lastLag.groups.find((g) => g.group === workerGroup);
      return (
        group?.lag === 0 && group.partitions.reduce((s, p) => s + Math.max(0, p.committed), 0) >= 3
      );
    },
    { timeout: 30_000 },
  ).catch(() =>
    assert.fail(
      `the worker group never showed in /v1/lag with its commits: ${JSON.stringify({ ...lastLag, history: undefined })}\n${mesh.tails()}`,
    ),
  );
  await waitFor(async () => (await totalLag(page)) === 0, {
    timeout: 15_000,
    message: 'the page never showed a total lag of 0 at rest',
  });
  await waitFor(
    async () => (await page.locator(`#lag-table tr[data-group="${workerGroup}"]`).count()) > 0,
    { timeout: 10_000, message: 'the partition table never listed the worker group' },
  );

  // The worker goes away; 40 tasks are asked for over ~4 s. Nobody consumes mesh.work.echo.
  await mesh.kill('worker');
  const n = 40;
  const queued: string[] = [];
  const workTopic = `${prefix}work.echo`;
  // The page's rate is the change between two 2-s collections: sampled while the topic grows.
  let workRate = 0;
  for (let i = 0; i < n; i += 1) {
    queued.push(await post());
    workRate = Math.max(workRate, (await shownRate(page, workTopic)) || 0);
    await sleep(100);
  }
  const peak = await waitFor(
    async () => {
      workRate = Math.max(workRate, (await shownRate(page, workTopic)) || 0);
      const shown = await totalLag(page);
      return shown >= n ? shown : undefined;
    },
    { timeout: 30_000, interval: 250, message: `#total-lag never reached ${n}` },
  );
  const behind = await waitFor(
    async () => {
      const body = await lagOf(orchestrator);
      const group = body.groups.find((g) => g.group === workerGroup);
      return group?.lag === n ? { at: body.at, ...group } : undefined;
    },
    { timeout: 30_000, message: `the worker group never showed a lag of exactly ${n}` },
  );
  const rows = await page
    .locator(`#lag-table tr[data-group="${workerGroup}"] td:nth-child(6)`)
    .allTextContents();
  await waitFor(
    async () =>
      (
        await page
          .locator(`#lag-table tr[data-group="${workerGroup}"] td:nth-child(6)`)
          .allTextContents()
      ).reduce((s, v) => s + Number(v), 0) === n,
    { timeout: 10_000, message: `the partition rows of the worker group do not add up to ${n}` },
  );
  assert.ok(workRate > 0, 'the page showed the work topic being written to');
  // The queued tasks say what they wait on: their stage, for the agent nobody runs now.
  const waitingCell = page.locator(`#tasks tr[data-task="${queued[n - 1]}"] td.waiting`);
  await waitFor(async () => /\[echo\] · \d+ s ago$/.test((await waitingCell.textContent()) ?? ''), {
    timeout: 10_000,
    message: 'the newest queued task never said it waits on echo',
  });
  // Above the tasks: every task kept by status, the queued ones running for some seconds now.
  await waitFor(
    async () =>
      new RegExp(`^running ${n} · oldest \\d+ s ago$`).test(
        (await page.locator('#task-counts [data-status="running"]').textContent()) ?? '',
      ),
    { timeout: 10_000, message: `the task counts never showed the ${n} queued tasks running` },
  );
  assert.equal(
    await page.locator('#task-counts [data-status="completed"]').textContent(),
    'completed 3',
  );
  mkdirSync(results, { recursive: true });
  await page.screenshot({ path: `${results}dashboard-lagging.png`, fullPage: true });
  // While nothing consumes, the age of the oldest waiting event grows with the clock.
  const before = behind.lagSeconds;
  const laterBody = await waitFor(
    async () => {
      const body = await lagOf(orchestrator);
      return Date.parse(body.at) - Date.parse(behind.at) >= 3_000 ? body : undefined;
    },
    { timeout: 15_000, interval: 250, message: 'no later lag collection' },
  );
  const later = laterBody.groups.find((g) => g.group === workerGroup);
  assert.ok(later !== undefined && later.lag === n);
  const between = (Date.parse(laterBody.at) - Date.parse(behind.at)) / 1_000;
  assert.ok(
    Math.abs(later.lagSeconds - before - between) < 0.5,
    `lag seconds grew from ${before} to ${later.lagSeconds} over ${between} s`,
  );
  const requests = laterBody.topics.find((x) => x.topic === `${prefix}requests`);
  assert.equal(requests?.end, 3 + n, 'the requests topic end offset counts every request');
  assert.equal(laterBody.topics.find((x) => x.topic === workTopic)?.end, 3 + n);

  // The worker comes back; an event nobody can read goes to mesh.requests, for the DLQ panel.
  await mesh.start('worker');
  await mesh.client.producer.send([
    {
      topic: mesh.client.topics.requests,
      key: 'garbage',
      value: Buffer.from('not a cloudevent'),
      headers: {},
    },
  ]);
  const drainedAt = Date.now();
  await waitFor(async () => (await totalLag(page)) === 0, {
    timeout: 60_000,
    interval: 250,
    message: () => `#total-lag never fell back to 0\n${mesh.tails()}`,
  });
  const drainSeconds = (Date.now() - drainedAt) / 1_000;
  const after = (await lagOf(orchestrator)).groups.find((g) => g.group === workerGroup);
  assert.equal(after?.lag, 0);
  assert.equal(
    after?.partitions.reduce((s, p) => s + Math.max(0, p.committed), 0),
    3 + n,
    'the worker committed every assignment',
  );
  await completed(queued);

  // The latest tasks: 20 rows, all completed, linking to the task and its causal chain.
  let shownStatuses = '';
  await waitFor(
    async () => {
      const rows = page.locator('#tasks tbody tr');
      const statuses: (string | null)[] = [];
      for (let i = 0; i < (await rows.count()); i += 1)
        statuses.push(await rows.nth(i).getAttribute('data-status'));
      shownStatuses = statuses.join(',');
      return statuses.length === 20 && statuses.every((s) => s === 'completed');
    },
    { timeout: 15_000 },
  ).catch(async () =>
    assert.fail(
      `the latest tasks never all showed completed: ${shownStatuses}\n${await page.locator('#tasks').innerText()}\n${await page.locator('#status').innerText()}`,
    ),
  );
  await waitFor(
    async () => (await page.locator('#task-counts').textContent()) === `completed ${3 + n}`,
    { timeout: 10_000, message: 'the task counts never showed every task completed' },
  );
  const newest = queued[queued.length - 1] ?? '';
  const row = page.locator(`#tasks tr[data-task="${newest}"]`);
  assert.equal(await row.locator('.badge').textContent(), 'completed');
  const links = [
    await row.locator('a').nth(0).getAttribute('href'),
    await row.locator('a').nth(1).getAttribute('href'),
  ];
  assert.deepEqual(links, [`v1/tasks/${newest}`, `v1/tasks/${newest}/events`]);
  const base = `${orchestrator}/dashboard`;
  const task = await getJson(new URL(links[0] ?? '', base).href);
  assert.equal(task.body.status, 'completed');
  const chain = await getJson(new URL(links[1] ?? '', base).href);
  assert.ok(
    (chain.body.events as { type: string }[]).some((e) => e.type === 'io.mesh.task.completed'),
  );

  // Dead letters by class, fetched by the browser from dlq-triage (another origin: CORS).
  await waitFor(
    async () =>
      (await page
        .locator('#dlq [data-failure="malformed_event"]')
        .textContent({ timeout: 500 })) === '1',
    { timeout: 30_000, message: 'the DLQ panel never showed the malformed event' },
  );
  const dlqResponse = await fetch(`${mesh.url('dlq-triage')}/v1/dlq?limit=1`);
  assert.equal(dlqResponse.headers.get('access-control-allow-origin'), '*');
  const write = await fetch(`${mesh.url('dlq-triage')}/v1/dlq/${'0'.repeat(20)}/discard`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ reason: 'x' }),
  });
  assert.equal(write.status, 404);
  assert.equal(write.headers.get('access-control-allow-origin'), null, 'writes stay same-origin');

  // The chart has drawn the rise and the fall: the history holds both.
  const history = (await lagOf(orchestrator)).history ?? [];
  const series = history.map((h) => h.byGroup[workerGroup] ?? 0);
  assert.ok(Math.max(...series) >= n && series[series.length - 1] === 0);
  await sleep(2_500);
  await page.screenshot({ path: screenshot, fullPage: true });
  assert.deepEqual(pageErrors, [], 'the page threw no error');

  // Work for an agent no worker runs: no group exists, the page shows it under its worker's group.
  const ghostTopic = `${prefix}work.ghost`;
  await mesh.client.admin.ensureTopics([
    { topic: ghostTopic, numPartitions: 1, replicationFactor: 1 },
  ]);
  onCleanup(t, () => mesh.client.admin.deleteTopics([ghostTopic]).catch(() => undefined));
  await mesh.client.producer.send([
    { topic: ghostTopic, key: 'g', value: Buffer.from('waiting'), headers: {} },
  ]);
  const ghostRow = page.locator(`#lag-table tr[data-group="${prefix}worker.ghost"]`);
  // The orchestrator lists the cluster's topics at most every 10 s, so a new one takes that long.
  await waitFor(async () => (await ghostRow.count()) > 0, {
    timeout: 30_000,
    message: 'the partition table never listed the work topic nothing reads',
  });
  assert.equal(
    await ghostRow.locator('td').nth(0).textContent(),
    `${prefix}worker.ghost (no consumer)`,
  );
  assert.equal(await ghostRow.locator('td').nth(5).textContent(), '1', 'its one event is lag');

  // dlq-triage gone: the panel says so instead of showing stale counts.
  await mesh.kill('dlq-triage');
  await waitFor(async () => (await page.locator('#dlq-status').textContent()) === 'unavailable', {
    timeout: 15_000,
    message: 'the DLQ panel never showed unavailable',
  });
  t.diagnostic(
    `peak #total-lag ${peak}; worker group lag ${behind.lag}, rows ${rows.join('+')}; ` +
      `lag seconds ${before.toFixed(1)} -> ${later.lagSeconds.toFixed(1)} over ${between} s; ` +
      `work topic up to ${workRate} events/s; drained to 0 in ${drainSeconds.toFixed(1)} s; ` +
      `screenshot ${screenshot.slice(root.length)}`,
  );
});

/**
 * Commits `offsetOf(partition)` for every partition of `topic` as a member of `group`, then leaves:
 * the group is left with those commits and no consumer.
 */
async function commitAs(
  runtime: MeshRuntime,
  group: string,
  topic: string,
  partitions: number,
  offsetOf: (partition: number) => number,
): Promise<void> {
  const consumer = new GroupConsumer(runtime.kafka, {
    groupId: group,
    sessionTimeoutMs: 10_000,
    heartbeatIntervalMs: 500,
  });
  let assigned: TopicPartition[] = [];
  await consumer.start([topic], {
    take: () => 0,
    assigned: (p) => {
      assigned = p;
    },
  });
  try {
    await waitFor(
      async () => {
        if (assigned.length !== partitions) return false;
        await consumer.commit(
          assigned.map((p) => ({ ...p, offset: String(offsetOf(p.partition)) })),
        );
        return true;
      },
      { timeout: 30_000, message: `${group} could not commit on ${topic}` },
    );
  } finally {
    await consumer.stop();
  }
}

test('lag against the real broker: N behind a commit at 0, 0 at the end, seconds age with the clock', async (t) => {
  const config = testConfig(await meshEnv(), 'lag-test');
  const runtime = new MeshRuntime(config);
  onCleanup(t, () => runtime.close());
  const topic = `${config.topicPrefix}lag-probe`;
  const group = `${config.topicPrefix}lag-test`;
  const partitions = 3;
  await runtime.admin.ensureTopics([
    { topic, numPartitions: partitions, replicationFactor: config.replicationFactor },
  ]);
  onCleanup(t, () => runtime.admin.deleteTopics([topic]).catch(() => undefined));
  await runtime.producer.connect();

  await commitAs(runtime, group, topic, partitions, () => 0);
  runtime.lag.watch(group, [topic]);
  const sum = (samples: LagSample[]): number => samples.reduce((s, x) => s + x.lag, 0);
  const t0 = Date.now();
  const empty = await runtime.lag.collect(t0);
  assert.equal(empty.length, partitions);
  assert.ok(empty.every((s) => s.group === group && s.committed === 0 && s.lag === 0));

  const n = 30;
  await runtime.producer.send(
    Array.from({ length: n }, (_, i) => ({
      topic,
      key: `k${i}`,
      value: Buffer.from(`event ${i}`),
      headers: {},
    })),
  );
  const t1 = Date.now();
  const behind = await runtime.lag.collect(t1);
  assert.equal(sum(behind), n, 'N events behind a commit at 0');
  for (const s of behind) {
    assert.equal(s.lag, s.high, `partition ${s.partition}: lag is the end offset`);
    if (s.lag === 0) continue;
    // The oldest waiting event was written between the two collections: its age lies in between.
    assert.ok(
      s.lagSeconds > 0 && s.lagSeconds <= (t1 - t0) / 1_000,
      `partition ${s.partition}: ${s.lagSeconds} s within (0, ${(t1 - t0) / 1_000}]`,
    );
  }

  await sleep(3_000);
  const t2 = Date.now();
  const older = await runtime.lag.collect(t2);
  assert.equal(sum(older), n);
  const elapsed = (t2 - t1) / 1_000;
  for (const s of older) {
    const first = behind.find((b) => b.partition === s.partition);
    if (s.lag === 0 || first === undefined) continue;
    assert.ok(
      Math.abs(s.lagSeconds - first.lagSeconds - elapsed) < 0.05,
      `partition ${s.partition}: lag seconds ${first.lagSeconds} -> ${s.lagSeconds} over ${elapsed} s`,
    );
  }
  const ends = new Map(older.map((s) => [s.partition, s.high]));
  await commitAs(runtime, group, topic, partitions, (p) => ends.get(p) ?? 0);
  const caughtUp = await runtime.lag.collect();
  assert.equal(sum(caughtUp), 0, 'committed to the end: no lag');
  assert.ok(caughtUp.every((s) => s.lagSeconds === 0 && s.committed === s.high));
  t.diagnostic(
    `lag ${sum(behind)} -> ${sum(caughtUp)}; oldest age ${Math.max(...behind.map((s) => s.lagSeconds)).toFixed(2)} s -> ` +
      `${Math.max(...older.map((s) => s.lagSeconds)).toFixed(2)} s over ${elapsed.toFixed(2)} s`,
  );
});
