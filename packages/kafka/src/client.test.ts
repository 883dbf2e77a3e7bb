import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createKafka } from './client.ts';

function sink(): {
  lines: { level: string; message: string }[];
  log: (level: 'error' | 'warn' | 'info' | 'debug', message: string) => void;
} {
  const lines: { level: string; message: string }[] = [];
  return { lines, log: (level, message) => lines.push({ level, message }) };
}

test('broker errors kafkajs retries or answers by rejoining are warnings; the rest stay errors', () => {
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
  // A member joined or left: kafkajs rejoins.
  logger.error('Response Heartbeat(key: 12, version: 3)', {
    error: 'The group is rebalancing, so a rejoin is needed',
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
    ['warn', 'warn', 'warn', 'error', 'error', 'error'],
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
  assert.equal(refused[0]?.level, 'error');
  assert.equal(refused[0]?.extra.suppressed, undefined, 'the first says nothing was held back');
  assert.equal(lines.filter((l) => /^Failed to connect to seed broker/.test(l.message)).length, 1);
});
