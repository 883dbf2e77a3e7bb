import { test } from 'node:test';
import assert from 'node:assert/strict';
import kafkajs from 'kafkajs';
import { crashNeedsAction, createKafka } from './client.ts';

const {
  KafkaJSConnectionError,
  KafkaJSGroupCoordinatorNotFound,
  KafkaJSNonRetriableError,
  KafkaJSNumberOfRetriesExceeded,
  KafkaJSProtocolError,
  KafkaJSSASLAuthenticationError,
} = kafkajs;

function sink(): {
  lines: { level: string; message: string }[];
  log: (level: 'error' | 'warn' | 'info' | 'debug', message: string) => void;
} {
  const lines: { level: string; message: string }[] = [];
  return { lines, log: (level, message) => lines.push({ level, message }) };
}

test('broker errors kafkajs retries are warnings, the answers of a rebalance news; the rest stay errors', () => {
  const { lines, log } = sink();
  const kafka = createKafka({ brokers: ['127.0.0.1:1'], clientId: 't', log });
  const logger = kafka.logger();
  // What kafkajs logs while a topic created a moment ago gets its leader, or a restarted broker
  // loads its group coordinator: both are retried, so neither is an error.
  logger.error('Response Metadata(key: 3, version: 6)', {
    error: 'This server is not the leader for that topic-partition',
  });
  logger.error('Response FindCoordinator(key: 10, version: 2)', {
    error: "The coordinator is loading and hence can't process requests for this group",
  });
  // A member joined or left: kafkajs rejoins, and a commit of the generation before fails until then.
  logger.error('Response Heartbeat(key: 12, version: 3)', {
    error: 'The group is rebalancing, so a rejoin is needed',
  });
  logger.error('Response OffsetCommit(key: 8, version: 5)', {
    error: 'Specified group generation id is not valid',
  });
  // The coordinator forgot this member (it missed its session timeout): kafkajs rejoins.
  logger.error('Response Heartbeat(key: 12, version: 3)', {
    error: 'The coordinator is not aware of this member',
  });
  // Not retried: an authorization failure, an unknown answer, and a non-response error.
  logger.error('Response Produce(key: 0, version: 7)', {
    error: 'Not authorized to access topics: [Topic authorization failed]',
  });
  logger.error('Response Produce(key: 0, version: 7)', { error: 'something kafkajs never said' });
  logger.error('Connection error: write after end', {
    error: 'This server is not the leader for that topic-partition',
  });
  assert.deepEqual(
    lines.map((l) => l.level),
    ['warn', 'warn', 'info', 'info', 'warn', 'error', 'error', 'error'],
  );
});

test('a broker that refuses every connection is logged once per kind of line, not at every retry', async () => {
  const lines: { level: string; message: string; extra: Record<string, unknown> }[] = [];
  const kafka = createKafka({
    brokers: ['127.0.0.1:1'],
    clientId: 't',
    log: (level, message, extra) => lines.push({ level, message, extra }),
  });
  // kafkajs connects five times here, and logs each refusal and each failed seed broker.
  const admin = kafka.admin({ retry: { retries: 4, initialRetryTime: 20, maxRetryTime: 50 } });
  await assert.rejects(admin.connect(), /ECONNREFUSED/);
  const refused = lines.filter((l) => /^Connection error: connect ECONNREFUSED/.test(l.message));
  assert.equal(refused.length, 1, lines.map((l) => l.message).join('\n'));
  // kafkajs tries again (another broker first): every rolling restart of a cluster does this.
  assert.equal(refused[0]?.level, 'warn');
  assert.equal(refused[0]?.extra.stack, undefined, 'no stack of kafkajs socket code');
  assert.equal(refused[0]?.extra.suppressed, undefined, 'the first says nothing was held back');
  const seed = lines.filter((l) => /^Failed to connect to seed broker/.test(l.message));
  assert.deepEqual(
    seed.map((l) => l.level),
    ['warn'],
  );
  assert.deepEqual(
    lines.filter((l) => l.level === 'error').map((l) => l.message),
    [],
    'a broker that is away is no error until a caller gives up on it',
  );
});

test('a broker the network cannot reach is a warning; a certificate it cannot trust stays an error', () => {
  const { lines, log } = sink();
  const logger = createKafka({ brokers: ['127.0.0.1:1'], clientId: 't', log }).logger();
  logger.error('Connection error: getaddrinfo ENOTFOUND kafka-0.kafka-headless', { stack: 's' });
  logger.error('Connection error: read ECONNRESET', { stack: 's' });
  logger.error('Connection timeout', {});
  logger.error('Connection error: self-signed certificate in certificate chain', { stack: 's' });
  logger.error('Connection error: write after end', {});
  // The member reports every crash itself (GroupConsumer's `crashed`), at the level it deserves.
  logger.error('Crash: KafkaJSNonRetriableError: Connection error: connect ECONNREFUSED', {
    groupId: 'g',
  });
  logger.error('Restarting the consumer in 200ms', { groupId: 'g' });
  // The producer says so before each retry of a send; one it gives up on fails the send.
  logger.error(
    'Failed to send messages: This server is not the leader for that topic-partition',
    {},
  );
  logger.error('Failed to send messages: Connection error: connect ECONNREFUSED 10.0.0.1:9092', {});
  assert.deepEqual(
    lines.map((l) => l.level),
    ['warn', 'warn', 'warn', 'error', 'error', 'debug', 'debug', 'warn', 'warn'],
  );
});

test('a crash needs someone only when waiting does not mend it', () => {
  // Built as kafkajs builds them (its typings omit the constructors' arguments).
  const make = (error: unknown, ...args: unknown[]): Error =>
    new (error as new (...a: unknown[]) => Error)(...args);
  const refused = make(
    KafkaJSConnectionError,
    'Connection error: connect ECONNREFUSED 1.2.3.4:9092',
  );
  const gaveUp = make(KafkaJSNonRetriableError, refused, { cause: refused });
  const loading = make(KafkaJSProtocolError, {
    message: "The coordinator is loading and hence can't process requests for this group",
    type: 'COORDINATOR_LOAD_IN_PROGRESS',
    code: 14,
    retriable: true,
  });
  const notAllowed = make(KafkaJSProtocolError, {
    message: 'Not authorized to access group: Group authorization failed',
    type: 'GROUP_AUTHORIZATION_FAILED',
    code: 30,
    retriable: false,
  });
  const retried = make(KafkaJSNumberOfRetriesExceeded, loading, { retryCount: 5, retryTime: 900 });
  const login = make(KafkaJSSASLAuthenticationError, 'SASL SCRAM-SHA-256 authentication failed');
  assert.equal(crashNeedsAction(gaveUp), false, 'every broker refused: it comes back');
  assert.equal(crashNeedsAction(retried), false, 'a coordinator that loads: it comes back');
  assert.equal(crashNeedsAction(make(KafkaJSGroupCoordinatorNotFound, 'no coordinator')), false);
  assert.equal(crashNeedsAction(notAllowed), true, 'an ACL does not change by waiting');
  assert.equal(crashNeedsAction(login), true);
  assert.equal(crashNeedsAction(new TypeError('x is undefined')), true, "the mesh's own bug");
});
