/**
 * Unit tests of the CLI's pure parts: the command grammar, topic short names, value parsers, the
 * configuration's .env.mesh fallback, and the pieces of tail, lag, task and start that format or decide.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import {
  expandTopic,
  parseAgents,
  parseCommandLine,
  parseInterval,
  parsePositiveInt,
  type ParsedCommand,
} from './args.ts';
import { cliEnvironment, loadCliConfig, parseEnvLines } from './config.ts';
import { CliError, UsageError, errorLine, reasonOf } from './errors.ts';
import { decodeSubscription } from './groups.ts';
import { meshGroups, renderLag } from './commands/lag.ts';
import { decodeRecord, renderLine } from './commands/tail.ts';
import { chainLines } from './commands/task.ts';
import { serviceEnv } from './commands/start.ts';
import { RestartPolicy, shortenLogLine } from './supervisor.ts';
import { MeshError } from '@mesh/errors';

function parsed(argv: string[]): ParsedCommand {
  const line = parseCommandLine(argv);
  assert.ok(!('help' in line), `expected a command, got help for ${argv.join(' ')}`);
  return line;
}

function usageError(argv: string[]): string {
  try {
    parseCommandLine(argv);
  } catch (error) {
    assert.ok(error instanceof UsageError, String(error));
    return error.message;
  }
  assert.fail(`accepted ${argv.join(' ')}`);
}

describe('the command line', () => {
  test('commands with subcommands, options and positionals', () => {
    const tail = parsed(['tail', 'outputs', '--follow', '--limit', '5', '--json']);
    assert.equal(tail.spec.name, 'tail');
    assert.deepEqual(tail.positionals, ['outputs']);
    assert.equal(tail.values.follow, true);
    assert.equal(tail.values.limit, '5');
    assert.equal(tail.json, true);

    const init = parsed(['topics', 'init', '--agents', 'a,b']);
    assert.equal(init.spec.name, 'topics init');
    assert.equal(init.values.agents, 'a,b');
    assert.equal(init.json, false);

    const discard = parsed(['dlq', 'discard', 'abc', '--reason', 'not needed']);
    assert.equal(discard.spec.name, 'dlq discard');
    assert.deepEqual(discard.positionals, ['abc']);

    const stdin = parsed(['publish', '-', '--template', 'research']);
    assert.deepEqual(stdin.positionals, ['-']);
    assert.equal(stdin.values.template, 'research');

    const short = parsed(['tail', 'dlq', '-f', '-n', '3']);
    assert.equal(short.values.follow, true);
    assert.equal(short.values.limit, '3');
  });

  test('help: no arguments, --help, help <command>, <command> --help', () => {
    for (const argv of [[], ['--help'], ['-h'], ['help']]) {
      const line = parseCommandLine(argv);
      assert.ok('help' in line && line.help.includes('usage: mesh <command>'), argv.join(' '));
    }
    const tailHelp = parseCommandLine(['tail', '--help']);
    assert.ok('help' in tailHelp && tailHelp.help.startsWith('usage: mesh tail <topic>'));
    const dlqHelp = parseCommandLine(['help', 'dlq']);
    assert.ok('help' in dlqHelp && dlqHelp.help.includes('mesh dlq replay'));
  });

  test('bad command lines are one clear line each', () => {
    assert.match(usageError(['frobnicate']), /^unknown command "frobnicate"/);
    assert.match(usageError(['topics']), /needs a subcommand: init/);
    assert.match(
      usageError(['schemas', 'drop']),
      /unknown command "mesh schemas drop".*register, check/,
    );
    assert.match(usageError(['tail']), /^missing argument; usage: mesh tail/);
    assert.match(usageError(['tail', 'a', 'b']), /^unexpected argument "b"/);
    assert.match(
      usageError(['tail', 'x', '--bogus']),
      /^unknown option --bogus \(mesh tail --help\)/,
    );
    assert.match(usageError(['tail', 'x', '--limit']), /^option --limit needs a value/);
    assert.match(usageError(['lag', '--watch=yes']), /^option --watch takes no value/);
    for (const argv of [['frobnicate'], ['tail', 'x', '--bogus']])
      assert.equal(usageError(argv).includes('\n'), false);
  });
});

describe('topic short names', () => {
  test('names of the contract go under the prefix', () => {
    assert.equal(expandTopic('mesh.', 'outputs'), 'mesh.outputs');
    assert.equal(expandTopic('mesh.', 'dlq'), 'mesh.dlq');
    assert.equal(expandTopic('mesh.', 'work.echo'), 'mesh.work.echo');
    assert.equal(expandTopic('mesh.', 'retry.30s'), 'mesh.retry.30s');
    assert.equal(expandTopic('t-1.', 'requests'), 't-1.requests');
    assert.equal(expandTopic('', 'requests'), 'requests');
  });

  test('full names and other topics are taken as they are', () => {
    assert.equal(expandTopic('mesh.', 'mesh.outputs'), 'mesh.outputs');
    assert.equal(expandTopic('mesh.', 'audit-log'), 'audit-log');
    assert.equal(expandTopic('mesh.', ' outputs '), 'mesh.outputs');
    assert.throws(() => expandTopic('mesh.', ' '), UsageError);
  });
});

describe('value parsers', () => {
  test('intervals: durations or seconds, with a floor', () => {
    assert.equal(parseInterval('2s', '--interval'), 2_000);
    assert.equal(parseInterval('500ms', '--interval'), 500);
    assert.equal(parseInterval('1m', '--interval'), 60_000);
    assert.equal(parseInterval('3', '--interval'), 3_000);
    assert.equal(parseInterval('0.5', '--interval'), 500);
    assert.throws(() => parseInterval('fast', '--interval'), /--interval must be a duration/);
    assert.throws(() => parseInterval('10ms', '--interval'), /at least 200ms/);
  });

  test('positive integers and agent lists', () => {
    assert.equal(parsePositiveInt('7', '--limit'), 7);
    assert.equal(parsePositiveInt('500', '--limit', 500), 500);
    assert.throws(
      () => parsePositiveInt('501', '--limit', 500),
      /^UsageError: --limit is at most 500$/,
    );
    for (const bad of ['0', '-1', '1.5', 'x', ''])
      assert.throws(() => parsePositiveInt(bad, '--limit'), /--limit must be a positive integer/);
    assert.deepEqual(parseAgents('echo, research,echo'), ['echo', 'research']);
    assert.throws(() => parseAgents('Echo'), /"Echo" is not an agent name/);
    assert.throws(() => parseAgents(','), /names no agent/);
  });
});

describe('configuration', () => {
  const stack = {
    MESH_KAFKA_BROKERS: '127.0.0.1:19092',
    MESH_SCHEMA_REGISTRY_URL: 'http://127.0.0.1:18081/apis/ccompat/v7',
    MESH_REDIS_URL: 'redis://:pw@127.0.0.1:16379',
  };

  test('.env.mesh fills in the stack variables the environment leaves unset', () => {
    const file = parseEnvLines(
      `# written by the stack\n${Object.entries(stack)
        .map(([k, v]) => `${k}=${v}`)
        .join('\n')}\n`,
    );
    assert.deepEqual(file, stack);
    const mixed = cliEnvironment({ MESH_KAFKA_BROKERS: 'other:9092', PATH: '/bin' }, file);
    assert.equal(mixed.env.MESH_KAFKA_BROKERS, 'other:9092');
    assert.equal(mixed.env.MESH_REDIS_URL, stack.MESH_REDIS_URL);
    assert.deepEqual(mixed.fromEnvFile, ['MESH_SCHEMA_REGISTRY_URL', 'MESH_REDIS_URL']);
    assert.equal('PATH' in mixed.env, false);
  });

  test('the stack script and harness variables are let through, typos are refused', () => {
    const config = loadCliConfig(
      {
        ...stack,
        MESH_STACK_KAFKA_PORT: '19092',
        MESH_TEST_NO_DOCKER: '1',
        MESH_TOPIC_PREFIX: 'x.',
      },
      null,
    );
    assert.equal(config.mesh.service, 'cli');
    assert.equal(config.mesh.topicPrefix, 'x.');
    assert.equal(config.orchestratorUrl, 'http://127.0.0.1:8080');
    assert.equal(config.dlqUrl, 'http://127.0.0.1:8084');
    assert.throws(
      () => loadCliConfig({ ...stack, MESH_TOPIC_PREFX: 'x.' }, null),
      (error: unknown) =>
        error instanceof CliError &&
        /^config: MESH_TOPIC_PREFX is not a variable/.test(error.message),
    );
  });

  test('missing stack addresses say how to get a stack, on one line', () => {
    assert.throws(
      () => loadCliConfig({}, null),
      (error: unknown) =>
        error instanceof CliError &&
        error.message.includes('MESH_KAFKA_BROKERS is required') &&
        error.message.includes('npm run stack -- up') &&
        !error.message.includes('\n'),
    );
  });

  test('service URLs lose their trailing slash', () => {
    const config = loadCliConfig(
      { ...stack, MESH_ORCHESTRATOR_URL: 'http://orch:9000/', MESH_DLQ_URL: 'https://dlq/' },
      null,
    );
    assert.equal(config.orchestratorUrl, 'http://orch:9000');
    assert.equal(config.dlqUrl, 'https://dlq');
  });
});

describe('error lines', () => {
  test('the cause of fetch failures and kafkajs wrappers is shown, on one line', () => {
    const refused = new Error('connect ECONNREFUSED 127.0.0.1:8080');
    assert.equal(reasonOf(new TypeError('fetch failed', { cause: refused })), refused.message);
    assert.equal(
      reasonOf(
        new MeshError('kafka_unavailable', 'admin could not connect: Connection error: boom'),
      ),
      'boom',
    );
    assert.equal(errorLine(new CliError('two\nlines')), 'two; lines');
    assert.equal(
      errorLine(new MeshError('not_found', 'token=abc123 missing')),
      'not_found: token=*** missing',
    );
  });
});

describe('tail', () => {
  const base = {
    topic: 'm.dlq',
    partition: 2,
    offset: '7',
    timestamp: String(Date.UTC(2025, 0, 1)),
  };

  test('a record that is not a CloudEvent is shown raw with the reason', async () => {
    const line = await decodeRecord(
      { ...base, key: Buffer.from('k'), value: Buffer.from('hello\n'), headers: {} },
      undefined,
      { intake: false },
    );
    assert.equal(line.event, undefined);
    assert.equal(line.error?.code, 'malformed_event');
    assert.equal(line.value, 'hello\n');
    assert.equal(line.key, 'k');
    assert.match(
      renderLine(line),
      /^p2@7 \S+ RAW key=k \(malformed_event: not a CloudEvent.*value=hello$/,
    );
  });

  test('without the registry an event is shown unvalidated, failure headers and all', async () => {
    const value = Buffer.concat([Buffer.from([0, 0, 0, 0, 9]), Buffer.from('{"x":1}')]);
    const line = await decodeRecord(
      {
        ...base,
        key: null,
        value,
        headers: {
          ce_specversion: Buffer.from('1.0'),
          ce_id: Buffer.from('e1'),
          ce_source: Buffer.from('/t'),
          ce_type: Buffer.from('io.mesh.subtask.assigned'),
          ce_hopcount: Buffer.from('3'),
          ce_agent: Buffer.from('echo'),
          ce_meshfailure: Buffer.from('timeout'),
          ce_meshfailuredetail: Buffer.from('took too long'),
          ce_meshorigintopic: Buffer.from('m.work.echo'),
          'content-type': Buffer.from('application/json'),
        },
      },
      undefined,
      { intake: false },
    );
    assert.equal(line.schemaId, 9);
    assert.deepEqual(line.event?.data, { x: 1 });
    assert.equal(line.error?.code, 'unvalidated');
    const text = renderLine(line);
    for (const part of [
      'io.mesh.subtask.assigned',
      'id=e1',
      'key=∅',
      'hop=3',
      'agent=echo',
      'FAILURE timeout "took too long"',
      'origin=m.work.echo',
      'data={"x":1}',
    ])
      assert.ok(text.includes(part), `${part} in ${text}`);
  });
});

describe('lag', () => {
  test('the mesh groups are those under the prefix, without tail groups', () => {
    const all = ['m.worker.echo', 'm.cli.tail.1234', 'other.group', 'm.aggregator'];
    assert.deepEqual(meshGroups(all, 'm.'), ['m.aggregator', 'm.worker.echo']);
    assert.deepEqual(meshGroups(all, 'm.', 'worker.echo'), ['m.worker.echo']);
    assert.deepEqual(meshGroups(all, 'm.', 'm.aggregator'), ['m.aggregator']);
  });

  test('the table shows every partition and the total', () => {
    const lines = renderLag({
      at: new Date().toISOString(),
      prefix: 'm.',
      groups: ['m.a', 'm.idle'],
      unread: [{ topic: 'm.work.x', agent: 'x', group: 'm.worker.x' }],
      partitions: [
        {
          group: 'm.a',
          topic: 'm.requests',
          partition: 0,
          committed: null,
          end: 4,
          lag: 4,
          lagSeconds: 12.3,
        },
        {
          group: 'm.a',
          topic: 'm.requests',
          partition: 1,
          committed: 2,
          end: 2,
          lag: 0,
          lagSeconds: 0,
        },
        {
          group: 'm.worker.x',
          topic: 'm.work.x',
          partition: 0,
          committed: null,
          end: 3,
          lag: 3,
          lagSeconds: 40,
        },
      ],
    });
    assert.match(lines[0] ?? '', /^GROUP\s+TOPIC\s+PARTITION\s+COMMITTED\s+END\s+LAG\s+LAG\(s\)$/);
    assert.match(lines[1] ?? '', /^m\.a\s+m\.requests\s+0\s+-\s+4\s+4\s+12\.3$/);
    assert.ok(lines.includes('no members and no commits: m.idle'));
    assert.ok(
      lines.includes(
        'nothing reads m.work.x (no group m.worker.x): 3 events waiting; start a worker that hosts x',
      ),
    );
    assert.equal(lines.at(-1), '2 groups, total lag 7');
  });

  test('a consumer subscription names its topics', () => {
    const topics = ['m.requests', 'm.stages'];
    const parts = [Buffer.from([0, 1]), Buffer.alloc(4)];
    parts[1]?.writeInt32BE(topics.length);
    for (const topic of topics) {
      const length = Buffer.alloc(2);
      length.writeInt16BE(topic.length);
      parts.push(length, Buffer.from(topic));
    }
    parts.push(Buffer.from([0xff, 0xff, 0xff, 0xff]));
    assert.deepEqual(decodeSubscription(Buffer.concat(parts)), topics);
    assert.deepEqual(decodeSubscription(Buffer.from([0, 1, 0])), []);
  });
});

describe('task', () => {
  test('the causal chain is a tree by causation id', () => {
    const lines = chainLines([
      { id: 'r', type: 'io.mesh.task.requested', hopcount: 0 },
      { id: 'a', type: 'io.mesh.subtask.assigned', causationid: 'r', agent: 'echo', hopcount: 1 },
      { id: 'c', type: 'io.mesh.subtask.completed', causationid: 'a', hopcount: 2 },
      { id: 'x', type: 'io.mesh.task.cancel', causationid: 'elsewhere' },
    ]);
    assert.equal(lines.length, 4);
    assert.match(lines[0] ?? '', /^\s+io\.mesh\.task\.requested {2}hop 0$/);
    assert.match(lines[1] ?? '', /^\s+ {2}io\.mesh\.subtask\.assigned {2}→ echo, hop 1$/);
    assert.match(lines[2] ?? '', /^\s+ {4}io\.mesh\.subtask\.completed/);
    assert.match(lines[3] ?? '', /^\s+io\.mesh\.task\.cancel$/);
  });
});

describe('start', () => {
  test('a crashing service is restarted at most 5 times a minute', () => {
    const policy = new RestartPolicy(5, 60_000);
    for (let i = 0; i < 5; i++) assert.equal(policy.allow(1_000 * i), true);
    assert.equal(policy.allow(10_000), false);
    assert.equal(policy.allow(59_999), false);
    assert.equal(policy.allow(60_000), true, 'the first restart left the window');
  });

  test('pino lines are shortened to time, level and message', () => {
    const line = JSON.stringify({
      level: 30,
      time: '2025-01-01T10:20:30.456Z',
      pid: 1,
      hostname: 'h',
      service: 'worker',
      name: 'worker',
      msg: 'worker started',
      port: 8082,
    });
    const short = shortenLogLine(line);
    assert.match(short, /^\d\d:\d\d:\d\d\.456 INFO {2}worker started port=8082$/);
    assert.equal(shortenLogLine('plain text'), 'plain text');
    assert.equal(shortenLogLine('{not json'), '{not json');
  });

  test('services get the stack, their port and info logs, not the stack script variables', () => {
    const env = serviceEnv(
      { PATH: '/bin', MESH_STACK_KAFKA_PORT: '1', MESH_TOPIC_PREFIX: 'x.' },
      {
        MESH_KAFKA_BROKERS: 'k:1',
        MESH_SCHEMA_REGISTRY_URL: 'http://r',
        MESH_REDIS_URL: 'redis://r',
      },
      8082,
    );
    assert.equal(env.MESH_HTTP_PORT, '8082');
    assert.equal(env.MESH_LOG_LEVEL, 'info');
    assert.equal(env.MESH_TOPIC_PREFIX, 'x.');
    assert.equal(env.MESH_KAFKA_BROKERS, 'k:1');
    assert.equal('MESH_STACK_KAFKA_PORT' in env, false);
    assert.equal(env.PATH, '/bin');
  });
});
