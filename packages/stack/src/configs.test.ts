import assert from 'node:assert/strict';
import { test } from 'node:test';
import { newClusterId, renderKafkaLog4j, renderServerProperties } from './kafka.ts';
import { renderRedisConf } from './redis.ts';
import { registrySystemProperties } from './registry.ts';

function properties(text: string): Map<string, string> {
  const map = new Map<string, string>();
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const eq = line.indexOf('=');
    map.set(line.slice(0, eq), line.slice(eq + 1));
  }
  return map;
}

test('server.properties: combined KRaft node on loopback, single-replica internals, no auto-creation', () => {
  const p = properties(
    renderServerProperties({
      host: '127.0.0.1',
      port: 19092,
      controllerPort: 19093,
      logDir: '/s/data',
    }),
  );
  assert.equal(p.get('process.roles'), 'broker,controller');
  assert.equal(p.get('controller.quorum.voters'), '1@127.0.0.1:19093');
  assert.equal(p.get('listeners'), 'PLAINTEXT://127.0.0.1:19092,CONTROLLER://127.0.0.1:19093');
  assert.equal(p.get('advertised.listeners'), 'PLAINTEXT://127.0.0.1:19092');
  assert.equal(p.get('log.dirs'), '/s/data');
  assert.equal(p.get('offsets.topic.replication.factor'), '1');
  assert.equal(p.get('transaction.state.log.replication.factor'), '1');
  assert.equal(p.get('transaction.state.log.min.isr'), '1');
  assert.equal(p.get('group.initial.rebalance.delay.ms'), '0');
  assert.equal(p.get('auto.create.topics.enable'), 'false');
  assert.equal(p.get('num.partitions'), '3');
});

test('server.properties: a SASL_SSL listener beside the plaintext one, with PLAIN and SCRAM for one user', () => {
  const p = properties(
    renderServerProperties({
      host: '127.0.0.1',
      port: 19092,
      controllerPort: 19093,
      logDir: '/s/data',
      secure: { port: 19094, keystoreFile: '/s/tls/server.pem', username: 'mesh', password: 'pw' },
    }),
  );
  assert.equal(
    p.get('listeners'),
    'PLAINTEXT://127.0.0.1:19092,CONTROLLER://127.0.0.1:19093,SASL_SSL://127.0.0.1:19094',
  );
  assert.equal(
    p.get('advertised.listeners'),
    'PLAINTEXT://127.0.0.1:19092,SASL_SSL://127.0.0.1:19094',
  );
  assert.equal(
    p.get('listener.security.protocol.map'),
    'CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,SASL_SSL:SASL_SSL',
  );
  // The brokers and the controller still talk in plaintext: only clients use the secure listener.
  assert.equal(p.get('inter.broker.listener.name'), 'PLAINTEXT');
  assert.equal(p.get('listener.name.sasl_ssl.ssl.keystore.type'), 'PEM');
  assert.equal(p.get('listener.name.sasl_ssl.ssl.keystore.location'), '/s/tls/server.pem');
  assert.equal(
    p.get('listener.name.sasl_ssl.sasl.enabled.mechanisms'),
    'PLAIN,SCRAM-SHA-256,SCRAM-SHA-512',
  );
  assert.match(
    p.get('listener.name.sasl_ssl.plain.sasl.jaas.config') ?? '',
    /PlainLoginModule required user_mesh="pw";$/,
  );
  for (const scram of ['scram-sha-256', 'scram-sha-512'])
    assert.match(
      p.get(`listener.name.sasl_ssl.${scram}.sasl.jaas.config`) ?? '',
      /ScramLoginModule required;$/,
    );
});

test('log4j config sends everything to stdout', () => {
  assert.match(renderKafkaLog4j(), /^log4j\.rootLogger=INFO, stdout$/m);
});

test('cluster ids are 22 URL-safe base64 characters and never start with "-"', () => {
  for (let i = 0; i < 200; i += 1) assert.match(newClusterId(), /^[A-Za-z0-9_][A-Za-z0-9_-]{21}$/);
});

test('redis.conf: loopback, password, no persistence, foreground', () => {
  const conf = renderRedisConf({
    host: '127.0.0.1',
    port: 16379,
    password: 'pw',
    dir: '/s/redis',
  }).split('\n');
  for (const line of [
    'bind 127.0.0.1',
    'port 16379',
    'requirepass pw',
    'daemonize no',
    'save ""',
    'appendonly yes',
    'appendfsync everysec',
    'dir /s/redis',
  ]) {
    assert.ok(conf.includes(line), line);
  }
});

test('redis.conf: a TLS port beside the plaintext one, password logins, no client certificates', () => {
  const conf = renderRedisConf({
    host: '127.0.0.1',
    port: 16379,
    password: 'pw',
    dir: '/s/redis',
    tls: { port: 16380, certFile: '/s/c.pem', keyFile: '/s/k.pem', caFile: '/s/ca.pem' },
  }).split('\n');
  for (const line of [
    'port 16379',
    'tls-port 16380',
    'tls-cert-file /s/c.pem',
    'tls-key-file /s/k.pem',
    'tls-ca-cert-file /s/ca.pem',
    'tls-auth-clients no',
    'requirepass pw',
  ])
    assert.ok(conf.includes(line), line);
});

test('Apicurio binds loopback, keeps Confluent-style content ids and keeps its schemas on disk', () => {
  const props = registrySystemProperties('127.0.0.1', 18081, '/s/registry/data');
  assert.equal(props['quarkus.http.host'], '127.0.0.1');
  // On disk, in the component's data directory: a restart keeps the schemas and their ids.
  assert.equal(props['apicurio.datasource.url'], 'jdbc:h2:file:/s/registry/data/registry');
  assert.equal(props['quarkus.http.port'], '18081');
  assert.equal(props['apicurio.ccompat.legacy-id-mode.enabled'], 'false');
});

test('Apicurio serves HTTPS beside HTTP with the certificate it is given', () => {
  const props = registrySystemProperties('127.0.0.1', 18081, '/s/data', {
    port: 18082,
    certFile: '/s/c.pem',
    keyFile: '/s/k.pem',
  });
  assert.equal(props['quarkus.http.port'], '18081');
  assert.equal(props['quarkus.http.ssl-port'], '18082');
  assert.equal(props['quarkus.http.ssl.certificate.files'], '/s/c.pem');
  assert.equal(props['quarkus.http.ssl.certificate.key-files'], '/s/k.pem');
  assert.equal(props['quarkus.http.insecure-requests'], 'enabled');
  assert.equal(
    registrySystemProperties('127.0.0.1', 18081, '/s/data')['quarkus.http.ssl-port'],
    undefined,
  );
});
