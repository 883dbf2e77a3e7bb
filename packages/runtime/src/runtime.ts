/**
 * The shared clients of one service process, built once from its config: Kafka (producer, admin,
 * group consumers), the registry contracts and codec, Redis with the idempotency store, metrics and
 * logs. A service is its config, a runtime, its handlers and its HTTP routes.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import type { MeshConfig } from '@mesh/config';
import { ContractRegistry, EventCodec } from '@mesh/contracts';
import { IdempotencyStore } from '@mesh/idempotency';
import {
  GroupConsumer,
  MeshAdmin,
  MeshProducer,
  createKafka,
  resultWithin,
  type Kafka,
  type SendOptions,
} from '@mesh/kafka';
import { createRedis, evictionRisk, pingRedis, type Redis } from '@mesh/redis';
import {
  LagCollector,
  createLogger,
  createMetrics,
  type Logger,
  type MeshMetrics,
} from '@mesh/telemetry';
import { MeshError, safeDetail } from '@mesh/errors';
import { MeshConsumer, type ConsumeOptions } from './consumer.ts';
import { publishEvents, type Emit, type PublishDeps } from './publish.ts';
import { topicNames, topicSpecs, type TopicNames } from './topics.ts';

export interface RuntimeOptions {
  logger?: Logger;
  metrics?: MeshMetrics;
  /** Agents whose work topics this process needs (created at start when allowed). */
  agents?: string[];
  /** Register the contracts at start (default true). An incompatible contract stops the start. */
  registerContracts?: boolean;
}

export interface Readiness {
  ready: boolean;
  kafka: boolean;
  redis: boolean;
  registry: boolean;
  consumers: boolean;
  /** When `consumers` is false: which consumer is out of its group, or what its events wait on. */
  stalled?: string;
}

export class MeshRuntime {
  readonly config: MeshConfig;
  readonly log: Logger;
  readonly metrics: MeshMetrics;
  readonly topics: TopicNames;
  readonly kafka: Kafka;
  readonly producer: MeshProducer;
  readonly admin: MeshAdmin;
  readonly registry: ContractRegistry;
  readonly codec: EventCodec;
  readonly redis: Redis;
  readonly idempotency: IdempotencyStore;
  readonly lag: LagCollector;
  /** Prefix of every Redis key of this mesh (`mesh:` for the default topic prefix `mesh.`). */
  readonly keyPrefix: string;
  readonly #consumers: MeshConsumer[] = [];
  readonly #options: RuntimeOptions;
  readonly #publishing: PublishDeps;
  #registryOk = false;
  #registryCheckedAt = 0;
  /** The Kafka question of a readiness probe, shared by the probes that come while it is asked. */
  #kafkaCheck: Promise<boolean> | undefined;
  #lagTimer: NodeJS.Timeout | undefined;
  /** Set by `watchReadiness`: what failed at the last look and since when. */
  #watch: { timer: NodeJS.Timeout; failing: string; since: number; askedAt: number } | undefined;
  /** Numbers the readiness looks in the order they start, so a slow one never overrides a later one. */
  #looks = 0;
  /** The latest look whose answer was taken (`mesh_ready`, the watch's log lines). */
  #lookTaken = 0;
  #closed = false;
  /** The last settings fault Redis reported (a refused password, an untrusted certificate). */
  #redisFault: string | undefined;

  constructor(config: MeshConfig, options: RuntimeOptions = {}) {
    this.config = config;
    this.#options = options;
    this.log = options.logger ?? createLogger(config.service, config.logLevel);
    this.metrics = options.metrics ?? createMetrics();
    this.topics = topicNames(config.topicPrefix);
    this.kafka = createKafka({
      ...config.kafka,
      log: (level, message, extra) => this.log[level]({ kafka: extra }, message),
    });
    this.admin = new MeshAdmin(this.kafka);
    this.producer = new MeshProducer(this.kafka, { admin: this.admin });
    this.registry = new ContractRegistry(config.registry);
    this.codec = new EventCodec(this.registry, { maxBytes: config.maxEventBytes });
    this.#publishing = {
      codec: this.codec,
      producer: this.producer,
      metrics: this.metrics,
      service: config.service,
    };
    this.redis = createRedis(config.redis, {
      connectionName: `mesh-${config.service}`,
      onSettingsFault: (message) => {
        if (message === this.#redisFault) return;
        this.#redisFault = message;
        this.log.error(
          { redis: message },
          'Redis refuses the settings; nothing runs until they are fixed',
        );
      },
    });
    this.keyPrefix = redisKeyPrefix(config.topicPrefix);
    this.idempotency = new IdempotencyStore(this.redis, {
      leaseTtlMs: config.leaseTtlMs,
      doneTtlMs: config.idempotencyTtlMs,
      keyPrefix: `${this.keyPrefix}idem:`,
    });
    this.lag = new LagCollector(
      this.admin,
      {},
      { lag: this.metrics.consumerLag, seconds: this.metrics.consumerLagSeconds },
    );
  }

  /**
   * Connects the producer, creates missing topics (when `MESH_CREATE_TOPICS`) and registers the
   * contracts. @throws MeshError `schema_incompatible` when the registry refuses a contract — the
   * service must stop, not fall back — or `kafka_unavailable` / `registry_unavailable`.
   */
  async start(): Promise<void> {
    // Checked on every connection (a restarted Redis may have another configuration), not awaited:
    // a service starts while Redis is away.
    const checkEviction = (): void => {
      evictionRisk(this.redis).then(
        (risk) => {
          if (risk !== undefined)
            this.log.warn(
              { redis: risk },
              'Redis may evict keys when full: a lost lease or done marker lets an event run twice; use maxmemory-policy noeviction',
            );
        },
        (error: unknown) =>
          this.log.debug({ err: safeDetail(error) }, 'could not read the Redis eviction policy'),
      );
    };
    this.redis.on('ready', checkEviction);
    if (this.redis.status === 'ready') checkEviction();
    await this.#redisSettled();
    await this.producer.connect();
    if (this.config.createTopics) {
      const created = await this.admin.ensureTopics(
        topicSpecs(this.config, this.#options.agents ?? []),
      );
      if (created.length > 0) this.log.info({ topics: created }, 'topics created');
    }
    if (this.#options.registerContracts ?? true) {
      const ids = await this.registry.registerAll();
      await this.registry.warm();
      this.log.info({ contracts: ids.size }, 'contracts registered');
    }
    this.#registryOk = true;
    this.#registryCheckedAt = Date.now();
    this.#lagTimer = setInterval(() => {
      this.lag
        .collect()
        .catch((error: unknown) =>
          this.log.debug({ err: safeDetail(error) }, 'lag collection failed'),
        );
    }, this.config.lagIntervalMs);
    this.#lagTimer.unref();
  }

  /**
   * Starts a consumer group member that runs `options.handlers`; its lag is exported too. The group
   * id is put under the topic prefix (`mesh.worker.echo`), so two meshes on one cluster never share
   * a group.
   */
  async consume(options: ConsumeOptions): Promise<MeshConsumer> {
    options = { ...options, groupId: this.groupId(options.groupId) };
    const consumer = new MeshConsumer(
      {
        config: this.config,
        createGroupConsumer: (o) => new GroupConsumer(this.kafka, o),
        producer: this.producer,
        codec: this.codec,
        idempotency: this.idempotency,
        metrics: this.metrics,
        log: this.log,
        topics: this.topics,
      },
      options,
    );
    await consumer.start();
    this.#consumers.push(consumer);
    this.lag.watch(options.groupId, options.topics);
    return consumer;
  }

  /** A Redis key of this mesh: `key('final', id)` is `mesh:final:<id>` under the default prefix. */
  key(...parts: string[]): string {
    return `${this.keyPrefix}${parts.join(':')}`;
  }

  /** The full consumer group id of a service-local group name. */
  groupId(name: string): string {
    return `${this.config.topicPrefix}${name}`;
  }

  /**
   * Encodes and publishes events, resolving once Kafka acknowledged all of them (acks=all).
   * `options.signal` gives them up (see `SendOptions`): an HTTP write answers in time.
   */
  async publish(emits: readonly Emit[], options?: SendOptions): Promise<void> {
    await publishEvents(this.#publishing, emits, options);
  }

  /**
   * Send options for the write of an HTTP request: given up after MESH_HTTP_PUBLISH_TIMEOUT, so that
   * the request answers 503 instead of waiting out a broker outage (see `SendOptions`).
   */
  httpWrite(): SendOptions {
    return { signal: AbortSignal.timeout(this.config.http.publishTimeoutMs) };
  }

  /**
   * Waits up to `timeoutMs` for Redis to answer. A service starts while Redis is away (it waits
   * for it), but settings Redis refuses stop the start. @throws MeshError `config_invalid`.
   */
  async #redisSettled(timeoutMs = 2_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (this.redis.status !== 'ready' && this.#redisFault === undefined && Date.now() < deadline)
      await sleep(20);
    if (this.redis.status !== 'ready' && this.#redisFault !== undefined)
      throw new MeshError('config_invalid', this.#redisFault);
  }

  /**
   * Kafka, Redis and the registry reachable, and every consumer joined and not stuck. The three are
   * asked at once and each given `readinessWaitMs`: one that has not answered by then counts as not
   * reachable, so a probe answers (a 503 naming it) instead of hanging with it.
   */
  async readiness(): Promise<Readiness> {
    const look = (this.#looks += 1);
    if (this.#watch !== undefined) this.#watch.askedAt = Date.now();
    const [redis, registry, kafka] = await Promise.all([
      resultWithin(pingRedis(this.redis), readinessWaitMs, false),
      this.#registryReachable(),
      this.producer.connected ? resultWithin(this.#askKafka(), readinessWaitMs, false) : false,
    ]);
    const stalled = this.#consumers.flatMap((c) => c.unhealthyBecause ?? []);
    const consumers = stalled.length === 0;
    const report: Readiness = {
      ready: redis && registry && kafka && consumers,
      kafka,
      redis,
      registry,
      consumers,
      ...(consumers ? {} : { stalled: stalled.join('; ') }),
    };
    this.#noteReadiness(look, report);
    return report;
  }

  /**
   * Logs when the service stops being ready, naming what failed, and when it is ready again, with
   * how long it was not: a Redis that stops answering with its connection open, or a broker that is
   * away, otherwise stalls the service's events without a line in its log (only `/readyz` and the
   * lag would show it). Looks every `everyMs` unless a probe looked meanwhile, and takes every
   * probe's answer too. Every look, watched or not, sets `mesh_ready{check}`, which Prometheus
   * alerts on where nothing acts on `/readyz` (compose). Started by a service once it listens;
   * `close` ends it.
   */
  watchReadiness(everyMs = readinessWatchMs): void {
    if (this.#watch !== undefined || this.#closed) return;
    // Due `everyMs` after the last look, whoever made it: a probe's look puts the next one off.
    const tick = (): void => {
      const watch = this.#watch;
      if (watch === undefined) return;
      const wait = watch.askedAt + everyMs - Date.now();
      if (wait <= 0) void this.readiness();
      watch.timer = setTimeout(tick, wait <= 0 ? everyMs : wait).unref();
    };
    this.#watch = {
      timer: setTimeout(tick, everyMs).unref(),
      failing: '',
      since: Date.now(),
      askedAt: 0,
    };
    void this.readiness();
  }

  #noteReadiness(look: number, report: Readiness): void {
    if (look < this.#lookTaken) return;
    this.#lookTaken = look;
    for (const check of readinessChecks)
      this.metrics.ready.set({ service: this.config.service, check }, report[check] ? 1 : 0);
    const watch = this.#watch;
    if (watch === undefined || this.#closed) return;
    const failing = readinessChecks.filter((check) => !report[check]);
    const failingNow = failing.join();
    if (failingNow === watch.failing) return;
    const now = Date.now();
    if (failing.length === 0) {
      const seconds = Math.round((now - watch.since) / 100) / 10;
      this.log.info(
        { readiness: report, notReadyMs: now - watch.since },
        `ready again after ${seconds} s`,
      );
    } else {
      this.log.warn(
        { readiness: report },
        `not ready: ${failing
          .map((check) =>
            check === 'consumers'
              ? `consumers stalled: ${report.stalled ?? ''}`
              : notReadyBecause[check],
          )
          .join('; ')}`,
      );
    }
    if (watch.failing === '') watch.since = now;
    watch.failing = failingNow;
  }

  /** Whether the registry answers; asked at most every 5 s, the answer shared meanwhile. */
  async #registryReachable(): Promise<boolean> {
    if (Date.now() - this.#registryCheckedAt <= 5_000) return this.#registryOk;
    this.#registryCheckedAt = Date.now();
    const ping = this.registry.ping().then(
      () => true,
      () => false,
    );
    // An answer that comes after the wait still counts for the probes that follow.
    void ping.then((ok) => (this.#registryOk = ok));
    this.#registryOk = await resultWithin(ping, readinessWaitMs, false);
    return this.#registryOk;
  }

  /**
   * Whether Kafka answers a question that does not grow with the cluster: about this service's
   * groups (their coordinators, which its consumers need), or without a consumer the topic listing.
   * A broker that is away makes kafkajs retry for about 20 s before it gives up; probes that come
   * meanwhile wait for the same question instead of asking again.
   */
  #askKafka(): Promise<boolean> {
    if (this.#kafkaCheck !== undefined) return this.#kafkaCheck;
    const groups = this.#consumers.map((c) => c.groupId);
    const check = (groups.length > 0 ? this.admin.probe(groups) : this.admin.listTopics()).then(
      () => true,
      () => false,
    );
    this.#kafkaCheck = check;
    void check.finally(() => {
      if (this.#kafkaCheck === check) this.#kafkaCheck = undefined;
    });
    return check;
  }

  get consumers(): readonly MeshConsumer[] {
    return this.#consumers;
  }

  /** Drains and stops every consumer, then closes the clients. Safe to call twice. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    clearInterval(this.#lagTimer);
    clearTimeout(this.#watch?.timer);
    this.#watch = undefined;
    await Promise.all(this.#consumers.map((c) => c.stop()));
    await this.producer.disconnect().catch(() => undefined);
    await this.admin.disconnect().catch(() => undefined);
    this.redis.disconnect();
  }
}

/**
 * How long a readiness probe waits for each of Kafka, Redis and the registry before it reports it as
 * not reachable: a probe answers within Kubernetes' probe timeout (5 s in the chart), not after it.
 */
export const readinessWaitMs = 2_000;

/**
 * How often `watchReadiness` looks when no probe did: an outage is in the log within this and 2 s.
 * The chart probes `/readyz` as often, so under Kubernetes the probes' looks are all there is.
 */
export const readinessWatchMs = 10_000;

const readinessChecks = ['kafka', 'redis', 'registry', 'consumers'] as const;

/** What each failed readiness check means in the not-ready line (a stalled consumer says its own: `stalled`). */
const notReadyBecause: Record<Exclude<(typeof readinessChecks)[number], 'consumers'>, string> = {
  kafka: `Kafka did not answer within ${readinessWaitMs / 1_000} s`,
  redis: `Redis did not answer a PING within ${readinessWaitMs / 1_000} s`,
  registry: `the schema registry did not answer within ${readinessWaitMs / 1_000} s`,
};

/**
 * Redis keys live under the topic prefix so that two meshes sharing one Redis never see each other's
 * state: topic prefix `mesh.` gives keys `mesh:…`, `staging.` gives `staging:…`.
 */
export function redisKeyPrefix(topicPrefix: string): string {
  const base = topicPrefix.replace(/[.:_-]+$/, '');
  return `${base === '' ? 'mesh' : base}:`;
}
