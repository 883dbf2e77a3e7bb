/**
 * The only package that imports ioredis. Services and other packages get a connected client from
 * `createRedis` and use the `Redis` type re-exported here.
 */
import { Redis } from 'ioredis';
import { retryable } from '@mesh/errors';

export interface RedisConnection {
  url: string;
  password?: string;
}

export interface CreateRedisOptions {
  /** Shown in `CLIENT LIST`, so an operator can tell the mesh's connections apart. */
  connectionName: string;
  /**
   * Fail commands at once while disconnected instead of queueing them (the default): a consumer then
   * sees `redis_unavailable`, stops taking work and retries, rather than piling up promises.
   */
  offlineQueue?: boolean;
}

/** A client that reconnects forever with capped backoff; connecting starts at once. */
export function createRedis(connection: RedisConnection, options: CreateRedisOptions): Redis {
  const client = new Redis(connection.url, {
    ...(connection.password === undefined ? {} : { password: connection.password }),
    connectionName: options.connectionName,
    enableOfflineQueue: options.offlineQueue ?? false,
    maxRetriesPerRequest: 1,
    connectTimeout: 5_000,
    retryStrategy: (attempt) => Math.min(100 * 2 ** Math.min(attempt, 6), 2_000),
    lazyConnect: false,
    // Commands issued in the same tick (many handlers claiming at once) go out in one write.
    enableAutoPipelining: true,
  });
  // Connection errors are reported through readiness and command failures; without a listener
  // ioredis prints each reconnect failure as an unhandled error event.
  client.on('error', () => undefined);
  return client;
}

/** A Lua script run by hash (EVALSHA, falling back to EVAL once), so the body is sent only once. */
export type Script = (keys: string[], args: (string | number)[]) => Promise<unknown>;

/** Defines `lua` on the client under `name` (once per client) and returns a function that runs it. */
export function defineScript(
  client: Redis,
  name: string,
  lua: string,
  numberOfKeys: number,
): Script {
  const commands = client as unknown as Record<
    string,
    ((...args: (string | number)[]) => Promise<unknown>) | undefined
  >;
  if (commands[name] === undefined) client.defineCommand(name, { numberOfKeys, lua });
  return (keys, args) => {
    const command = commands[name];
    if (command === undefined) throw new Error(`script ${name} is not defined`);
    return command.call(client, ...keys, ...args);
  };
}

/** Waits until the client is connected. @throws MeshError `redis_unavailable` after `timeoutMs`. */
export async function waitForRedis(client: Redis, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  const status = (): string => client.status;
  while (Date.now() < deadline) {
    if (status() === 'ready') return;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  throw retryable('redis_unavailable', `Redis did not answer within ${timeoutMs} ms`);
}

/** True when Redis answers PING now. */
export async function pingRedis(client: Redis): Promise<boolean> {
  if (client.status !== 'ready') return false;
  try {
    return (await client.ping()) === 'PONG';
  } catch {
    return false;
  }
}

/** Runs Redis commands, turning any failure into a retryable `redis_unavailable` naming `what`. */
export async function withRedis<T>(what: string, fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (error) {
    throw redisFailure(error, what);
  }
}

/** Maps an ioredis failure onto the taxonomy: any command failure is a retryable `redis_unavailable`. */
export function redisFailure(error: unknown, what: string): Error {
  return retryable('redis_unavailable', `${what}: ${(error as Error).message}`, { cause: error });
}

export type { Redis };
