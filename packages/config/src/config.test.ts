// node:test's test() and describe() return promises the runner itself awaits.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { isMeshError, type MeshError } from '@mesh/errors';
import {
  formatDuration,
  loadConfig,
  parseDuration,
  topicName,
  variables,
  type LoadOptions,
} from './index.ts';

const required = {
  MESH_KAFKA_BROKERS: 'kafka:9092',
  MESH_SCHEMA_REGISTRY_URL: 'http://registry:8081',
  MESH_REDIS_URL: 'redis://cache:6379',
};
const options: LoadOptions = { service: 'worker', defaultHttpPort: 8082 };

/** A file of one (made-up) PEM certificate, whatever its path. */
function pemOf(path: string): string {
  return `-----BEGIN CERTIFICATE-----\n${path}\n-----END CERTIFICATE-----\n`;
}

/** Runs loadConfig on the required variables plus `extra` and returns the config_invalid error. */
function failure(extra: Record<string, string>, readFile?: (path: string) => string): MeshError {
  try {
    loadConfig(
      { ...required, ...extra },
      readFile === undefined ? options : { ...options, readFile },
    );
  } catch (error) {
    assert.ok(isMeshError(error), 'throws a MeshError');
    assert.equal(error.code, 'config_invalid');
    assert.equal(error.retryable, false);
    return error;
  }
  assert.fail(`loadConfig accepted ${JSON.stringify(extra)}`);
}

function lines(error: MeshError): string[] {
  return error.message.split('\n');
}

describe('loadConfig defaults', () => {
  test('only the three required variables give the documented defaults', () => {
    const config = loadConfig(required, options);
    assert.equal(config.service, 'worker');
    assert.deepEqual(config.kafka, { brokers: ['kafka:9092'], clientId: 'worker' });
    assert.deepEqual(config.registry, { url: 'http://registry:8081' });
    assert.deepEqual(config.redis, { url: 'redis://cache:6379' });
    assert.equal(config.topicPrefix, 'mesh.');
    assert.equal(config.partitions, 6);
    assert.equal(config.replicationFactor, 1);
    assert.equal(config.createTopics, true);
    assert.equal(config.maxHops, 10);
    assert.equal(config.maxRevisits, 2);
    assert.equal(config.maxAttempts, 3);
    assert.deepEqual(config.retryTiers, [
      { name: '5s', delayMs: 5_000 },
      { name: '30s', delayMs: 30_000 },
      { name: '5m', delayMs: 300_000 },
    ]);
    assert.equal(config.idempotencyTtlMs, 7 * 86_400_000);
    assert.equal(config.taskRetentionMs, 7 * 86_400_000, 'task state: as long as done markers');
    assert.equal(config.leaseTtlMs, 30_000);
    assert.equal(config.concurrency, 1_000);
    assert.equal(config.partitionConcurrency, 200);
    assert.equal(config.maxEventBytes, 1_048_576);
    assert.equal(config.shutdownTimeoutMs, 30_000);
    assert.equal(config.apiToken, undefined);
    assert.deepEqual(config.http, { host: '0.0.0.0', port: 8082, publishTimeoutMs: 10_000 });
    assert.equal(config.logLevel, 'info');
    assert.equal(config.lagIntervalMs, 5_000);
    for (const [name, value] of Object.entries(required)) assert.equal(config.env[name], value);
    assert.equal(
      config.env.MESH_MAX_HOPS,
      '10',
      'env answers with the declared default of a variable not set',
    );
    assert.equal(config.env.MESH_LLM_RPM, '0');
    assert.ok(Object.isFrozen(config.env));
  });

  test('ignores variables outside MESH_ and empty MESH_ values', () => {
    const config = loadConfig(
      { ...required, PATH: '/bin', HOME: '/root', MESH_LOG_LEVEL: '' },
      options,
    );
    assert.equal(config.logLevel, 'info');
    assert.equal('PATH' in config.env, false);
  });

  test('reads overrides, trims a trailing slash of the registry URL and splits brokers', () => {
    const config = loadConfig(
      {
        ...required,
        MESH_KAFKA_BROKERS: 'k1:9092, k2:9093',
        MESH_SCHEMA_REGISTRY_URL: 'https://registry:8081//',
        MESH_TOPIC_PREFIX: 'dev.',
        MESH_MAX_HOPS: '25',
        MESH_CREATE_TOPICS: 'no',
        MESH_HTTP_PORT: '9000',
        MESH_API_TOKEN: 'tok',
        MESH_LEASE_TTL: '2m',
        MESH_KAFKA_SASL_MECHANISM: 'scram-sha-512',
        MESH_KAFKA_SASL_USERNAME: 'u',
        MESH_KAFKA_SASL_PASSWORD: 'p',
      },
      options,
    );
    assert.deepEqual(config.kafka.brokers, ['k1:9092', 'k2:9093']);
    assert.equal(config.registry.url, 'https://registry:8081');
    assert.equal(config.topicPrefix, 'dev.');
    assert.equal(config.maxHops, 25);
    assert.equal(config.createTopics, false);
    assert.equal(config.http.port, 9000);
    assert.equal(config.apiToken, 'tok');
    assert.equal(config.leaseTtlMs, 120_000);
    assert.deepEqual(config.kafka.sasl, {
      mechanism: 'scram-sha-512',
      username: 'u',
      password: 'p',
    });
  });

  test('MESH_TASK_RETENTION: its own duration, else MESH_IDEMPOTENCY_TTL; a bad one named', () => {
    assert.equal(
      loadConfig({ ...required, MESH_IDEMPOTENCY_TTL: '2d' }, options).taskRetentionMs,
      2 * 86_400_000,
    );
    const config = loadConfig(
      { ...required, MESH_IDEMPOTENCY_TTL: '2d', MESH_TASK_RETENTION: '6h' },
      options,
    );
    assert.equal(config.taskRetentionMs, 6 * 3_600_000);
    assert.equal(config.idempotencyTtlMs, 2 * 86_400_000);
    assert.deepEqual(lines(failure({ MESH_TASK_RETENTION: '500ms' })), [
      'MESH_TASK_RETENTION must be a duration such as 500ms, 30s, 5m, 1h, 7d, from 1s to 90d, got "500ms"',
    ]);
  });

  test('MESH_KAFKA_SSL builds the TLS options, reading the CA file through readFile', () => {
    const config = loadConfig(
      {
        ...required,
        MESH_KAFKA_SSL: 'true',
        MESH_KAFKA_SSL_CA_FILE: '/etc/ca.pem',
        MESH_KAFKA_SSL_REJECT_UNAUTHORIZED: 'false',
      },
      { ...options, readFile: pemOf },
    );
    assert.deepEqual(config.kafka.ssl, { rejectUnauthorized: false, ca: [pemOf('/etc/ca.pem')] });
  });

  test('MESH_SCHEMA_REGISTRY_CA_FILE gives an https registry its CA', () => {
    const config = loadConfig(
      {
        ...required,
        MESH_SCHEMA_REGISTRY_URL: 'https://registry.example:8081',
        MESH_SCHEMA_REGISTRY_CA_FILE: '/etc/registry-ca.pem',
      },
      { ...options, readFile: pemOf },
    );
    assert.deepEqual(config.registry, {
      url: 'https://registry.example:8081',
      ca: [pemOf('/etc/registry-ca.pem')],
    });
  });

  test('MESH_REDIS_TLS_CA_FILE gives a rediss:// connection its CA', () => {
    const config = loadConfig(
      {
        ...required,
        MESH_REDIS_URL: 'rediss://:pw@redis.example:6380',
        MESH_REDIS_TLS_CA_FILE: '/etc/redis-ca.pem',
      },
      { ...options, readFile: pemOf },
    );
    assert.deepEqual(config.redis, {
      url: 'rediss://:pw@redis.example:6380',
      ca: [pemOf('/etc/redis-ca.pem')],
    });
  });

  test('retry tiers are parsed in the order given', () => {
    const config = loadConfig({ ...required, MESH_RETRY_TIERS: '1m,500ms,2h,10s' }, options);
    assert.deepEqual(config.retryTiers, [
      { name: '1m', delayMs: 60_000 },
      { name: '500ms', delayMs: 500 },
      { name: '2h', delayMs: 7_200_000 },
      { name: '10s', delayMs: 10_000 },
    ]);
  });

  test('topicName applies the prefix', () => {
    assert.equal(topicName({ topicPrefix: 'mesh.' }, 'requests'), 'mesh.requests');
    assert.equal(topicName({ topicPrefix: '' }, 'dlq'), 'dlq');
  });

  test('every declared variable name is MESH_ prefixed', () => {
    for (const name of Object.keys(variables)) assert.match(name, /^MESH_[A-Z0-9_]+$/);
  });
});

describe('loadConfig refuses bad values with one line per bad variable', () => {
  const cases: [string, Record<string, string>, string][] = [
    ['non-integer hop limit', { MESH_MAX_HOPS: 'abc' }, 'MESH_MAX_HOPS'],
    ['hop limit below range', { MESH_MAX_HOPS: '0' }, 'MESH_MAX_HOPS'],
    ['hop limit above range', { MESH_MAX_HOPS: '1001' }, 'MESH_MAX_HOPS'],
    ['fractional attempts', { MESH_MAX_ATTEMPTS: '1.5' }, 'MESH_MAX_ATTEMPTS'],
    ['bad retry tier', { MESH_RETRY_TIERS: '5x' }, 'MESH_RETRY_TIERS'],
    ['repeated retry tier', { MESH_RETRY_TIERS: '5s,5s' }, 'MESH_RETRY_TIERS'],
    ['broker without port', { MESH_KAFKA_BROKERS: 'nohost' }, 'MESH_KAFKA_BROKERS'],
    ['redis URL with the wrong scheme', { MESH_REDIS_URL: 'http://x' }, 'MESH_REDIS_URL'],
    [
      'registry URL with the wrong scheme',
      { MESH_SCHEMA_REGISTRY_URL: 'ftp://r' },
      'MESH_SCHEMA_REGISTRY_URL',
    ],
    ['unknown log level', { MESH_LOG_LEVEL: 'loud' }, 'MESH_LOG_LEVEL'],
    ['typo of a known variable', { MESH_MAX_HOP: '3' }, 'MESH_MAX_HOP'],
    ['duration without unit', { MESH_LEASE_TTL: '10' }, 'MESH_LEASE_TTL'],
    ['duration out of range', { MESH_LEASE_TTL: '2h' }, 'MESH_LEASE_TTL'],
    ['port out of range', { MESH_HTTP_PORT: '70000' }, 'MESH_HTTP_PORT'],
    ['bad boolean', { MESH_KAFKA_SSL: 'maybe' }, 'MESH_KAFKA_SSL'],
    [
      'bad SASL mechanism',
      {
        MESH_KAFKA_SASL_MECHANISM: 'gssapi',
        MESH_KAFKA_SASL_USERNAME: 'u',
        MESH_KAFKA_SASL_PASSWORD: 'p',
      },
      'MESH_KAFKA_SASL_MECHANISM',
    ],
  ];
  for (const [what, env, name] of cases) {
    test(what, () => {
      const error = failure(env);
      assert.equal(lines(error).length, 1, error.message);
      assert.ok(error.message.startsWith(`${name} `), error.message);
      assert.deepEqual(error.details, { variables: [name] });
    });
  }

  test('a missing required variable is named', () => {
    const env: Record<string, string> = { ...required };
    delete env.MESH_REDIS_URL;
    assert.throws(
      () => loadConfig(env, options),
      (error: unknown) =>
        isMeshError(error) &&
        error.code === 'config_invalid' &&
        error.message ===
          'MESH_REDIS_URL is required: Redis URL, e.g. redis://:password@host:6379/0.',
    );
  });

  test('a variable a service requires is named when missing', () => {
    assert.throws(
      () => loadConfig(required, { ...options, required: ['MESH_API_TOKEN'] }),
      (error: unknown) => isMeshError(error) && /^MESH_API_TOKEN is required/.test(error.message),
    );
  });

  test('a SASL mechanism without user and password names both, one line each', () => {
    const error = failure({ MESH_KAFKA_SASL_MECHANISM: 'plain' });
    assert.deepEqual(lines(error), [
      'MESH_KAFKA_SASL_USERNAME is required when MESH_KAFKA_SASL_MECHANISM is set',
      'MESH_KAFKA_SASL_PASSWORD is required when MESH_KAFKA_SASL_MECHANISM is set',
    ]);
  });

  test('a CA file without TLS, or that holds no certificate, is named', () => {
    assert.deepEqual(lines(failure({ MESH_KAFKA_SSL_CA_FILE: '/etc/ca.pem' }, pemOf)), [
      'MESH_KAFKA_SSL_CA_FILE is set but MESH_KAFKA_SSL is not: a CA is for a TLS listener',
    ]);
    assert.deepEqual(lines(failure({ MESH_REDIS_TLS_CA_FILE: '/etc/ca.pem' }, pemOf)), [
      'MESH_REDIS_TLS_CA_FILE is set but MESH_REDIS_URL is not rediss:// (Redis over TLS)',
    ]);
    assert.deepEqual(lines(failure({ MESH_SCHEMA_REGISTRY_CA_FILE: '/etc/ca.pem' }, pemOf)), [
      'MESH_SCHEMA_REGISTRY_CA_FILE is set but MESH_SCHEMA_REGISTRY_URL is not https://',
    ]);
    assert.deepEqual(
      lines(failure({ MESH_KAFKA_SSL: 'true', MESH_KAFKA_SSL_CA_FILE: '/etc/key.pem' }, () => 'x')),
      ['MESH_KAFKA_SSL_CA_FILE must name a PEM file of certificates; /etc/key.pem holds none'],
    );
  });

  test('an unreadable CA file is named', () => {
    const error = failure({ MESH_KAFKA_SSL: 'true', MESH_KAFKA_SSL_CA_FILE: '/nowhere/ca.pem' });
    assert.equal(lines(error).length, 1);
    assert.match(error.message, /^MESH_KAFKA_SSL_CA_FILE must name a readable PEM file/);
  });

  test('several bad variables give exactly one line each', () => {
    const error = failure({
      MESH_MAX_HOPS: 'abc',
      MESH_LOG_LEVEL: 'loud',
      MESH_MAX_HOP: '3',
      MESH_RETRY_TIERS: '5x',
    });
    const got = lines(error);
    assert.equal(got.length, 4, error.message);
    for (const name of ['MESH_MAX_HOPS', 'MESH_LOG_LEVEL', 'MESH_MAX_HOP', 'MESH_RETRY_TIERS']) {
      assert.equal(got.filter((line) => line.startsWith(`${name} `)).length, 1, name);
    }
    assert.deepEqual([...((error.details?.variables as string[] | undefined) ?? [])].sort(), [
      'MESH_LOG_LEVEL',
      'MESH_MAX_HOP',
      'MESH_MAX_HOPS',
      'MESH_RETRY_TIERS',
    ]);
  });

  test('says what is allowed and echoes a long bad value only truncated', () => {
    const error = failure({ MESH_LOG_LEVEL: 'x'.repeat(200) });
    assert.match(error.message, /one of fatal, error, warn, info, debug, trace, silent/);
    assert.ok(error.message.includes(`${'x'.repeat(57)}...`));
    assert.equal(error.message.includes('x'.repeat(58)), false);
  });

  test('secrets are never echoed back', () => {
    const sentinel = 'SENTINEL-9f3c2a';
    const cases: Record<string, string>[] = [
      { MESH_KAFKA_SASL_MECHANISM: 'plain', MESH_KAFKA_SASL_PASSWORD: sentinel },
      { MESH_KAFKA_SASL_MECHANISM: 'bogus', MESH_KAFKA_SASL_PASSWORD: sentinel },
      { MESH_KAFKA_SASL_PASSWORD: sentinel, MESH_MAX_HOPS: 'abc' },
      { MESH_KAFKA_SASL_PASSWRD: sentinel },
      { MESH_API_TOKEN: sentinel, MESH_LOG_LEVEL: 'loud' },
    ];
    for (const env of cases) {
      const error = failure(env);
      assert.equal(error.message.includes(sentinel), false, error.message);
      assert.equal(JSON.stringify(error.details).includes(sentinel), false);
    }
  });
});

describe('durations', () => {
  test('parseDuration reads every unit', () => {
    assert.equal(parseDuration('500ms'), 500);
    assert.equal(parseDuration('30s'), 30_000);
    assert.equal(parseDuration('5m'), 300_000);
    assert.equal(parseDuration('1h'), 3_600_000);
    assert.equal(parseDuration('7d'), 604_800_000);
    assert.equal(parseDuration('0s'), 0);
    assert.equal(parseDuration(' 2s '), 2_000);
  });

  test('parseDuration throws config_invalid on anything else', () => {
    for (const text of ['', '5', '5x', '1.5s', '-1s', '5 s', 's', '1w']) {
      assert.throws(
        () => parseDuration(text),
        (error: unknown) => isMeshError(error) && error.code === 'config_invalid',
        text,
      );
    }
  });

  test('formatDuration picks the largest whole unit', () => {
    assert.equal(formatDuration(604_800_000), '7d');
    assert.equal(formatDuration(3_600_000), '1h');
    assert.equal(formatDuration(90_000), '90s');
    assert.equal(formatDuration(120_000), '2m');
    assert.equal(formatDuration(1_500), '1500ms');
    assert.equal(formatDuration(0), '0ms');
  });

  test('formatDuration and parseDuration round-trip', () => {
    for (const ms of [0, 1, 999, 1_000, 61_000, 3_600_000, 86_400_000, 90 * 86_400_000]) {
      assert.equal(parseDuration(formatDuration(ms)), ms);
    }
  });
});

describe('loadConfigOrExit', () => {
  const moduleUrl = new URL('./index.ts', import.meta.url).href;
  const run = (env: Record<string, string>) =>
    spawnSync(
      process.execPath,
      [
        '--input-type=module',
        '-e',
        `import { loadConfigOrExit } from ${JSON.stringify(moduleUrl)};
         const config = loadConfigOrExit({ service: 'probe', defaultHttpPort: 1 });
         process.stdout.write(String(config.maxHops));`,
      ],
      { env: { PATH: process.env.PATH ?? '', ...env }, encoding: 'utf8', timeout: 30_000 },
    );

  test('exits 78 with one stderr line naming the bad variable', () => {
    const result = run({ ...required, MESH_MAX_HOPS: 'abc' });
    assert.equal(result.status, 78, result.stderr);
    const stderrLines = result.stderr.split('\n').filter((line) => line !== '');
    assert.equal(stderrLines.length, 1, result.stderr);
    assert.match(stderrLines[0] ?? '', /^probe: config: MESH_MAX_HOPS must be an integer/);
    assert.equal(result.stdout, '');
  });

  test('returns the config when the environment is good', () => {
    const result = run({ ...required, MESH_MAX_HOPS: '7' });
    assert.equal(result.status, 0, result.stderr);
    assert.equal(result.stdout, '7');
  });
});

test('service variables are range-checked like the core ones, and secrets are masked everywhere', async () => {
  const { safeDetail } = await import('@mesh/errors');
  const base = {
    MESH_KAFKA_BROKERS: 'k:9092',
    MESH_SCHEMA_REGISTRY_URL: 'http://r',
    MESH_REDIS_URL: 'redis://x',
  };
  assert.throws(
    () => loadConfig({ ...base, MESH_LLM_RPM: '-1' }, { service: 's', defaultHttpPort: 1 }),
    /MESH_LLM_RPM must be an integer from 0 to 10000000/,
  );
  assert.throws(
    () => loadConfig({ ...base, MESH_AGENT_DELAY: '2h' }, { service: 's', defaultHttpPort: 1 }),
    /MESH_AGENT_DELAY must be a duration/,
  );
  assert.throws(
    () =>
      loadConfig(
        { ...base, MESH_WORKER_AGENTS: 'echo,Bad Agent' },
        { service: 's', defaultHttpPort: 1 },
      ),
    /MESH_WORKER_AGENTS must be a comma-separated list of agent names/,
  );
  loadConfig(
    { ...base, MESH_LLM_API_KEY: 'provider-key-123456' },
    { service: 's', defaultHttpPort: 1 },
  );
  assert.equal(
    safeDetail(new Error('Incorrect API key provided: provider-key-123456.')),
    'Error: Incorrect API key provided: ***.',
  );
});
