/**
 * What a command runs with: the validated config, output on stdout (text or `--json`) and notes on
 * stderr, and the mesh's clients created on first use.
 *
 * Every network step is bounded by MESH_CLI_TIMEOUT: the shared clients retry for a long time (a
 * service should ride out a broker restart), a person at a prompt should not wait for that. A client
 * is checked when it is first asked for, so an unreachable Kafka or registry is reported as one line
 * naming it and its address before anything else happens.
 */
import { ContractRegistry, EventCodec } from '@mesh/contracts';
import { isMeshError } from '@mesh/errors';
import { MeshAdmin, MeshProducer, connectHint, createKafka, type Kafka } from '@mesh/kafka';
import { topicNames, type TopicNames } from '@mesh/runtime';
import { loadCliConfig, type CliConfig } from './config.ts';
import { CliError, oneLine, reasonOf } from './errors.ts';

export interface Output {
  write(text: string): unknown;
}

export interface ContextOptions {
  json: boolean;
  env?: NodeJS.ProcessEnv;
  stdout?: Output;
  stderr?: Output;
}

/** Races `promise` against `ms`; on timeout rejects with what `onTimeout` returns. */
export async function withDeadline<T>(
  promise: Promise<T>,
  ms: number,
  onTimeout: () => Error,
): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      promise,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(onTimeout()), ms);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

export class CliContext {
  readonly json: boolean;
  readonly #env: NodeJS.ProcessEnv;
  readonly #stdout: Output;
  readonly #stderr: Output;
  #config: CliConfig | undefined;
  #kafka: Kafka | undefined;
  #lastKafkaError: string | undefined;
  /** Connection errors of the seed brokers, until the first request succeeded. */
  readonly #seedFailures = new Map<string, string>();
  #onSeedsDown: (() => void) | undefined;
  #admin: Promise<MeshAdmin> | undefined;
  #producer: Promise<MeshProducer> | undefined;
  #registry: Promise<ContractRegistry> | undefined;
  readonly #closers: (() => Promise<unknown>)[] = [];

  constructor(options: ContextOptions) {
    this.json = options.json;
    this.#env = options.env ?? process.env;
    this.#stdout = options.stdout ?? process.stdout;
    this.#stderr = options.stderr ?? process.stderr;
  }

  get env(): NodeJS.ProcessEnv {
    return this.#env;
  }

  /** @throws CliError naming every bad variable. */
  get config(): CliConfig {
    this.#config ??= loadCliConfig(this.#env);
    return this.#config;
  }

  get topics(): TopicNames {
    return topicNames(this.config.mesh.topicPrefix);
  }

  get brokers(): string {
    return this.config.mesh.kafka.brokers.join(',');
  }

  /** A line of text output; nothing in `--json` mode. */
  print(line = ''): void {
    if (!this.json) this.#stdout.write(`${line}\n`);
  }

  /** One JSON document on stdout (one line: several calls make NDJSON). */
  emit(value: unknown): void {
    this.#stdout.write(`${JSON.stringify(value)}\n`);
  }

  /** A remark for the person at the terminal, on stderr, so stdout stays machine-readable. */
  note(line: string): void {
    this.#stderr.write(`${line}\n`);
  }

  /** The kafkajs client of `@mesh/kafka`; its own error log is kept to explain a failed connection. */
  get kafka(): Kafka {
    const { kafka } = this.config.mesh;
    this.#kafka ??= createKafka({
      ...kafka,
      connectionTimeoutMs: Math.min(this.config.timeoutMs, 3_000),
      requestTimeoutMs: Math.max(this.config.timeoutMs, 10_000),
      log: (level, message, extra) => {
        // A broker the network refused is a warning to a service (kafkajs tries again), and the
        // reason a command line gives up.
        if (level !== 'error' && !/^Connection (error|timeout)/.test(message)) return;
        const reason = oneLine(message.replace(/^.*Connection error: /, ''));
        this.#lastKafkaError = reason;
        // Every seed broker refused (or is not resolvable): kafkajs would retry for 20 s and more,
        // a command line says so at once. A certificate the client does not trust is no outage:
        // the admin fails at once on it, naming the variable to fix (`connectFailure`).
        if (
          message.startsWith('Connection error') &&
          !/certificate/i.test(message) &&
          typeof extra.broker === 'string'
        ) {
          this.#seedFailures.set(extra.broker, reason);
          if (kafka.brokers.every((b) => this.#seedFailures.has(b))) this.#onSeedsDown?.();
        }
      },
    });
    return this.#kafka;
  }

  /** The error for Kafka not answering, with the best reason known. */
  kafkaUnreachable(cause?: unknown): CliError {
    const seeds = [...new Set(this.#seedFailures.values())].join('; ');
    const reason =
      (seeds === '' ? undefined : seeds) ??
      this.#lastKafkaError ??
      (cause === undefined ? 'no answer in time' : reasonOf(cause));
    return new CliError(`cannot reach Kafka at ${this.brokers} (${reason})${connectHint(reason)}`, {
      cause,
    });
  }

  /** Runs a Kafka step within the deadline; any failure to answer is reported as Kafka unreachable. */
  async kafkaStep<T>(step: Promise<T>, ms = this.config.timeoutMs): Promise<T> {
    try {
      return await withDeadline(step, ms, () => this.kafkaUnreachable());
    } catch (error) {
      if (error instanceof CliError) throw error;
      if (isMeshError(error) && error.code === 'kafka_unavailable')
        throw this.kafkaUnreachable(error);
      throw error;
    }
  }

  /** The admin client, after the brokers answered a metadata request. @throws CliError. */
  admin(): Promise<MeshAdmin> {
    this.#admin ??= (async () => {
      const admin = new MeshAdmin(this.kafka);
      this.#closers.push(() => admin.disconnect());
      const seedsDown = new Promise<never>((_, reject) => {
        this.#onSeedsDown = () => reject(this.kafkaUnreachable());
      });
      seedsDown.catch(() => undefined);
      try {
        await this.kafkaStep(Promise.race([admin.listTopics(), seedsDown]));
      } finally {
        this.#onSeedsDown = undefined;
        this.#seedFailures.clear();
      }
      return admin;
    })();
    return this.#admin;
  }

  /** The idempotent, acks=all producer of the mesh, connected. @throws CliError. */
  producer(): Promise<MeshProducer> {
    this.#producer ??= (async () => {
      await this.admin();
      const producer = new MeshProducer(this.kafka);
      this.#closers.push(() => producer.disconnect());
      await this.kafkaStep(producer.connect());
      return producer;
    })();
    return this.#producer;
  }

  /** @throws CliError unless every one of `topics` exists, saying how to create them. */
  async requireTopics(topics: string[]): Promise<void> {
    const existing = new Set(await this.kafkaStep((await this.admin()).listTopics()));
    const missing = topics.filter((topic) => !existing.has(topic));
    if (missing.length > 0)
      throw new CliError(
        `topic ${missing.join(', ')} does not exist on ${this.brokers}; create the mesh's topics with \`mesh topics init\``,
      );
  }

  registryUnreachable(cause?: unknown): CliError {
    const reason = cause === undefined ? 'no answer in time' : reasonOf(cause);
    return new CliError(
      `cannot reach the schema registry at ${this.config.mesh.registry.url} (${reason.replace(/^schema registry at \S+ is unreachable: /, '')})`,
      { cause },
    );
  }

  /** Runs a registry step within the deadline; an unreachable registry is one line naming it. */
  async registryStep<T>(step: Promise<T>): Promise<T> {
    try {
      return await withDeadline(step, this.config.timeoutMs, () => this.registryUnreachable());
    } catch (error) {
      if (error instanceof CliError) throw error;
      if (isMeshError(error) && error.code === 'registry_unavailable')
        throw this.registryUnreachable(error);
      // Refused credentials or an untrusted certificate: config_invalid, a line naming the variable.
      throw error;
    }
  }

  /** The contracts in the registry, after the registry answered. @throws CliError. */
  registry(): Promise<ContractRegistry> {
    this.#registry ??= (async () => {
      const registry = new ContractRegistry(this.config.mesh.registry);
      await this.registryStep(registry.ping());
      return registry;
    })();
    return this.#registry;
  }

  async codec(): Promise<EventCodec> {
    return new EventCodec(await this.registry(), { maxBytes: this.config.mesh.maxEventBytes });
  }

  /** Registers a cleanup step run by `close`, last registered first. */
  onClose(fn: () => Promise<unknown>): void {
    this.#closers.push(fn);
  }

  /** Closes every client, each bounded so that a hung disconnect does not keep the CLI alive. */
  async close(): Promise<void> {
    for (const close of this.#closers.reverse()) {
      await withDeadline(
        close().catch(() => undefined),
        2_000,
        () => new Error('close timed out'),
      ).catch(() => undefined);
    }
    this.#closers.length = 0;
  }
}
