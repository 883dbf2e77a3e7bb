import { createHash, randomBytes, randomUUID } from 'node:crypto';
import { existsSync } from 'node:fs';
import { chmod, copyFile, mkdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { createKafka } from '@mesh/kafka';
import type { Component } from './component.ts';
import { componentPaths, type StackSettings } from './settings.ts';
import { ensureStackTls } from './tls.ts';
import {
  errorMessage,
  findOnPath,
  formatSeconds,
  isPortOpen,
  persistedSecret,
  requireJava,
  runCommand,
  withTimeout,
  type Reporter,
} from './tools.ts';

export const kafkaVersion = '3.9.1';

/** A topic and group the readiness probe owns; nothing else should use them. */
export const probeTopic = '__mesh_stack_probe';
export const probeGroupPrefix = '__mesh_stack_probe-';

const pomSource = join(import.meta.dirname, '..', 'maven', 'kafka-pom.xml');
const libsMarker = '.mesh-pom.sha256';

export interface KafkaServerConfig {
  host: string;
  port: number;
  controllerPort: number;
  logDir: string;
  /** A SASL_SSL listener beside the plaintext one: what managed clusters (MSK, Confluent Cloud) require. */
  secure?: SecureListener;
}

export interface SecureListener {
  port: number;
  /** PEM file with the listener's private key (unencrypted PKCS#8) and certificate. */
  keystoreFile: string;
  username: string;
  password: string;
}

/** The SASL mechanisms the secure listener offers; the SCRAM credentials are made when storage is formatted. */
export const secureMechanisms = ['PLAIN', 'SCRAM-SHA-256', 'SCRAM-SHA-512'] as const;

/**
 * server.properties for one combined broker+controller in KRaft mode with a static voter set.
 * Internal topics have one replica, and nothing is created implicitly, so tests see production-like errors
 * for missing topics.
 */
export function renderServerProperties(config: KafkaServerConfig): string {
  const { host, port, controllerPort, logDir, secure } = config;
  const listeners = [`PLAINTEXT://${host}:${port}`, `CONTROLLER://${host}:${controllerPort}`];
  const advertised = [`PLAINTEXT://${host}:${port}`];
  const protocols = ['CONTROLLER:PLAINTEXT', 'PLAINTEXT:PLAINTEXT'];
  if (secure !== undefined) {
    listeners.push(`SASL_SSL://${host}:${secure.port}`);
    advertised.push(`SASL_SSL://${host}:${secure.port}`);
    protocols.push('SASL_SSL:SASL_SSL');
  }
  const properties: [string, string | number][] = [
    ['process.roles', 'broker,controller'],
    ['node.id', 1],
    ['controller.quorum.voters', `1@${host}:${controllerPort}`],
    ['listeners', listeners.join(',')],
    ['advertised.listeners', advertised.join(',')],
    ['controller.listener.names', 'CONTROLLER'],
    ['inter.broker.listener.name', 'PLAINTEXT'],
    ['listener.security.protocol.map', protocols.join(',')],
    ['log.dirs', logDir],
    ['num.partitions', 3],
    ['default.replication.factor', 1],
    ['min.insync.replicas', 1],
    ['offsets.topic.replication.factor', 1],
    ['transaction.state.log.replication.factor', 1],
    ['transaction.state.log.min.isr', 1],
    ['group.initial.rebalance.delay.ms', 0],
    ['auto.create.topics.enable', 'false'],
    ['delete.topic.enable', 'true'],
    ['num.network.threads', 3],
    ['num.io.threads', 8],
    ['log.retention.hours', 24],
  ];
  if (secure !== undefined) {
    const prefix = 'listener.name.sasl_ssl';
    properties.push(
      [`${prefix}.ssl.keystore.type`, 'PEM'],
      [`${prefix}.ssl.keystore.location`, secure.keystoreFile],
      [`${prefix}.sasl.enabled.mechanisms`, secureMechanisms.join(',')],
      [
        `${prefix}.plain.sasl.jaas.config`,
        `org.apache.kafka.common.security.plain.PlainLoginModule required user_${secure.username}="${secure.password}";`,
      ],
      ...secureMechanisms
        .filter((mechanism) => mechanism.startsWith('SCRAM'))
        .map((mechanism): [string, string] => [
          `${prefix}.${mechanism.toLowerCase()}.sasl.jaas.config`,
          'org.apache.kafka.common.security.scram.ScramLoginModule required;',
        ]),
    );
  }
  const lines = ['# Written by @mesh/stack on every start; edits are overwritten.'];
  for (const [key, value] of properties) lines.push(`${key}=${value}`);
  return `${lines.join('\n')}\n`;
}

/** log4j 1.x (reload4j) config: everything to stdout, which the stack appends to logs/kafka.log. */
export function renderKafkaLog4j(): string {
  return [
    'log4j.rootLogger=INFO, stdout',
    'log4j.appender.stdout=org.apache.log4j.ConsoleAppender',
    'log4j.appender.stdout.layout=org.apache.log4j.PatternLayout',
    'log4j.appender.stdout.layout.ConversionPattern=[%d] %p %m (%c)%n',
    // Per-partition and per-request chatter: one topic creation otherwise logs dozens of lines.
    'log4j.logger.kafka.log=WARN',
    'log4j.logger.kafka.cluster=WARN',
    'log4j.logger.org.apache.kafka.storage=WARN',
    'log4j.logger.kafka.server.metadata=WARN',
    'log4j.logger.org.apache.kafka.image=WARN',
    'log4j.logger.org.apache.kafka.metadata=WARN',
    'log4j.logger.org.apache.kafka.controller.ReplicationControlManager=WARN',
    'log4j.logger.org.apache.kafka.controller.ConfigurationControlManager=WARN',
    'log4j.logger.kafka.server.ReplicaFetcherManager=WARN',
    'log4j.logger.kafka.server.ReplicaAlterLogDirsManager=WARN',
    'log4j.logger.state.change.logger=WARN',
    'log4j.logger.kafka.request.logger=WARN',
    'log4j.logger.kafka.authorizer.logger=WARN',
    'log4j.logger.org.apache.kafka.clients=WARN',
    '',
  ].join('\n');
}

/** A Kafka cluster id: 16 random bytes in URL-safe base64, not starting with '-' (Kafka avoids those too). */
export function newClusterId(): string {
  for (;;) {
    const id = randomBytes(16).toString('base64url');
    if (!id.startsWith('-')) return id;
  }
}

export function createKafkaComponent(settings: StackSettings): Component {
  const { host, ports } = settings;
  const paths = componentPaths(settings, 'kafka');
  const cacheDir = join(settings.cacheDir, 'kafka');
  const libsDir = join(cacheDir, 'libs');
  const logDir = join(paths.dataDir, 'kraft-logs');
  const serverProperties = join(paths.configDir, 'server.properties');
  const log4jProperties = join(paths.configDir, 'log4j.properties');
  // Written once the storage holds the SCRAM credentials (formatted by a stack that makes them).
  const scramMarker = join(paths.dataDir, '.mesh-scram');
  const brokers = [`${host}:${ports.kafka}`];
  let java = 'java';

  return {
    name: 'kafka',
    address: `${brokers.join(',')} (SASL_SSL ${host}:${ports.kafkaSecure})`,
    ports: [ports.kafka, ports.kafkaController, ports.kafkaSecure],
    stopTimeoutMs: 30_000,

    async prepare(report) {
      java = await requireJava();
      await ensureKafkaLibs(cacheDir, report);
      await mkdir(paths.configDir, { recursive: true });
      await mkdir(logDir, { recursive: true });
      const tls = await ensureStackTls(settings, report);
      const credentials = await kafkaSaslCredentials(settings);
      await writeFile(
        serverProperties,
        renderServerProperties({
          host,
          port: ports.kafka,
          controllerPort: ports.kafkaController,
          logDir,
          secure: {
            port: ports.kafkaSecure,
            keystoreFile: tls.keystoreFile,
            username: credentials.username,
            password: credentials.password,
          },
        }),
      );
      // It holds the SASL password.
      await chmod(serverProperties, 0o600);
      await writeFile(log4jProperties, renderKafkaLog4j());
      if (existsSync(join(logDir, 'meta.properties'))) {
        if (!existsSync(scramMarker))
          report(
            'kafka: this storage was formatted without SCRAM credentials; SCRAM logins to the ' +
              'SASL_SSL listener fail until `npm run stack -- down` (PLAIN works)',
          );
        return;
      }
      const clusterId = await persistedClusterId(join(paths.configDir, 'cluster-id'));
      const started = Date.now();
      await runCommand(
        java,
        [
          // A one-shot tool: the C1 compiler alone and one GC thread leave the CPU to the JVMs starting beside it.
          '-XX:TieredStopAtLevel=1',
          '-XX:+UseSerialGC',
          `-Dlog4j.configuration=file:${log4jProperties}`,
          '-cp',
          `${libsDir}/*`,
          'kafka.tools.StorageTool',
          'format',
          '-t',
          clusterId,
          '-c',
          serverProperties,
          ...secureMechanisms
            .filter((mechanism) => mechanism.startsWith('SCRAM'))
            .flatMap((mechanism) => [
              '--add-scram',
              `${mechanism}=[name=${credentials.username},password=${credentials.password}]`,
            ]),
        ],
        { cwd: paths.dataDir },
      );
      await writeFile(scramMarker, '');
      report(
        `kafka storage formatted (cluster ${clusterId}) in ${formatSeconds(Date.now() - started)}`,
      );
    },

    async command() {
      return {
        file: java,
        args: [
          '-Xms256m',
          '-Xmx768m',
          '-XX:+UseG1GC',
          '-XX:MaxGCPauseMillis=20',
          '-XX:+ExitOnOutOfMemoryError',
          '-Djava.awt.headless=true',
          `-Dlog4j.configuration=file:${log4jProperties}`,
          `-Dkafka.logs.dir=${join(settings.stateDir, 'logs')}`,
          '-cp',
          `${libsDir}/*`,
          'kafka.Kafka',
          serverProperties,
        ],
        cwd: paths.dataDir,
      };
    },

    async probe({ thorough, timeoutMs }) {
      if (!(await isPortOpen(host, ports.kafka)))
        throw new Error(`nothing listens on ${brokers[0]} yet`);
      await probeKafka(brokers, thorough, timeoutMs);
    },
  };
}

/**
 * Lists topics and, when `thorough`, produces to the probe topic, then has a consumer group join and commit:
 * a broker that has not yet loaded `__consumer_offsets` lists topics fine but fails every consumer.
 * Each probe uses a fresh group (deleted afterwards), so a probe killed half-way never delays the next one's join.
 * (kafkajs's admin.setOffsets would do, but always costs its consumer's 5 s fetch wait.)
 */
async function probeKafka(brokers: string[], thorough: boolean, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  const remaining = () => Math.max(1, deadline - Date.now());
  const kafka = createKafka({
    brokers,
    clientId: 'mesh-stack-probe',
    connectionTimeoutMs: 2_000,
    requestTimeoutMs: 10_000,
  });
  const admin = kafka.admin();
  const producer = kafka.producer({ allowAutoTopicCreation: false });
  const groupId = `${probeGroupPrefix}${randomUUID()}`;
  const consumer = kafka.consumer({
    groupId,
    maxWaitTimeInMs: 100,
    sessionTimeout: 10_000,
    allowAutoTopicCreation: false,
  });
  let groupMayExist = false;
  try {
    await withTimeout(admin.connect(), remaining(), 'kafka admin connect');
    const topics = await withTimeout(admin.listTopics(), remaining(), 'kafka list topics');
    if (!thorough) return;
    if (!topics.includes(probeTopic)) {
      await withTimeout(
        admin.createTopics({
          topics: [{ topic: probeTopic, numPartitions: 1, replicationFactor: 1 }],
          waitForLeaders: true,
        }),
        remaining(),
        'kafka create probe topic',
      );
    }
    await withTimeout(producer.connect(), remaining(), 'kafka producer connect');
    await withTimeout(
      producer.send({ topic: probeTopic, messages: [{ value: new Date().toISOString() }] }),
      remaining(),
      'kafka produce',
    );
    groupMayExist = true;
    await withTimeout(consumer.connect(), remaining(), 'kafka consumer connect');
    await consumer.subscribe({ topics: [probeTopic], fromBeginning: true });
    const committed = await withTimeout(
      new Promise<string>((resolve, reject) => {
        consumer.on(consumer.events.CRASH, ({ payload }) => reject(payload.error));
        consumer
          .run({
            autoCommit: false,
            eachBatch: async ({ batch }) => {
              const next = String(Number(batch.lastOffset()) + 1);
              await consumer.commitOffsets([
                { topic: batch.topic, partition: batch.partition, offset: next },
              ]);
              resolve(next);
            },
          })
          .catch(reject);
      }),
      remaining(),
      'kafka consumer group join and commit',
    );
    const [offsets] = await withTimeout(
      admin.fetchOffsets({ groupId, topics: [probeTopic] }),
      remaining(),
      'kafka fetch offsets',
    );
    const readBack = offsets?.partitions.find((p) => p.partition === 0)?.offset;
    if (readBack !== committed)
      throw new Error(
        `probe group committed offset ${committed} but reads back ${String(readBack)}`,
      );
  } finally {
    await Promise.allSettled([consumer.disconnect(), producer.disconnect()]);
    if (groupMayExist) await admin.deleteGroups([groupId]).catch(() => undefined);
    await admin.disconnect().catch(() => undefined);
  }
}

/**
 * Makes `<cache>/kafka/libs` hold the runtime classpath of the pom shipped with this package, resolving it with
 * Maven when the pom changed (or was never resolved). A marker in libs records the pom's hash.
 */
async function ensureKafkaLibs(cacheDir: string, report: Reporter): Promise<void> {
  const pom = await readFile(pomSource);
  const hash = createHash('sha256').update(pom).digest('hex');
  const libsDir = join(cacheDir, 'libs');
  const marker = join(libsDir, libsMarker);
  if (existsSync(marker) && (await readFile(marker, 'utf8')).trim() === hash) return;
  const mvn = await findOnPath('mvn');
  if (mvn === undefined)
    throw new Error(
      'mvn is not on PATH: it resolves Kafka from Maven Central (e.g. `apt-get install -y maven`)',
    );
  report(`kafka: resolving Apache Kafka ${kafkaVersion} from Maven Central into ${libsDir}`);
  const started = Date.now();
  await mkdir(cacheDir, { recursive: true });
  await copyFile(pomSource, join(cacheDir, 'pom.xml'));
  const staging = join(cacheDir, 'libs.tmp');
  await rm(staging, { recursive: true, force: true });
  try {
    await runCommand(
      mvn,
      [
        '-q',
        '-B',
        'dependency:copy-dependencies',
        `-DoutputDirectory=${staging}`,
        '-DincludeScope=runtime',
      ],
      { cwd: cacheDir },
    );
  } catch (error) {
    throw new Error(`kafka: resolving dependencies failed: ${errorMessage(error)}`, {
      cause: error,
    });
  }
  await writeFile(join(staging, libsMarker), `${hash}\n`);
  await rm(libsDir, { recursive: true, force: true });
  await rename(staging, libsDir);
  report(`kafka: libraries resolved in ${formatSeconds(Date.now() - started)}`);
}

/** The user of the SASL_SSL listener (PLAIN and SCRAM); its password is generated per checkout. */
export const kafkaSaslUsername = 'mesh';

/** The SASL login of the SASL_SSL listener (PLAIN and SCRAM); the password is made per checkout. */
export async function kafkaSaslCredentials(
  settings: StackSettings,
): Promise<{ username: string; password: string }> {
  const { configDir } = componentPaths(settings, 'kafka');
  return {
    username: kafkaSaslUsername,
    password: await persistedSecret(join(configDir, 'sasl-password')),
  };
}

async function persistedClusterId(file: string): Promise<string> {
  try {
    const id = (await readFile(file, 'utf8')).trim();
    if (/^[A-Za-z0-9_-]{22}$/.test(id)) return id;
  } catch {
    // first start
  }
  const id = newClusterId();
  await writeFile(file, `${id}\n`);
  return id;
}
