import assert from 'node:assert/strict';
import { test } from 'node:test';
import { buildStackEnv, formatEnvFile, parseEnvFile } from './env-file.ts';

const settings = {
  host: '127.0.0.1',
  ports: {
    kafka: 19092,
    kafkaController: 19093,
    kafkaSecure: 19094,
    registry: 18081,
    registryTls: 18082,
    redis: 16379,
    redisTls: 16380,
  },
};

test('buildStackEnv points at the loopback ports and the ccompat API', () => {
  assert.deepEqual(buildStackEnv(settings, 'abc123'), {
    MESH_KAFKA_BROKERS: '127.0.0.1:19092',
    MESH_SCHEMA_REGISTRY_URL: 'http://127.0.0.1:18081/apis/ccompat/v7',
    MESH_REDIS_URL: 'redis://:abc123@127.0.0.1:16379',
  });
});

test('the password is URL-encoded in MESH_REDIS_URL', () => {
  assert.equal(
    buildStackEnv(settings, 'a@b:c/d').MESH_REDIS_URL,
    'redis://:a%40b%3Ac%2Fd@127.0.0.1:16379',
  );
});

test('formatEnvFile and parseEnvFile round-trip', () => {
  const env = buildStackEnv(settings, 'pw');
  const text = formatEnvFile(env);
  assert.match(text, /^# /);
  assert.match(text, /\nMESH_KAFKA_BROKERS=127\.0\.0\.1:19092\n/);
  assert.deepEqual(parseEnvFile(text), env);
});

test('parseEnvFile skips comments and blank lines, keeps "=" inside values, and needs all three keys', () => {
  const text =
    '\n# c\nMESH_KAFKA_BROKERS = h:1\r\nMESH_SCHEMA_REGISTRY_URL=http://x/y?a=b\nMESH_REDIS_URL=redis://:p@h:2\n';
  assert.deepEqual(parseEnvFile(text), {
    MESH_KAFKA_BROKERS: 'h:1',
    MESH_SCHEMA_REGISTRY_URL: 'http://x/y?a=b',
    MESH_REDIS_URL: 'redis://:p@h:2',
  });
  assert.equal(parseEnvFile('MESH_KAFKA_BROKERS=h:1\n'), undefined);
});

test('the TLS endpoints: written and read back only when all their keys are there', () => {
  const env = buildStackEnv(settings, 'p@w', {
    caFile: '/s/ca.pem',
    kafkaUsername: 'mesh',
    kafkaPassword: 'x',
  });
  assert.equal(env.MESH_TEST_KAFKA_SASL_SSL_BROKERS, '127.0.0.1:19094');
  assert.equal(env.MESH_TEST_TLS_CA_FILE, '/s/ca.pem');
  assert.equal(env.MESH_TEST_REDIS_TLS_URL, 'rediss://:p%40w@127.0.0.1:16380');
  assert.equal(env.MESH_TEST_REGISTRY_TLS_URL, 'https://127.0.0.1:18082/apis/ccompat/v7');
  const text = formatEnvFile(env);
  assert.match(text, /\nMESH_TEST_KAFKA_SASL_PASSWORD=x\n/);
  assert.deepEqual(parseEnvFile(text), env);
  // An .env.mesh of a stack without the listener (or with part of it) parses to the three keys.
  const partial = text.replace(/^MESH_TEST_TLS_CA_FILE=.*\n/m, '');
  assert.deepEqual(parseEnvFile(partial), buildStackEnv(settings, 'p@w'));
});
