/**
 * The `mesh` CLI as a person or a script runs it — a child process — against the real Kafka, schema
 * registry and Redis, each test on a topic prefix of its own.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { variables } from '@mesh/config';
import { ContractRegistry, EventCodec, loadContracts } from '@mesh/contracts';
import { newEvent } from '@mesh/envelope';
import { GroupConsumer, MeshProducer } from '@mesh/kafka';
import { topicSpecs } from '@mesh/runtime';
import {
  disposable,
  foreignCaFile,
  probeTopics,
  secureKafkaVars,
  secureRedisVars,
  secureRegistryVars,
  waitFor,
} from '@mesh/testkit';
import { cliHarness, jsonLines, lines, root, show, type CliHarness } from './helpers.ts';

const builtinAgents = variables.MESH_WORKER_AGENTS.default.split(',');

interface TailJson {
  topic: string;
  partition: number;
  offset: string;
  key: string | null;
  mode?: string;
  schemaId?: number;
  event?: Record<string, unknown> & { type: string; id: string; data?: unknown };
  error?: { code: string; message: string };
  value?: string;
}

async function initTopics(h: CliHarness): Promise<void> {
  const result = await h.run(['topics', 'init', '--json']);
  assert.equal(result.code, 0, show(result));
}

async function examples(name: string): Promise<unknown> {
  return JSON.parse(await readFile(join(root, 'examples', name), 'utf8')) as unknown;
}

/** A port nothing listens on. */
async function closedPort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      const port = typeof address === 'object' && address !== null ? address.port : 0;
      server.close(() => resolve(port));
    });
  });
}

/** Asserts a failed run: exit 1, nothing on stdout, exactly one `mesh: …` line on stderr. */
function assertOneLineFailure(
  result: { code: number | null; stdout: string; stderr: string; ms: number },
  pattern: RegExp,
): void {
  assert.equal(result.code, 1, show(result));
  assert.equal(result.stdout, '', show(result));
  const errors = lines(result.stderr);
  assert.equal(errors.length, 1, show(result));
  assert.match(errors[0] ?? '', pattern);
}

test('topics init creates every topic of the contract under the prefix, then finds them there', async (t) => {
  const h = await cliHarness(t);
  const first = await h.run(['topics', 'init', '--json']);
  assert.equal(first.code, 0, show(first));
  const report = JSON.parse(first.stdout) as {
    created: string[];
    existing: string[];
    agents: string[];
  };
  const expected = topicSpecs(h.config, builtinAgents).map((s) => s.topic);
  assert.deepEqual(report.agents, builtinAgents);
  assert.deepEqual([...report.created].sort(), [...expected].sort());
  assert.deepEqual(report.existing, []);

  const onBroker = new Set(await h.admin.listTopics());
  for (const topic of expected) assert.ok(onBroker.has(topic), `${topic} exists`);
  for (const topic of [`${h.prefix}requests`, `${h.prefix}dlq`, `${h.prefix}work.echo`])
    assert.equal((await h.admin.endOffsets(topic)).length, 3, `${topic} has MESH_PARTITIONS=3`);

  const again = await h.run(['topics', 'init']);
  assert.equal(again.code, 0, show(again));
  assert.match(again.stdout, new RegExp(`exists\\s+${h.prefix.replace('.', '\\.')}requests`));
  assert.match(again.stdout, new RegExp(`^0 created .*, ${expected.length} already there$`, 'm'));

  const more = await h.run(['topics', 'init', '--agents', 'alpha,beta', '--json']);
  assert.equal(more.code, 0, show(more));
  assert.deepEqual((JSON.parse(more.stdout) as { created: string[] }).created, [
    `${h.prefix}work.alpha`,
    `${h.prefix}work.beta`,
  ]);
});

test('schemas register, then schemas check says every contract is compatible', async (t) => {
  const h = await cliHarness(t);
  const types = [...loadContracts().keys()];
  const registered = await h.run(['schemas', 'register', '--json']);
  assert.equal(registered.code, 0, show(registered));
  const ids = (JSON.parse(registered.stdout) as { registered: { type: string; id: number }[] })
    .registered;
  assert.deepEqual(
    ids.map((r) => r.type),
    types,
  );
  for (const { id } of ids) assert.equal(typeof id, 'number');

  const checked = await h.run(['schemas', 'check', '--json']);
  assert.equal(checked.code, 0, show(checked));
  const report = JSON.parse(checked.stdout) as {
    compatible: boolean;
    schemas: { type: string; compatible: boolean; isNew: boolean }[];
  };
  assert.equal(report.compatible, true);
  assert.equal(report.schemas.length, types.length);
  assert.ok(report.schemas.every((s) => s.compatible && !s.isNew));

  const text = await h.run(['schemas', 'check']);
  assert.equal(text.code, 0, show(text));
  assert.match(text.stdout, new RegExp(`all ${types.length} contracts are compatible`));
});

test('schemas check exits 1 and names the contract an incompatible change would break', async (t) => {
  const h = await cliHarness(t);
  const dir = await mkdtemp(join(tmpdir(), 'mesh-cli-schemas-'));
  const type = `io.mesh.clitest.${randomBytes(6).toString('hex')}`;
  t.after(async () => {
    await rm(dir, { recursive: true, force: true });
    const url = `${h.config.registry.url}/subjects/${type}`;
    await fetch(url, { method: 'DELETE' }).catch(() => undefined);
    await fetch(`${url}?permanent=true`, { method: 'DELETE' }).catch(() => undefined);
  });
  const write = (schema: Record<string, unknown>) =>
    writeFile(
      join(dir, `${type}.json`),
      JSON.stringify({ title: type, type: 'object', ...schema }),
    );
  const env = { MESH_SCHEMAS_DIR: dir };

  await write({ properties: { a: { type: 'string' } } });
  const fresh = await h.run(['schemas', 'check', '--json'], { env });
  assert.equal(fresh.code, 0, show(fresh));
  // A subject the registry has never seen is compatible, and reported as new (Apicurio answers
  // its compatibility check with 200 where Confluent answers 404: both must say new).
  assert.deepEqual(
    (
      JSON.parse(fresh.stdout) as {
        schemas: { type: string; compatible: boolean; isNew: boolean }[];
      }
    ).schemas.map((s) => [s.type, s.compatible, s.isNew]),
    [[type, true, true]],
  );
  const registered = await h.run(['schemas', 'register'], { env });
  assert.equal(registered.code, 0, show(registered));

  // A new required field: events written under the old contract could not be read (BACKWARD).
  await write({ properties: { a: { type: 'string' }, b: { type: 'string' } }, required: ['b'] });
  const checked = await h.run(['schemas', 'check', '--json'], { env });
  assert.equal(checked.code, 1, show(checked));
  const report = JSON.parse(checked.stdout) as {
    compatible: boolean;
    schemas: { type: string; compatible: boolean; isNew: boolean }[];
  };
  assert.equal(report.compatible, false);
  assert.deepEqual(
    report.schemas.map((s) => [s.type, s.compatible, s.isNew]),
    [[type, false, false]],
  );
  assert.match(checked.stderr, new RegExp(`incompatible .*: ${type.replace(/\./g, '\\.')}`));

  const refused = await h.run(['schemas', 'register'], { env });
  assert.equal(refused.code, 1, show(refused));
  assert.match(
    refused.stderr,
    new RegExp(
      `^mesh: registry refused the schema of ${type.replace(/\./g, '\\.')} as incompatible`,
    ),
  );
});

test('publish sends a task in binary mode with the wire format; tail decodes it', async (t) => {
  const h = await cliHarness(t);
  await initTopics(h);
  assert.equal((await h.run(['schemas', 'register'])).code, 0);

  const published = await h.run(['publish', 'examples/default.json', '--json']);
  assert.equal(published.code, 0, show(published));
  const out = JSON.parse(published.stdout) as { taskId: string; topic: string; mode: string };
  assert.match(out.taskId, /^[0-9a-f-]{36}$/);
  assert.equal(out.topic, `${h.prefix}requests`);
  assert.equal(out.mode, 'binary');

  const tailed = await h.run(['tail', 'requests', '--from-beginning', '--limit', '1', '--json']);
  assert.equal(tailed.code, 0, show(tailed));
  const [line, ...rest] = jsonLines(tailed.stdout) as TailJson[];
  assert.equal(rest.length, 0);
  assert.ok(line?.event !== undefined, show(tailed));
  assert.equal(line.error, undefined);
  assert.equal(line.event.type, 'io.mesh.task.requested');
  assert.equal(line.event.id, out.taskId);
  assert.equal(line.event.correlationid, out.taskId);
  assert.equal(line.event.hopcount, 0);
  assert.equal(line.event.source, '/mesh/cli');
  assert.deepEqual(line.event.data, await examples('default.json'));
  assert.equal(line.key, out.taskId);
  assert.equal(line.mode, 'binary');
  assert.equal(typeof line.schemaId, 'number');

  // On the wire: ce_ headers, content-type, and the Confluent wire format (magic byte 0, schema id).
  const probe = await probeTopics(h.kafka, [`${h.prefix}requests`]);
  disposable(t, probe, (p) => p.stop());
  const record = await waitFor(() => probe.records[0], {
    message: 'the request was not read back',
  });
  assert.equal(probe.header(record, 'ce_type'), 'io.mesh.task.requested');
  assert.equal(probe.header(record, 'ce_specversion'), '1.0');
  assert.equal(probe.header(record, 'content-type'), 'application/json');
  assert.equal(record.value?.[0], 0);
  assert.equal(record.value?.readUInt32BE(1), line.schemaId);
  assert.match(
    probe.header(record, 'ce_dataschema') ?? '',
    new RegExp(`/schemas/ids/${line.schemaId}$`),
  );

  // Text mode prints the task id alone, from a file or from stdin with a template.
  const text = await h.run(['publish', 'examples/research.json']);
  assert.equal(text.code, 0, show(text));
  assert.match(text.stdout, /^[0-9a-f-]{36}\n$/);
  const piped = await h.run(
    ['publish', '-', '--template', 'fan-out', '--key', 'my-key', '--json'],
    {
      input: JSON.stringify({ input: { topic: 'stdin' } }),
    },
  );
  assert.equal(piped.code, 0, show(piped));
  const last = await h.run(['tail', 'requests', '--limit', '3']);
  assert.equal(last.code, 0, show(last));
  const shown = lines(last.stdout);
  assert.equal(shown.length, 3, show(last));
  assert.ok(shown.every((l) => l.includes('io.mesh.task.requested')));
  assert.ok(shown.some((l) => l.includes(`id=${text.stdout.trim()}`)));
  assert.ok(
    shown.some((l) => l.includes('key=my-key') && l.includes('"template":"fan-out"')),
    show(last),
  );
});

test('publish --raw sends a whole CloudEvent in structured mode as it is; tail shows it', async (t) => {
  const h = await cliHarness(t);
  await initTopics(h);
  assert.equal((await h.run(['schemas', 'register'])).code, 0);
  const file = join(root, 'examples', 'structured-event.json');
  const example = (await examples('structured-event.json')) as { id: string; data: unknown };

  const published = await h.run(['publish', '--raw', 'examples/structured-event.json', '--json']);
  assert.equal(published.code, 0, show(published));
  const out = JSON.parse(published.stdout) as { taskId: string; mode: string; key: string };
  assert.equal(out.taskId, example.id);
  assert.equal(out.key, example.id);
  assert.equal(out.mode, 'structured');

  const tailed = await h.run(['tail', 'requests', '--from-beginning', '--json']);
  assert.equal(tailed.code, 0, show(tailed));
  const [line] = jsonLines(tailed.stdout) as TailJson[];
  assert.equal(line?.mode, 'structured', show(tailed));
  assert.equal(line.error, undefined);
  assert.equal(line.event?.id, example.id);
  assert.equal(line.event?.type, 'io.mesh.task.requested');
  assert.deepEqual(line.event?.data, example.data);

  const probe = await probeTopics(h.kafka, [`${h.prefix}requests`]);
  disposable(t, probe, (p) => p.stop());
  const record = await waitFor(() => probe.records[0]);
  assert.equal(probe.header(record, 'content-type'), 'application/cloudevents+json');
  assert.equal(
    record.value?.toString('utf8'),
    await readFile(file, 'utf8'),
    'the bytes of the file',
  );

  const renewed = await h.run(['publish', '--raw', 'examples/structured-event.json', '--new-id']);
  assert.equal(renewed.code, 0, show(renewed));
  assert.notEqual(renewed.stdout.trim(), example.id);
});

test('tail --follow prints new events only, with a throw-away group that lag leaves out', async (t) => {
  const h = await cliHarness(t);
  await initTopics(h);
  assert.equal((await h.run(['schemas', 'register'])).code, 0);
  const before = await h.run(['publish', 'examples/default.json']);
  assert.equal(before.code, 0, show(before));

  const following = h.run(['tail', 'requests', '--follow', '--limit', '1', '--json']);
  const group = await waitFor(
    async () => (await h.admin.listGroups()).find((g) => g.startsWith(`${h.prefix}cli.tail.`)),
    { timeout: 30_000, message: 'the tail did not join a group' },
  );
  // The tail group is not one of the mesh's: lag lists no group at all.
  const lagged = await h.run(['lag', '--json']);
  assert.deepEqual((JSON.parse(lagged.stdout) as { groups: string[] }).groups, []);

  const after = await h.run(['publish', 'examples/research.json']);
  assert.equal(after.code, 0, show(after));
  const result = await following;
  assert.equal(result.code, 0, show(result));
  const shown = jsonLines(result.stdout) as TailJson[];
  assert.deepEqual(
    shown.map((l) => l.event?.id),
    [after.stdout.trim()],
    'the event published before the tail started is not shown',
  );
  // It committed nothing: its group is gone or holds no offsets.
  const offsets = await waitFor(async () => {
    const groups = await h.admin.listGroups();
    return groups.includes(group) ? (await h.admin.lag(group, [])).length === 0 : true;
  });
  assert.equal(offsets, true);
});

test('lag shows the lag of a group whose member commits nothing', async (t) => {
  const h = await cliHarness(t);
  await initTopics(h);
  const topic = `${h.prefix}requests`;
  const groupId = `${h.prefix}lag-probe`;
  const taken: number[] = [];
  const consumer = new GroupConsumer(h.kafka, {
    groupId,
    sessionTimeoutMs: 10_000,
    heartbeatIntervalMs: 500,
  });
  disposable(t, consumer, (c) => c.stop());
  await consumer.start([topic], {
    take: (_topic, _partition, records) => {
      taken.push(records.length);
      return records.length;
    },
    assigned: () => undefined,
  });
  const producer = disposable(t, new MeshProducer(h.kafka), (p) => p.disconnect());
  await producer.connect();
  const count = 5;
  await producer.send(
    Array.from({ length: count }, (_, i) => ({
      topic,
      key: `k${i}`,
      value: Buffer.from(`m${i}`),
      headers: {},
    })),
  );
  await waitFor(() => taken.reduce((a, b) => a + b, 0) === count, {
    message: 'the member did not read the events',
  });

  const result = await h.run(['lag', '--json', '--group', 'lag-probe']);
  assert.equal(result.code, 0, show(result));
  const report = JSON.parse(result.stdout) as {
    groups: string[];
    partitions: {
      group: string;
      topic: string;
      committed: number | null;
      end: number;
      lag: number;
      lagSeconds: number;
    }[];
  };
  assert.deepEqual(report.groups, [groupId]);
  assert.equal(report.partitions.length, 3, 'one row per partition');
  assert.ok(
    report.partitions.every(
      (p) => p.group === groupId && p.topic === topic && p.committed === null,
    ),
  );
  assert.equal(
    report.partitions.reduce((sum, p) => sum + p.lag, 0),
    count,
  );
  assert.equal(
    report.partitions.reduce((sum, p) => sum + p.end, 0),
    count,
  );
  assert.ok(report.partitions.every((p) => p.lagSeconds >= 0 && (p.lag > 0 || p.lagSeconds === 0)));

  // Assignments for an agent no worker runs: no group exists, so only their topic can tell.
  const work = `${h.prefix}work.echo`;
  await producer.send(
    ['a', 'b'].map((key) => ({ topic: work, key, value: Buffer.from(key), headers: {} })),
  );
  const all = await h.run(['lag']);
  assert.equal(all.code, 0, show(all));
  assert.match(all.stdout, /^GROUP\s+TOPIC\s+PARTITION\s+COMMITTED\s+END\s+LAG\s+LAG\(s\)$/m);
  assert.match(all.stdout, new RegExp(`^1 groups, total lag ${count + 2}$`, 'm'));
  assert.match(
    all.stdout,
    new RegExp(
      `^nothing reads ${work.replaceAll('.', '\\.')} \\(no group ${h.prefix.replaceAll('.', '\\.')}worker\\.echo\\): 2 events waiting; start a worker that hosts echo$`,
      'm',
    ),
  );
  const unreadJson = await h.run(['lag', '--json', '--group', 'worker.echo']);
  assert.equal(unreadJson.code, 0, show(unreadJson));
  const unreadReport = JSON.parse(unreadJson.stdout) as {
    groups: string[];
    unread: { topic: string; agent: string; group: string }[];
    partitions: { group: string; topic: string; committed: number | null; lag: number }[];
  };
  assert.deepEqual(unreadReport.groups, [], 'the group does not exist');
  assert.deepEqual(unreadReport.unread, [
    { topic: work, agent: 'echo', group: `${h.prefix}worker.echo` },
  ]);
  assert.equal(
    unreadReport.partitions.reduce((sum, p) => sum + p.lag, 0),
    2,
  );
  assert.ok(unreadReport.partitions.every((p) => p.topic === work && p.committed === null));

  const unknown = await h.run(['lag', '--group', 'nobody']);
  assert.equal(unknown.code, 1, show(unknown));
  assert.match(unknown.stderr, /^mesh: no consumer group nobody under the prefix/);
});

test('tail shows failure headers, and records that are not mesh events raw with the reason', async (t) => {
  const h = await cliHarness(t);
  await initTopics(h);
  assert.equal((await h.run(['schemas', 'register'])).code, 0);
  const dlq = `${h.prefix}dlq`;
  const codec = new EventCodec(new ContractRegistry(h.config.registry), { maxBytes: 1_048_576 });
  const event = newEvent({
    type: 'io.mesh.task.requested',
    source: '/test',
    data: { input: { topic: 'x' } },
  });
  Object.assign(event, {
    meshfailure: 'timeout',
    meshfailuredetail: 'agent took longer than 30s',
    meshorigintopic: `${h.prefix}work.echo`,
    meshfailedby: 'worker/x',
  });
  const message = await codec.encode(event);
  const producer = disposable(t, new MeshProducer(h.kafka), (p) => p.disconnect());
  await producer.connect();
  await producer.send([
    { topic: dlq, key: 'plain', value: Buffer.from('not an event at all'), headers: {} },
    { topic: dlq, key: message.key, value: message.value, headers: message.headers },
  ]);

  const tailed = await h.run(['tail', 'dlq', '--from-beginning', '--json']);
  assert.equal(tailed.code, 0, show(tailed));
  const shown = jsonLines(tailed.stdout) as TailJson[];
  assert.equal(shown.length, 2, show(tailed));
  const raw = shown.find((l) => l.key === 'plain');
  assert.equal(raw?.event, undefined);
  assert.equal(raw?.error?.code, 'malformed_event');
  assert.equal(raw?.value, 'not an event at all');
  const dead = shown.find((l) => l.key === event.correlationid);
  assert.equal(dead?.event?.meshfailure, 'timeout');
  assert.equal(dead?.event?.meshorigintopic, `${h.prefix}work.echo`);
  assert.deepEqual(dead?.event?.data, { input: { topic: 'x' } });

  const text = await h.run(['tail', `${h.prefix}dlq`]);
  assert.equal(text.code, 0, show(text));
  assert.match(text.stdout, /RAW key=plain \(malformed_event: not a CloudEvent/);
  assert.match(
    text.stdout,
    /FAILURE timeout "agent took longer than 30s" by=worker\/x origin=\S+work\.echo/,
  );

  const empty = await h.run(['tail', 'work.echo', '--json']);
  assert.equal(empty.code, 0, show(empty));
  assert.equal(empty.stdout, '');
});

test('bad input: one clear line on stderr, exit 1, nothing on stdout', async (t) => {
  const h = await cliHarness(t);
  await initTopics(h);
  assert.equal((await h.run(['schemas', 'register'])).code, 0);
  const dir = await mkdtemp(join(tmpdir(), 'mesh-cli-input-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const notJson = join(dir, 'x.json');
  await writeFile(notJson, '{ "input": { ');

  for (const json of [[], ['--json']]) {
    const result = await h.run(['publish', notJson, ...json]);
    assertOneLineFailure(
      result,
      new RegExp(`^mesh: ${notJson.replace(/[./]/g, '\\$&')} is not valid JSON: `),
    );
  }
  assertOneLineFailure(
    await h.run(['publish', '-'], { input: '{"input":{},"budget":{"maxSteps":0}}' }),
    /^mesh: stdin is not a valid io\.mesh\.task\.requested: \/budget\/maxSteps must be >= 1$/,
  );
  assertOneLineFailure(
    await h.run(['publish', '-', '--json'], { input: '{"inputs":{}}' }),
    /^mesh: stdin is not a valid io\.mesh\.task\.requested: .*'input'/,
  );
  assertOneLineFailure(
    await h.run(['publish', '--raw', '-'], { input: '{"id":"x","data":{}}' }),
    /^mesh: stdin is not a valid CloudEvent: not a CloudEvent: no specversion$/,
  );
  assertOneLineFailure(
    await h.run(['publish', '--raw', '-'], {
      input: JSON.stringify({
        specversion: '1.0',
        id: 'x',
        source: '/s',
        type: 'io.mesh.task.requested',
        data: { input: 3 },
      }),
    }),
    /^mesh: stdin is not a valid io\.mesh\.task\.requested: \/input must be object$/,
  );
  assertOneLineFailure(
    await h.run(['publish', join(dir, 'missing.json')]),
    /^mesh: \S+missing\.json does not exist$/,
  );
  assertOneLineFailure(
    await h.run(['tail', 'nosuch']),
    /^mesh: topic nosuch does not exist on .*mesh topics init/,
  );
  assertOneLineFailure(
    await h.run(['tail', 'outputs', '--limit', 'x']),
    /^mesh: --limit must be a positive integer/,
  );
  assertOneLineFailure(
    await h.run(['publish', '--raw', 'x', '--template', 't']),
    /^mesh: --template does not go with --raw$/,
  );
  assertOneLineFailure(
    await h.run(['lag'], { env: { MESH_MAX_HOPS: 'many' } }),
    /^mesh: config: MESH_MAX_HOPS must be an integer/,
  );
});

test('a broker that refuses the login or whose CA is not trusted is named as a bad variable', async (t) => {
  const h = await cliHarness(t);
  const secure = await secureKafkaVars('scram-sha-512');
  assertOneLineFailure(
    await h.run(['lag'], { env: { ...secure, MESH_KAFKA_SASL_PASSWORD: 'wrong' } }),
    /^mesh: config: MESH_KAFKA_SASL_USERNAME or MESH_KAFKA_SASL_PASSWORD is wrong: /,
  );
  assertOneLineFailure(
    await h.run(['publish', '--raw', 'examples/structured-event.json'], {
      env: { ...secure, MESH_KAFKA_SSL_CA_FILE: await foreignCaFile(t) },
    }),
    /^mesh: config: MESH_KAFKA_SSL_CA_FILE must name the CA that signed the certificate of the broker/,
  );
  // And with the right settings the same commands go through the secure listener.
  const lag = await h.run(['lag', '--json'], { env: secure });
  assert.equal(lag.code, 0, show(lag));
});

test('mesh doctor: each connection tried with the settings; a refused one names its variable', async (t) => {
  const h = await cliHarness(t);
  const healthy = await h.run(['doctor', '--json']);
  assert.equal(healthy.code, 0, show(healthy));
  const report = JSON.parse(healthy.stdout) as {
    ok: boolean;
    checks: { name: string; ok: boolean; detail: string }[];
  };
  assert.equal(report.ok, true);
  assert.deepEqual(
    report.checks.map((c) => [c.name, c.ok]),
    [
      ['kafka', true],
      ['registry', true],
      ['redis', true],
    ],
  );
  assert.match(report.checks[0]?.detail ?? '', /connected; \d+ of \d+ topics under/);
  assert.match(report.checks[1]?.detail ?? '', /\d+ of 13 contracts registered/);

  // Managed-style endpoints, one setting wrong on Kafka and one on Redis; the registry is fine.
  const refused = await h.run(['doctor'], {
    env: {
      ...(await secureKafkaVars('scram-sha-512')),
      MESH_KAFKA_SASL_PASSWORD: 'wrong',
      ...(await secureRegistryVars()),
      ...(await secureRedisVars()),
      MESH_REDIS_TLS_CA_FILE: await foreignCaFile(t),
    },
  });
  assert.equal(refused.code, 1, show(refused));
  const rows = lines(refused.stdout);
  assert.match(
    rows.find((r) => r.startsWith('kafka')) ?? '',
    /FAILED +MESH_KAFKA_SASL_USERNAME or MESH_KAFKA_SASL_PASSWORD is wrong/,
  );
  assert.match(
    rows.find((r) => r.startsWith('registry')) ?? '',
    /ok +https:\/\/.*contracts registered/,
  );
  assert.match(
    rows.find((r) => r.startsWith('redis')) ?? '',
    /FAILED +MESH_REDIS_TLS_CA_FILE must name the CA/,
  );
  assert.equal(refused.stderr, 'mesh: kafka, redis failed\n');
});

test('an unreachable broker or registry is named, quickly', async (t) => {
  const h = await cliHarness(t);
  const broker = { MESH_KAFKA_BROKERS: '127.0.0.1:1' };
  for (const args of [
    ['topics', 'init'],
    ['lag', '--json'],
    ['tail', 'outputs'],
    ['publish', '--raw', 'examples/structured-event.json'],
  ]) {
    const result = await h.run(args, { env: broker });
    assertOneLineFailure(
      result,
      /^mesh: cannot reach Kafka at 127\.0\.0\.1:1 \(connect ECONNREFUSED 127\.0\.0\.1:1\)$/,
    );
    assert.ok(result.ms < 15_000, `${args.join(' ')} took ${result.ms} ms`);
  }
  const port = await closedPort();
  const registry = await h.run(['schemas', 'check'], {
    env: { MESH_SCHEMA_REGISTRY_URL: `http://127.0.0.1:${port}` },
  });
  assertOneLineFailure(
    registry,
    new RegExp(
      `^mesh: cannot reach the schema registry at http://127\\.0\\.0\\.1:${port} \\(.*ECONNREFUSED`,
    ),
  );
  assert.ok(registry.ms < 15_000);
});
