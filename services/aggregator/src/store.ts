/**
 * The join state of every open stage, in Redis, so that it survives a restart and is shared by
 * every aggregator replica.
 *
 * `mesh:agg:<taskId>:<stageId>` is a hash: `spec` (the join spec of the first result), `first` (the
 * attributes of the first result, the cause of a deadline decision), `node:<nodeId>` (one outcome
 * per node, the first one wins), `version` (bumped by every change), and once decided `closed` (the
 * events to publish and their cause), `final` (`claimed` when this stage won the task's final
 * marker, `taken` when another path had ended the task) and `published` (set once Kafka
 * acknowledged them, when the outcomes, the spec, the first cause and the closed form are dropped).
 * The hash expires `ttlMs` after its last change.
 *
 * Changes are compare-and-set on `version` in one Lua script, so recording an outcome, deciding
 * (in TypeScript, by the pure join rules) and closing are atomic against a concurrent result or the
 * deadline timer of any replica: a writer whose read went stale gets `conflict` and decides again.
 *
 * The sorted set of deadlines (`mesh:agg:deadlines`) holds a stage from its first result when it
 * has a deadline (score: the deadline), and every closed stage until it is published (score: the
 * time after which the timer re-publishes it, in case the process that closed it died).
 */
import type { MeshEventAttributes } from '@mesh/envelope';
import { defineScript, redisFailure, type Redis, type Script } from '@mesh/redis';
import type { JoinSpec, NodeOutcome } from './join.ts';
import type { StageCompletedData, StageRef, TaskOutcome } from './outcome.ts';

/** What `deriveEvent` needs of a cause. */
export type CauseAttributes = Pick<
  MeshEventAttributes,
  | 'specversion'
  | 'id'
  | 'source'
  | 'type'
  | 'correlationid'
  | 'hopcount'
  | 'agentpath'
  | 'traceparent'
  | 'tracestate'
>;

export function causeOf(event: MeshEventAttributes): CauseAttributes {
  const cause: CauseAttributes = {
    specversion: event.specversion,
    id: event.id,
    source: event.source,
    type: event.type,
  };
  if (event.correlationid !== undefined) cause.correlationid = event.correlationid;
  if (event.hopcount !== undefined) cause.hopcount = event.hopcount;
  if (event.agentpath !== undefined) cause.agentpath = event.agentpath;
  if (event.traceparent !== undefined) cause.traceparent = event.traceparent;
  if (event.tracestate !== undefined) cause.tracestate = event.tracestate;
  return cause;
}

/**
 * A decided stage: exactly what is (re-)published, and the event it is derived from. Once published
 * it is dropped (only `published` stays): it is never published again.
 */
export interface ClosedStage {
  cause: CauseAttributes;
  reason: string;
  stage: StageCompletedData;
  /** The task outcome, for the final stage; published only when `final` is `claimed`. */
  outcome?: TaskOutcome;
}

export interface StageState {
  /** `0` for a stage never seen; compare-and-set token of `commit`. */
  version: string;
  spec?: JoinSpec;
  first?: CauseAttributes;
  outcomes: Record<string, NodeOutcome>;
  closed?: ClosedStage;
  final?: 'claimed' | 'taken';
  published: boolean;
}

export interface Change {
  /** The outcome to record (none when the deadline timer closes the stage). */
  node?: { id: string; outcome: NodeOutcome };
  spec: JoinSpec;
  first: CauseAttributes;
  /** Deadline of the stage, ms since the epoch, to schedule on the first record. */
  deadline?: number;
  /** Closes the stage with this decision; for the final stage also claims `mesh:final:<taskId>`. */
  close?: { closed: ClosedStage; finalType?: string; republishAt: number };
}

export type CommitResult =
  { state: 'conflict' } | { state: 'recorded' } | { state: 'closed'; final?: 'claimed' | 'taken' };

// KEYS: state hash, deadlines zset, final marker.
// ARGV: expected version, node id ('' for none), outcome, spec, first, deadline ms ('' for none),
//       member, ttl ms, closed ('' to stay open), final type ('' when not final), republish score.
const commitScript = `
local version = redis.call('HGET', KEYS[1], 'version') or '0'
if version ~= ARGV[1] or redis.call('HEXISTS', KEYS[1], 'closed') == 1
  or redis.call('HEXISTS', KEYS[1], 'published') == 1 then return {'conflict', ''} end
if ARGV[2] ~= '' then redis.call('HSET', KEYS[1], 'node:' .. ARGV[2], ARGV[3]) end
redis.call('HSETNX', KEYS[1], 'spec', ARGV[4])
redis.call('HSETNX', KEYS[1], 'first', ARGV[5])
redis.call('HINCRBY', KEYS[1], 'version', 1)
redis.call('PEXPIRE', KEYS[1], ARGV[8])
if ARGV[9] == '' then
  if ARGV[6] ~= '' then redis.call('ZADD', KEYS[2], 'NX', ARGV[6], ARGV[7]) end
  return {'recorded', ''}
end
local final = ''
if ARGV[10] ~= '' then
  if redis.call('SET', KEYS[3], ARGV[10], 'NX', 'PX', ARGV[8]) then final = 'claimed' else final = 'taken' end
end
redis.call('HSET', KEYS[1], 'closed', ARGV[9], 'final', final)
redis.call('ZADD', KEYS[2], ARGV[11], ARGV[7])
return {'closed', final}
`;

// Setting the flag on an expired hash would recreate it without a TTL, hence the EXISTS. A
// published stage is read only to learn that it was decided and published (a late result is then
// ignored): its outcomes, spec, first cause and closed form go; `version`, `final` and `published`
// stay, for the TTL.
const publishedScript = `
if redis.call('EXISTS', KEYS[1]) == 1 then
  for _, field in ipairs(redis.call('HKEYS', KEYS[1])) do
    if string.sub(field, 1, 5) == 'node:' or field == 'spec' or field == 'first' or field == 'closed' then
      redis.call('HDEL', KEYS[1], field)
    end
  end
  redis.call('HSET', KEYS[1], 'published', '1')
end
redis.call('ZREM', KEYS[2], ARGV[1])
return 1
`;

// Takes up to ARGV[2] due members and pushes each ARGV[3] ms ahead, so that of several replicas
// one handles a due stage, and another takes it over only if that one died.
const claimDueScript = `
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
for _, member in ipairs(due) do redis.call('ZADD', KEYS[1], tonumber(ARGV[1]) + tonumber(ARGV[3]), member) end
return due
`;

export interface JoinStoreOptions {
  /** The mesh's Redis key prefix (`mesh:` for the default topic prefix), shared with the other services. */
  prefix: string;
  /** How long a stage's state and the task's final marker are kept (the idempotency TTL). */
  ttlMs: number;
}

const separator = '\u0000';

export class JoinStore {
  readonly #redis: Redis;
  readonly #options: JoinStoreOptions;
  // Run by hash (EVALSHA): the script bodies are sent once per connection, not with every call.
  readonly #commit: Script;
  readonly #published: Script;
  readonly #claimDue: Script;

  constructor(redis: Redis, options: JoinStoreOptions) {
    this.#redis = redis;
    this.#options = options;
    this.#commit = defineScript(redis, 'meshJoinCommit', commitScript, 3);
    this.#published = defineScript(redis, 'meshJoinPublished', publishedScript, 2);
    this.#claimDue = defineScript(redis, 'meshJoinClaimDue', claimDueScript, 1);
  }

  stateKey(ref: StageRef): string {
    return `${this.#options.prefix}agg:${ref.taskId}:${ref.stageId}`;
  }

  finalKey(taskId: string): string {
    return `${this.#options.prefix}final:${taskId}`;
  }

  /** The sorted set of stage deadlines of this mesh. */
  get deadlinesKey(): string {
    return `${this.#options.prefix}agg:deadlines`;
  }

  member(ref: StageRef): string {
    return `${ref.taskId}${separator}${ref.stageId}`;
  }

  refOf(member: string): StageRef | undefined {
    const at = member.lastIndexOf(separator);
    if (at <= 0) return undefined;
    return { taskId: member.slice(0, at), stageId: member.slice(at + 1) };
  }

  /** The stage's state as stored now. @throws MeshError `redis_unavailable` (retryable). */
  async load(ref: StageRef): Promise<StageState> {
    let hash: Record<string, string>;
    try {
      hash = await this.#redis.hgetall(this.stateKey(ref));
    } catch (error) {
      throw redisFailure(error, 'could not read join state');
    }
    const outcomes: Record<string, NodeOutcome> = {};
    for (const [field, value] of Object.entries(hash))
      if (field.startsWith('node:')) outcomes[field.slice(5)] = JSON.parse(value) as NodeOutcome;
    const state: StageState = {
      version: hash.version ?? '0',
      outcomes,
      published: hash.published === '1',
    };
    if (hash.spec !== undefined) state.spec = JSON.parse(hash.spec) as JoinSpec;
    if (hash.first !== undefined) state.first = JSON.parse(hash.first) as CauseAttributes;
    if (hash.closed !== undefined) state.closed = JSON.parse(hash.closed) as ClosedStage;
    if (hash.final === 'claimed' || hash.final === 'taken') state.final = hash.final;
    return state;
  }

  /**
   * Applies `change` if the stage is still at `version` and open; `conflict` otherwise (read again
   * and decide again). @throws MeshError `redis_unavailable` (retryable).
   */
  async commit(ref: StageRef, version: string, change: Change): Promise<CommitResult> {
    let reply: [string, string];
    try {
      reply = (await this.#commit(
        [this.stateKey(ref), this.deadlinesKey, this.finalKey(ref.taskId)],
        [
          version,
          change.node?.id ?? '',
          change.node === undefined ? '' : JSON.stringify(change.node.outcome),
          JSON.stringify(change.spec),
          JSON.stringify(change.first),
          change.deadline === undefined ? '' : String(change.deadline),
          this.member(ref),
          String(this.#options.ttlMs),
          change.close === undefined ? '' : JSON.stringify(change.close.closed),
          change.close?.finalType ?? '',
          String(change.close?.republishAt ?? 0),
        ],
      )) as [string, string];
    } catch (error) {
      throw redisFailure(error, 'could not update join state');
    }
    const [state, final] = reply;
    if (state === 'conflict') return { state };
    if (state === 'recorded') return { state };
    return final === 'claimed' || final === 'taken'
      ? { state: 'closed', final }
      : { state: 'closed' };
  }

  /**
   * Records that the stage's events were acknowledged by Kafka, and drops what only deciding and
   * publishing needed: the nodes' outcomes, the spec, the first cause and the closed form, which
   * would otherwise stay in Redis for the TTL: a stage then takes about 350 bytes, its key included.
   * @throws MeshError `redis_unavailable`.
   */
  async markPublished(ref: StageRef): Promise<void> {
    try {
      await this.#published([this.stateKey(ref), this.deadlinesKey], [this.member(ref)]);
    } catch (error) {
      throw redisFailure(error, 'could not mark a stage published');
    }
  }

  /**
   * Takes up to `limit` stages whose deadline or re-publish time is due, pushing each `leaseMs`
   * ahead. @throws MeshError `redis_unavailable`.
   */
  async claimDue(now: number, leaseMs: number, limit: number): Promise<string[]> {
    try {
      return (await this.#claimDue(
        [this.deadlinesKey],
        [String(now), String(limit), String(leaseMs)],
      )) as string[];
    } catch (error) {
      throw redisFailure(error, 'could not read stage deadlines');
    }
  }

  /** Schedules `member` at `at` (ms). @throws MeshError `redis_unavailable`. */
  async schedule(member: string, at: number): Promise<void> {
    try {
      await this.#redis.zadd(this.deadlinesKey, at, member);
    } catch (error) {
      throw redisFailure(error, 'could not schedule a stage');
    }
  }

  /** Drops `member` from the deadlines. @throws MeshError `redis_unavailable`. */
  async unschedule(member: string): Promise<void> {
    try {
      await this.#redis.zrem(this.deadlinesKey, member);
    } catch (error) {
      throw redisFailure(error, 'could not unschedule a stage');
    }
  }
}
