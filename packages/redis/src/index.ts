/**
 * The only package that imports ioredis. Services and other packages get a connected client from
 * `createRedis` and use the `Redis` type re-exported here.
 */
import { Redis } from 'ioredis';
import { certificateFault, retryable } from '@mesh/errors';

export interface RedisConnection {
  url: string;
  password?: string;
  /** PEM certificates of the CA that signed Redis's, for a rediss:// URL (else the public CAs). */
  ca?: string[];
}

export interface CreateRedisOptions {
  /** Shown in `CLIENT LIST`, so an operator can tell the mesh's connections apart. */
  connectionName: string;
  /**
   * Fail commands at once while disconnected instead of queueing them (the default): a consumer then
   * sees `redis_unavailable`, stops taking work and retries, rather than piling up promises.
   */
  offlineQueue?: boolean;
  /**
   * Told, in one line naming the variable to fix, when Redis refuses the connection's settings (a
   * wrong password, a certificate the CA file did not sign): waiting does not help with those.
   */
  onSettingsFault?: (message: string) => void;
  /**
   * How long a connection with commands outstanding may go without receiving anything before it is
   * taken for dead, closed and made again (default `redisSocketTimeoutMs`; 0: never).
   */
  socketTimeoutMs?: number;
}

/**
 * A connection that has received nothing for this long while commands wait on it is dead: a NAT that
 * forgot it, a host failed over behind a proxy. Nothing closes such a connection (no reset comes),
 * so without this its commands would wait for ever, TCP's retransmissions being acknowledged by
 * whatever still holds the connection, or for about 15 minutes where nothing does. On the new
 * connection ioredis sends them again; the mesh's scripts give the same answer to the same call
 * (a claim with its own token is claimed again). No command of the mesh blocks, and its scripts take
 * milliseconds, so a live Redis never comes near it.
 */
export const redisSocketTimeoutMs = 15_000;

/** A client that reconnects forever with capped backoff; connecting starts at once. */
export function createRedis(connection: RedisConnection, options: CreateRedisOptions): Redis {
  const client = new Redis(connection.url, {
    ...(connection.password === undefined ? {} : { password: connection.password }),
    ...(connection.ca === undefined ? {} : { tls: { ca: connection.ca } }),
    connectionName: options.connectionName,
    enableOfflineQueue: options.offlineQueue ?? false,
    maxRetriesPerRequest: 1,
    connectTimeout: 5_000,
    retryStrategy: (attempt) => Math.min(100 * 2 ** Math.min(attempt, 6), 2_000),
    lazyConnect: false,
    // Commands issued in the same tick (many handlers claiming at once) go out in one write.
    enableAutoPipelining: true,
    ...((options.socketTimeoutMs ?? redisSocketTimeoutMs) > 0
      ? { socketTimeout: options.socketTimeoutMs ?? redisSocketTimeoutMs }
      : {}),
  });
  // Connection errors are reported through readiness and command failures; without a listener
  // ioredis prints each reconnect failure as an unhandled error event.
  client.on('error', (error: unknown) => {
    const fault = redisSettingsFault(error);
    if (fault !== undefined) options.onSettingsFault?.(fault);
  });
  return client;
}

/**
 * What a Redis connection error says about the settings, naming the variable to fix, or undefined
 * when it may pass by itself (Redis restarting, a network fault).
 */
export function redisSettingsFault(error: unknown): string | undefined {
  if (!(error instanceof Error)) return undefined;
  const certificate = certificateFault(error, 'Redis', {
    ca: 'MESH_REDIS_TLS_CA_FILE',
    address: 'MESH_REDIS_URL',
  });
  if (certificate !== undefined) return certificate;
  if (/^WRONGPASS/.test(error.message))
    return `MESH_REDIS_PASSWORD (or the password in MESH_REDIS_URL) is wrong: ${error.message}`;
  if (/^NOAUTH/.test(error.message))
    return `Redis needs a password: set MESH_REDIS_PASSWORD or put it in MESH_REDIS_URL (${error.message})`;
  return undefined;
}

/** A Lua script run by hash (EVALSHA, falling back to EVAL once), so the body is sent only once. */
export type Script = (keys: string[], args: (string | number)[]) => Promise<unknown>;

/**
 * Defines `lua` on the client under `name` (once per client) and returns a function that runs it.
 * Without `numberOfKeys` the script takes any number of keys (one call for a whole batch).
 */
export function defineScript(
  client: Redis,
  name: string,
  lua: string,
  numberOfKeys?: number,
): Script {
  const commands = client as unknown as Record<
    string,
    ((...args: (string | number)[]) => Promise<unknown>) | undefined
  >;
  if (commands[name] === undefined)
    client.defineCommand(name, numberOfKeys === undefined ? { lua } : { numberOfKeys, lua });
  return (keys, args) => {
    const command = commands[name];
    if (command === undefined) throw new Error(`script ${name} is not defined`);
    return numberOfKeys === undefined
      ? command.call(client, keys.length, ...keys, ...args)
      : command.call(client, ...keys, ...args);
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

/**
 * Why Redis may drop the mesh's keys when it is full, or undefined when it may not: a `maxmemory`
 * with a `maxmemory-policy` other than `noeviction`. Every mesh key has a TTL, so even a
 * `volatile-*` policy may evict a lease or a done marker, which would let an event run twice. Read
 * from `INFO memory`, which managed Redis services allow where they refuse `CONFIG GET`.
 */
export async function evictionRisk(client: Redis): Promise<string | undefined> {
  const info = await client.info('memory');
  const field = (name: string): string | undefined =>
    new RegExp(`^${name}:(.*)$`, 'm').exec(info)?.[1]?.trim();
  const policy = field('maxmemory_policy');
  const limit = Number(field('maxmemory') ?? '0');
  if (policy === undefined || policy === 'noeviction' || !(limit > 0)) return undefined;
  return `maxmemory-policy ${policy} with maxmemory ${limit} bytes`;
}

/** Runs Redis commands, turning any failure into a retryable `redis_unavailable` naming `what`. */
export async function withRedis<T>(what: string, fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (error) {
    throw redisFailure(error, what);
  }
}

/**
 * Runs `call` now and, while it fails, again every second for at most `forMs`, in the background:
 * for what must reach Redis once it answers again, such as giving back a lease or a lock that a
 * call whose answer was lost may have taken (it would otherwise hold until its TTL).
 */
export function retryInBackground(call: () => Promise<unknown>, forMs: number): void {
  const until = Date.now() + forMs;
  const attempt = (): void => {
    call().catch(() => {
      if (Date.now() + 1_000 < until) setTimeout(attempt, 1_000).unref();
    });
  };
  attempt();
}

/** Maps an ioredis failure onto the taxonomy: any command failure is a retryable `redis_unavailable`. */
export function redisFailure(error: unknown, what: string): Error {
  return retryable('redis_unavailable', `${what}: ${(error as Error).message}`, { cause: error });
}

export type { Redis };

/**
 * Gathers the calls made while one turn of the event loop runs and hands them to `run` together,
 * at most `maxBatch` at a time: many handlers claiming at once cost one script call, not one each.
 * `run` answers every item, in order; a failure of `run` fails every item of its batch.
 */
export class Coalescer<I, O> {
  readonly #run: (items: I[]) => Promise<O[]>;
  readonly #maxBatch: number;
  #queue: { item: I; resolve: (value: O) => void; reject: (error: unknown) => void }[] = [];
  #scheduled = false;

  constructor(run: (items: I[]) => Promise<O[]>, options: { maxBatch?: number } = {}) {
    this.#run = run;
    this.#maxBatch = options.maxBatch ?? 512;
  }

  add(item: I): Promise<O> {
    return new Promise<O>((resolve, reject) => {
      this.#queue.push({ item, resolve, reject });
      if (!this.#scheduled) {
        this.#scheduled = true;
        setImmediate(() => this.#flush());
      }
    });
  }

  #flush(): void {
    this.#scheduled = false;
    const queue = this.#queue;
    this.#queue = [];
    for (let start = 0; start < queue.length; start += this.#maxBatch) {
      const batch = queue.slice(start, start + this.#maxBatch);
      let running: Promise<O[]>;
      try {
        running = this.#run(batch.map((entry) => entry.item));
      } catch (error) {
        running = Promise.reject(error instanceof Error ? error : new Error(String(error)));
      }
      running.then(
        (results) => {
          for (let i = 0; i < batch.length; i += 1) {
            const entry = batch[i];
            if (entry === undefined) continue;
            if (i < results.length) entry.resolve(results[i] as O);
            else
              entry.reject(new Error(`batch answered ${results.length} of ${batch.length} items`));
          }
        },
        (error: unknown) => {
          for (const entry of batch) entry.reject(error);
        },
      );
    }
  }
}
