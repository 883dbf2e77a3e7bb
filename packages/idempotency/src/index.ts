/**
 * Effectively-once processing over at-least-once delivery (docs/contract.md, "Delivery guarantees").
 *
 * A key `mesh:idem:<group>:<event id>` holds either a processing lease `lease:<token>` that expires
 * after the lease TTL unless renewed, or a done marker `done:<outcome>` kept for the idempotency TTL.
 * Two replicas never run the same event at once (only one holds the lease); a replica that dies
 * loses its lease when it expires and another takes the event over; an event already done is not
 * run again. Every change is one Lua script, so it is atomic on the server.
 */
import { randomUUID } from 'node:crypto';
import {
  Coalescer,
  defineScript,
  redisFailure,
  retryInBackground,
  type Redis,
  type Script,
} from '@mesh/redis';

// Claims and done markers are batched: every claim (or completion) made while one turn of the event
// loop runs goes to Redis as one script call over all of their keys. A claim's lease token is the
// batch's token and the key's position (ARGV[2] .. '/' .. i), and the completions of a batch share
// their outcome (ARGV[2]): one argument per event, the key, since each argument costs the client.
const claimScript = `
local out = {}
for i, key in ipairs(KEYS) do
  local token = ARGV[2] .. '/' .. i
  local v = redis.call('GET', key)
  if not v then
    redis.call('SET', key, 'lease:' .. token, 'PX', ARGV[1])
    out[#out + 1] = 'claimed'
    out[#out + 1] = ''
  elseif string.sub(v, 1, 5) == 'done:' then
    out[#out + 1] = 'done'
    out[#out + 1] = string.sub(v, 6)
  elseif v == 'lease:' .. token then
    redis.call('PEXPIRE', key, ARGV[1])
    out[#out + 1] = 'claimed'
    out[#out + 1] = ''
  else
    out[#out + 1] = 'leased'
    out[#out + 1] = tostring(redis.call('PTTL', key))
  end
end
return out
`;
// 1 when renewed; otherwise what the key holds instead ('' when nothing: it lapsed).
const renewScript = `
local v = redis.call('GET', KEYS[1])
if v == 'lease:' .. ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return v or ''
`;
const completeScript = `
local done = 0
for i, key in ipairs(KEYS) do
  local v = redis.call('GET', key)
  if not (v and string.sub(v, 1, 5) == 'done:') then
    redis.call('SET', key, 'done:' .. ARGV[2], 'PX', ARGV[1])
    done = done + 1
  end
end
return done
`;
// The leases a claim batch may have taken (ARGV[1]: its token) before its answer was lost.
const releaseBatchScript = `
local released = 0
for i, key in ipairs(KEYS) do
  if redis.call('GET', key) == 'lease:' .. ARGV[1] .. '/' .. i then
    redis.call('DEL', key)
    released = released + 1
  end
end
return released
`;
const releaseScript = `
if redis.call('GET', KEYS[1]) == 'lease:' .. ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
`;

export type Claim =
  | { state: 'claimed'; lease: Lease }
  | { state: 'done'; outcome: string }
  /** Another holder runs it now; try again after `retryInMs` (the lease's remaining time). */
  | { state: 'leased'; retryInMs: number };

export interface Lease {
  readonly key: string;
  readonly token: string;
  /** The key every external side effect of this event should carry (`ctx.idempotencyKey`). */
  readonly idempotencyKey: string;
}

/** Why a held lease may no longer keep other members off its event. */
export type LeaseTrouble =
  /**
   * It is no longer this holder's: it expired and another holder took it (the event may run
   * twice), or completed the event, or nobody holds it now (renewals failed past its TTL).
   */
  | { kind: 'lost'; reason: string }
  /** Its renewals fail (Redis does not answer): it lapses at the end of its TTL unless one gets through. */
  | { kind: 'unrenewed'; reason: string };

export interface IdempotencyOptions {
  leaseTtlMs: number;
  doneTtlMs: number;
  keyPrefix?: string;
}

interface Held {
  renewedAt: number;
  lost: boolean;
  /** Its renewals fail (Redis does not answer) since the last one that did not. */
  failing: boolean;
  onTrouble: ((trouble: LeaseTrouble) => void) | undefined;
}

export class IdempotencyStore {
  readonly #options: Required<IdempotencyOptions>;
  readonly #claims: Coalescer<string, [string, string]>;
  readonly #renew: Script;
  /** Done markers waiting to be written, one batch per outcome. */
  readonly #completions = new Map<string, Coalescer<string, void>>();
  readonly #complete: Script;
  readonly #release: Script;
  readonly #held = new Map<Lease, Held>();
  /** Unique to this store; with a counter, the token of each claim batch. */
  readonly #tokenBase = `${randomUUID()}:`;
  #batches = 0;
  #renewal: NodeJS.Timeout | undefined;

  constructor(redis: Redis, options: IdempotencyOptions) {
    this.#options = { keyPrefix: 'mesh:idem:', ...options };
    const claim = defineScript(redis, 'meshIdemClaimMany', claimScript);
    this.#complete = defineScript(redis, 'meshIdemCompleteMany', completeScript);
    const releaseBatch = defineScript(redis, 'meshIdemReleaseBatch', releaseBatchScript);
    this.#claims = new Coalescer(async (keys) => {
      const token = `${this.#tokenBase}${(this.#batches += 1)}`;
      let reply: string[];
      try {
        reply = (await claim(keys, [this.#options.leaseTtlMs, token])) as string[];
      } catch (error) {
        // Redis may have taken the leases before the answer was lost (ioredis gives up a command a
        // dead connection left unanswered when it cannot send it again): each event, claimed
        // again with another token, would wait for its own lease to lapse. They are given back
        // once Redis answers.
        retryInBackground(() => releaseBatch(keys, [token]), this.#options.leaseTtlMs);
        throw error;
      }
      return keys.map((_, i) => {
        const state = reply[2 * i] ?? '';
        // A claimed key's token is the batch's and its position, as the script made it.
        return [state, state === 'claimed' ? `${token}/${i + 1}` : (reply[2 * i + 1] ?? '')];
      });
    });
    this.#renew = defineScript(redis, 'meshIdemRenew', renewScript, 1);
    this.#release = defineScript(redis, 'meshIdemRelease', releaseScript, 1);
  }

  get #renewEveryMs(): number {
    return Math.max(250, Math.floor(this.#options.leaseTtlMs / 3));
  }

  get leaseTtlMs(): number {
    return this.#options.leaseTtlMs;
  }

  key(group: string, eventId: string): string {
    return `${this.#options.keyPrefix}${group}:${eventId}`;
  }

  /**
   * Claims `eventId` for `group`.
   * @throws MeshError `redis_unavailable` (retryable): the event must be tried again later, not run.
   */
  claim(group: string, eventId: string): Promise<Claim> {
    const key = this.key(group, eventId);
    return this.#claims.add(key).then(
      ([state, detail]): Claim => {
        if (state === 'claimed')
          return {
            state,
            lease: { key, token: detail, idempotencyKey: `${group}:${eventId}` },
          };
        if (state === 'done') return { state, outcome: detail };
        const ttl = Number(detail);
        return {
          state: 'leased',
          retryInMs: Number.isFinite(ttl) && ttl > 0 ? ttl : this.#options.leaseTtlMs,
        };
      },
      (error: unknown) => {
        throw redisFailure(error, 'could not claim an event');
      },
    );
  }

  /** Extends the lease; false when it was lost (expired and taken over). @throws MeshError `redis_unavailable`. */
  async renew(lease: Lease): Promise<boolean> {
    return (await this.#renewOrWhy(lease)) === undefined;
  }

  /** Extends the lease: undefined when it did, otherwise how it was lost. */
  async #renewOrWhy(lease: Lease): Promise<string | undefined> {
    let reply: unknown;
    try {
      reply = await this.#renew([lease.key], [lease.token, this.#options.leaseTtlMs]);
    } catch (error) {
      throw redisFailure(error, 'could not renew a lease');
    }
    if (reply === 1) return undefined;
    if (typeof reply === 'string' && reply.startsWith('done:'))
      return 'lease expired and another holder completed the event';
    if (typeof reply === 'string' && reply.startsWith('lease:'))
      return 'lease expired and was taken over';
    return 'lease expired, and nobody holds it now';
  }

  /**
   * Marks the event done with its outcome, kept for the idempotency TTL. Called only after the
   * outcome was acknowledged by Kafka. @throws MeshError `redis_unavailable`.
   */
  complete(lease: Lease, outcome: string): Promise<void> {
    let completions = this.#completions.get(outcome);
    if (completions === undefined) {
      completions = new Coalescer<string, void>(async (keys) => {
        await this.#complete(keys, [this.#options.doneTtlMs, outcome]);
        return keys.map(() => undefined);
      });
      this.#completions.set(outcome, completions);
    }
    return completions.add(lease.key).catch((error: unknown) => {
      throw redisFailure(error, 'could not mark an event done');
    });
  }

  /**
   * Gives the lease up so that a retry may claim the event at once. Never throws: when Redis does not
   * answer, the lease is given back in the background once it does (it would otherwise hold the
   * event's next delivery until it lapses).
   */
  async release(lease: Lease): Promise<void> {
    const give = (): Promise<unknown> => this.#release([lease.key], [lease.token]);
    await give().catch(() => retryInBackground(give, this.#options.leaseTtlMs));
  }

  /**
   * Runs `work` while renewing the lease every third of its TTL (`hold`, then `unhold`), reporting
   * to `onTrouble` as `hold` does.
   */
  async withRenewal<T>(
    lease: Lease,
    work: () => Promise<T>,
    onTrouble?: (trouble: LeaseTrouble) => void,
  ): Promise<T> {
    this.hold(lease, onTrouble);
    try {
      return await work();
    } finally {
      this.unhold(lease);
    }
  }

  /**
   * Renews the lease every third of its TTL until `unhold`. `onTrouble` is called once if the lease
   * was lost (expired and taken over: the caller should treat its result as possibly duplicated),
   * and once for each spell of renewals that fail (Redis does not answer), not at every attempt: a
   * Redis outage would otherwise log every running handler three times a TTL. One timer serves
   * every lease of this store: most events finish long before their first renewal is due, and a
   * timer per event was a measurable share of the runtime's CPU.
   */
  hold(lease: Lease, onTrouble?: (trouble: LeaseTrouble) => void): void {
    this.#held.set(lease, { renewedAt: Date.now(), lost: false, failing: false, onTrouble });
    this.#renewal ??= setInterval(() => this.#renewDue(), this.#renewEveryMs / 2).unref();
  }

  /** Stops renewing the lease (its event has an outcome, or it was given up). */
  unhold(lease: Lease): void {
    this.#held.delete(lease);
    if (this.#held.size === 0) {
      clearInterval(this.#renewal);
      this.#renewal = undefined;
    }
  }

  /** Renews each running lease whose last renewal is a third of the TTL old (within half that). */
  #renewDue(): void {
    const now = Date.now();
    for (const [lease, entry] of this.#held) {
      if (now - entry.renewedAt < this.#renewEveryMs) continue;
      entry.renewedAt = now;
      this.#renewOrWhy(lease).then(
        (lost) => {
          entry.failing = false;
          if (lost !== undefined && !entry.lost) {
            entry.lost = true;
            entry.onTrouble?.({ kind: 'lost', reason: lost });
          }
        },
        (error: unknown) => {
          if (entry.failing) return;
          entry.failing = true;
          entry.onTrouble?.({ kind: 'unrenewed', reason: (error as Error).message });
        },
      );
    }
  }
}
