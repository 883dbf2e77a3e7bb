/**
 * The queryable record of dead letters and escalations (Redis). A dead letter keeps its original key,
 * value and headers so it can be replayed byte for byte.
 */
import { withRedis, type Redis } from '@mesh/redis';

export type DeadLetterStatus = 'parked' | 'retrying' | 'escalated' | 'replayed' | 'discarded';

export interface DeadLetter {
  id: string;
  failure: string;
  detail: string;
  failedBy?: string;
  originTopic?: string;
  type?: string;
  eventId?: string;
  taskId?: string;
  agent?: string;
  attempt?: number;
  at: string;
  status: DeadLetterStatus;
  action: string;
  reason: string;
  history: { at: string; status: DeadLetterStatus; note: string }[];
  /** Where it sits on mesh.dlq. */
  partition: number;
  offset: string;
  key: string | null;
  /** base64 of the original value. */
  value: string;
  headers: Record<string, string>;
}

export interface Escalation {
  id: string;
  at: string;
  deadLetterId?: string;
  taskId?: string;
  eventId: string;
  eventType: string;
  failure: string;
  detail: string;
  originTopic?: string;
  agent?: string;
  reason: string;
}

export interface DeadLetterFilter {
  failure?: string;
  agent?: string;
  task?: string;
  /** One status, or any of several. */
  status?: string | readonly string[];
  limit: number;
}

export class DeadLetterStore {
  readonly #redis: Redis;
  readonly #ttlMs: number;
  readonly #prefix: string;

  /** `prefix` is the mesh's Redis key prefix (`mesh:` by default). */
  constructor(redis: Redis, options: { ttlMs: number; prefix: string }) {
    this.#redis = redis;
    this.#ttlMs = options.ttlMs;
    this.#prefix = options.prefix;
  }

  /** Stores a dead letter unless it is already stored (a redelivery); returns whether it was new. */
  async add(letter: DeadLetter): Promise<boolean> {
    return withRedis('could not store a dead letter', async () => {
      const created = await this.#redis.set(
        `${this.#prefix}dlq:${letter.id}`,
        JSON.stringify(letter),
        'PX',
        this.#ttlMs,
        'NX',
      );
      if (created !== 'OK') return false;
      // Letters expire a TTL after their last change; their index entries a TTL after they came,
      // dropped here (dead letters are rare), or the index would only grow.
      const index = `${this.#prefix}dlq:index`;
      await Promise.all([
        this.#redis.zadd(index, Date.parse(letter.at), letter.id),
        this.#redis.zremrangebyscore(index, '-inf', `(${Date.now() - this.#ttlMs}`),
      ]);
      return true;
    });
  }

  async get(id: string): Promise<DeadLetter | undefined> {
    const text = await withRedis('could not read a dead letter', () =>
      this.#redis.get(`${this.#prefix}dlq:${id}`),
    );
    return text === null ? undefined : (JSON.parse(text) as DeadLetter);
  }

  async setStatus(letter: DeadLetter, status: DeadLetterStatus, note: string): Promise<void> {
    letter.status = status;
    letter.history.push({ at: new Date().toISOString(), status, note });
    await withRedis('could not update a dead letter', () =>
      this.#redis.set(`${this.#prefix}dlq:${letter.id}`, JSON.stringify(letter), 'PX', this.#ttlMs),
    );
  }

  /** Newest first, filtered. */
  async list(filter: DeadLetterFilter): Promise<DeadLetter[]> {
    const ids = await withRedis('could not list dead letters', () =>
      this.#redis.zrevrange(`${this.#prefix}dlq:index`, 0, 4_999),
    );
    const out: DeadLetter[] = [];
    const statuses = filter.status === undefined ? undefined : [filter.status].flat();
    for (let i = 0; i < ids.length && out.length < filter.limit; i += 200) {
      const chunk = ids.slice(i, i + 200);
      const docs = await withRedis('could not read dead letters', () =>
        this.#redis.mget(chunk.map((id) => `${this.#prefix}dlq:${id}`)),
      );
      for (const doc of docs) {
        if (doc === null) continue;
        const letter = JSON.parse(doc) as DeadLetter;
        if (filter.failure !== undefined && letter.failure !== filter.failure) continue;
        if (filter.agent !== undefined && letter.agent !== filter.agent) continue;
        if (filter.task !== undefined && letter.taskId !== filter.task) continue;
        if (statuses !== undefined && !statuses.includes(letter.status)) continue;
        out.push(letter);
        if (out.length >= filter.limit) break;
      }
    }
    return out;
  }

  /** Counts by status, for the parked gauge. */
  async countByStatus(): Promise<Record<string, number>> {
    const letters = await this.list({ limit: 5_000 });
    const counts: Record<string, number> = {};
    for (const letter of letters) counts[letter.status] = (counts[letter.status] ?? 0) + 1;
    return counts;
  }

  /** How many remediations were already tried for an event (bounded retries), after adding one. */
  async nextRemediation(eventId: string): Promise<number> {
    return withRedis('could not count remediations', async () => {
      const key = `${this.#prefix}dlq:remediations:${eventId}`;
      const count = await this.#redis.incr(key);
      await this.#redis.pexpire(key, this.#ttlMs);
      return count - 1;
    });
  }

  async remediations(eventId: string): Promise<number> {
    const value = await withRedis('could not count remediations', () =>
      this.#redis.get(`${this.#prefix}dlq:remediations:${eventId}`),
    );
    return Number(value ?? 0);
  }

  async addEscalation(escalation: Escalation): Promise<void> {
    await withRedis('could not store an escalation', async () => {
      await this.#redis
        .multi()
        .lpush(`${this.#prefix}escalations`, JSON.stringify(escalation))
        .ltrim(`${this.#prefix}escalations`, 0, 9_999)
        .exec();
    });
  }

  async escalations(limit: number): Promise<Escalation[]> {
    const raw = await withRedis('could not list escalations', () =>
      this.#redis.lrange(`${this.#prefix}escalations`, 0, limit - 1),
    );
    return raw.map((r) => JSON.parse(r) as Escalation);
  }

  /** Forgets a consumer group's done marker of an event so that a replay runs it again. */
  async forgetDone(idempotencyKey: string): Promise<void> {
    await withRedis('could not clear an idempotency key', () => this.#redis.del(idempotencyKey));
  }
}
