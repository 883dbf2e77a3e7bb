/**
 * How every service process starts and stops: validate the config (a bad value ends the process with
 * one line per variable), build the runtime, let the service wire its consumers and routes, listen,
 * and on SIGTERM/SIGINT stop fetching, drain, commit and disconnect.
 */
import type { FastifyInstance } from 'fastify';
import { loadConfigOrExit, type LoadOptions, type MeshConfig } from '@mesh/config';
import { isMeshError, safeDetail } from '@mesh/errors';
import { createHttpServer, type WriteGuard } from '@mesh/http';
import { MeshRuntime, type RuntimeOptions } from '@mesh/runtime';

export interface ServiceContext {
  config: MeshConfig;
  runtime: MeshRuntime;
  app: FastifyInstance;
  requireToken: WriteGuard;
}

export interface ServiceDefinition {
  name: string;
  defaultHttpPort: number;
  /** Service-specific variables and required ones, validated with the core ones. */
  config?: Omit<LoadOptions, 'service' | 'defaultHttpPort'>;
  /**
   * Checks between variables that the per-variable table cannot express. Each problem is one line
   * naming the variable; any problem stops the process like a bad value (exit 78).
   */
  validate?: (config: MeshConfig) => string[];
  /** Agents whose work topics must exist. */
  agents?: (config: MeshConfig) => string[];
  runtime?: Omit<RuntimeOptions, 'agents'>;
  /** Starts the service's consumers, timers and routes. Returns a function that stops its own timers. */
  setup(context: ServiceContext): Promise<(() => Promise<void>) | void>;
}

export interface RunningService extends ServiceContext {
  /** The bound port (useful when MESH_HTTP_PORT=0). */
  port: number;
  stop(): Promise<void>;
}

/**
 * Starts a service. Exits the process with status 78 on bad config; throws (and the caller exits
 * non-zero) when the registry refuses a contract or a dependency cannot be reached at start.
 */
export async function startService(
  definition: ServiceDefinition,
  env: NodeJS.ProcessEnv = process.env,
): Promise<RunningService> {
  const config = loadConfigOrExit(
    { service: definition.name, defaultHttpPort: definition.defaultHttpPort, ...definition.config },
    env,
  );
  const problems = definition.validate?.(config) ?? [];
  if (problems.length > 0) {
    for (const line of problems) process.stderr.write(`${definition.name}: config: ${line}\n`);
    process.exit(78);
  }
  const runtime = new MeshRuntime(config, {
    ...definition.runtime,
    agents: definition.agents?.(config) ?? [],
  });
  const { app, requireToken } = createHttpServer({
    service: definition.name,
    metrics: runtime.metrics,
    readiness: () =>
      runtime.readiness() as unknown as Promise<{ ready: boolean; [k: string]: boolean }>,
    logger: runtime.log,
    ...(config.apiToken === undefined ? {} : { apiToken: config.apiToken }),
  });
  let stopOwn: (() => Promise<void>) | void = undefined;
  try {
    await runtime.start();
    stopOwn = await definition.setup({ config, runtime, app, requireToken });
    await app.listen({ host: config.http.host, port: config.http.port });
    // From here on, an outage of Kafka, Redis or the registry is in the log within seconds.
    runtime.watchReadiness();
  } catch (error) {
    // Nothing may stay open behind a failed start: a process would hang, a test would leak.
    if (stopOwn) await stopOwn().catch(() => undefined);
    await app.close().catch(() => undefined);
    await runtime.close().catch(() => undefined);
    throw error;
  }
  const context: ServiceContext = { config, runtime, app, requireToken };
  const address = app.server.address();
  const port = typeof address === 'object' && address !== null ? address.port : config.http.port;
  runtime.log.info({ port }, `${definition.name} started`);
  let stopping: Promise<void> | undefined;
  const stop = (): Promise<void> => {
    stopping ??= (async () => {
      runtime.log.info('stopping: draining in-flight events');
      if (stopOwn) await stopOwn();
      await app.close();
      await runtime.close();
      runtime.log.info('stopped');
    })();
    return stopping;
  };
  return { ...context, port, stop };
}

/** The entry point of a service's `main.ts`: starts it and wires the signals. */
export function main(definition: ServiceDefinition): void {
  startService(definition).then(
    (service) => {
      const onSignal = (signal: NodeJS.Signals): void => {
        service.runtime.log.info({ signal }, 'signal received');
        service.stop().then(
          () => process.exit(0),
          (error: unknown) => {
            process.stderr.write(`${definition.name}: shutdown failed: ${safeDetail(error)}\n`);
            process.exit(1);
          },
        );
      };
      process.once('SIGTERM', onSignal);
      process.once('SIGINT', onSignal);
    },
    (error: unknown) => {
      // A configuration fault found while setting up (a bad template file, rules file) is still a
      // configuration fault: exit 78 like a bad variable, so supervisors do not restart in a loop.
      if (isMeshError(error) && error.code === 'config_invalid') {
        for (const line of error.message.split('\n'))
          process.stderr.write(`${definition.name}: config: ${line}\n`);
        process.exit(78);
      }
      process.stderr.write(`${definition.name}: cannot start: ${safeDetail(error)}\n`);
      process.exit(1);
    },
  );
}
