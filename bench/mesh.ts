/**
 * A mesh of one benchmark run: its own topic prefix on the shared stack, a client runtime in this
 * process (publishes, watches, reads lag), the services as processes, and the clean-up of its topics
 * and Redis keys.
 */
import { randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { loadConfig, type MeshConfig } from '@mesh/config';
import { newEvent } from '@mesh/envelope';
import type { ConsumedRecord } from '@mesh/kafka';
import { MeshRuntime, topicSpecs } from '@mesh/runtime';
import { silentLogger } from '@mesh/telemetry';
import type { StackEnv } from '@mesh/testkit';
import { header, type Publish } from './pipeline.ts';
import { spawnService, stopProc, type Proc, type ServiceName } from './processes.ts';
import { removeKeys } from './support.ts';

export interface BenchMeshOptions {
  stack: StackEnv;
  /** Name of the benchmark, in the prefix (`bench-e2e-1a2b3c4d.`). */
  name: string;
  partitions: number;
  agents: string[];
  /** MESH_* variables of every service, on top of the stack, the prefix and the defaults below. */
  vars?: Record<string, string>;
  profileDir?: string;
  log: (message: string) => void;
}

export class BenchMesh {
  readonly prefix: string;
  readonly config: MeshConfig;
  readonly client: MeshRuntime;
  readonly vars: Record<string, string>;
  readonly procs: Proc[] = [];
  readonly #options: BenchMeshOptions;
  #replicas = 0;

  constructor(options: BenchMeshOptions) {
    this.#options = options;
    this.prefix = `bench-${options.name}-${randomUUID().slice(0, 8)}.`;
    this.vars = {
      ...options.stack,
      MESH_TOPIC_PREFIX: this.prefix,
      MESH_PARTITIONS: String(options.partitions),
      MESH_LOG_LEVEL: 'warn',
      MESH_SHUTDOWN_TIMEOUT: '5s',
      // Keeps the done markers of a run from lingering in Redis if the clean-up is cut short.
      MESH_IDEMPOTENCY_TTL: '1h',
      MESH_WORKER_AGENTS: options.agents.join(','),
      ...options.vars,
    };
    this.config = loadConfig(
      { ...this.vars, MESH_WORKER_AGENTS: options.agents.join(',') },
      { service: 'bench', defaultHttpPort: 0 },
    );
    // Its errors reach the benchmark as exceptions; its logs would go into the JSON on stdout.
    this.client = new MeshRuntime(this.config, { agents: options.agents, logger: silentLogger() });
  }

  /** Connects the client, creates the topics and registers the contracts. */
  async start(): Promise<void> {
    await this.client.start();
  }

  /** Starts a service process; `vars` are added to the mesh's. */
  async spawn(name: ServiceName, vars: Record<string, string> = {}): Promise<Proc> {
    const label = name === 'worker' ? `worker-${++this.#replicas}` : name;
    this.#options.log(`starting ${label}`);
    const proc = await spawnService(
      name,
      { ...this.vars, ...vars },
      {
        label,
        ...(this.#options.profileDir === undefined ? {} : { profileDir: this.#options.profileDir }),
      },
    );
    this.procs.push(proc);
    return proc;
  }

  async stop(proc: Proc): Promise<void> {
    await stopProc(proc);
    this.procs.splice(this.procs.indexOf(proc), 1);
  }

  async stopAll(): Promise<void> {
    await Promise.all([...this.procs].map((proc) => this.stop(proc)));
  }

  /** Publishes fan-out (or `template`) task requests through the client, one event per task. */
  publisher(template: string): Publish {
    const requests = this.client.topics.requests;
    return (ids) =>
      this.client.publish(
        ids.map((id) => ({
          topic: requests,
          event: newEvent({
            type: 'io.mesh.task.requested',
            source: '/bench',
            id,
            correlationid: id,
            data: { template, input: { topic: `benchmark task ${id}` } },
          }),
        })),
      );
  }

  /** The outcome of a task on `mesh.outputs`: its id (the correlation id) and whether it completed. */
  static classify(this: void, record: ConsumedRecord): { taskId: string; ok: boolean } | undefined {
    const taskId = header(record, 'ce_correlationid');
    const type = header(record, 'ce_type');
    if (taskId === undefined || type === undefined) return undefined;
    return { taskId, ok: type === 'io.mesh.task.completed' };
  }

  /** Stops the services, deletes the topics and the Redis keys, closes the client. */
  async close(extraTopics: string[] = []): Promise<void> {
    this.#options.log(`${this.prefix}: stopping the services, deleting the topics and Redis keys`);
    await this.stopAll();
    const topics = [
      ...topicSpecs(this.config, this.#options.agents).map((s) => s.topic),
      ...extraTopics,
    ];
    // Right after heavy writes the broker may refuse for a moment (not the leader yet, still loading).
    for (let attempt = 1; ; attempt += 1) {
      try {
        const existing = new Set(await this.client.admin.listTopics());
        const left = topics.filter((topic) => existing.has(topic));
        if (left.length > 0) await this.client.admin.deleteTopics(left);
        break;
      } catch (error) {
        if (attempt < 3) {
          await sleep(1_000);
          continue;
        }
        this.#options.log(
          `could not delete the topics of ${this.prefix}: ${(error as Error).message}`,
        );
        break;
      }
    }
    await this.client.close();
    await removeKeys(this.config, `${this.client.keyPrefix}*`).catch((error: unknown) => {
      this.#options.log(
        `could not remove the Redis keys of ${this.prefix}: ${(error as Error).message}`,
      );
    });
  }
}
