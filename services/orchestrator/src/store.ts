/**
 * The orchestrator's task-state projection in Redis (keys in docs/services.md): one JSON document
 * per task, the task's causal chain, the latest tasks, deadlines, request idempotency keys and the
 * final-state marker shared with the aggregator.
 */
import { randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import type { MeshEventAttributes } from '@mesh/envelope';
import { retryable } from '@mesh/errors';
import {
  Coalescer,
  defineScript,
  retryInBackground,
  withRedis,
  type Redis,
  type Script,
} from '@mesh/redis';
import type { Budget, PlannedStage } from './templates.ts';

export const taskStatuses = [
  'accepted',
  'running',
  'awaiting_approval',
  'completed',
  'failed',
  'cancelled',
] as const;
export type TaskStatus = (typeof taskStatuses)[number];
export type StageStatus =
  'pending' | 'dispatched' | 'awaiting_approval' | 'completed' | 'partial' | 'failed';

export interface Usage {
  promptTokens: number;
  completionTokens: number;
  costUsd: number;
  steps: number;
}

export interface StageState {
  status: StageStatus;
  results?: Record<string, unknown>;
  failures?: Record<string, unknown>;
  startedAt?: string;
  endedAt?: string;
  /** The join deadline given to the aggregator, kept so that a re-published dispatch carries it. */
  deadline?: string;
}

export interface TaskState {
  id: string;
  status: TaskStatus;
  template: string;
  createdAt: string;
  updatedAt: string;
  input: Record<string, unknown>;
  budget: Budget;
  usage: Usage;
  deadline?: string;
  synthesis?: 'merge' | 'concat';
  planner?: { agent: string };
  plan?: PlannedStage[];
  stages: Record<string, StageState>;
  output?: Record<string, unknown>;
  failure?: { reason: string; detail: string };
  /** The request's attributes, the root of the lineage of events the orchestrator emits on timers. */
  request?: Omit<MeshEventAttributes, 'extensions'>;
}

/** Work under a task's lock: its state, or without one, the final type of a task no longer kept. */
export type LockedWork<T> = (state: TaskState | undefined, ended?: string) => Promise<T>;

export interface StatusCount {
  count: number;
  /** When the oldest task in this status was created (ms since the epoch); absent when none is. */
  oldestCreatedAt?: number;
}

export interface TaskFilter {
  /** Only tasks in one of these states. */
  status?: readonly TaskStatus[];
  /** Only tasks created before this time (ms since the epoch). */
  createdBefore?: number;
  limit: number;
}

/** Index entries one `list` reads at most. */
const listScanBound = 10_000;
/** Tasks one round of `indexStatuses` files. */
const indexChunk = 500;

export interface EventSummary {
  id: string;
  type: string;
  time?: string;
  source: string;
  topic: string;
  causationid?: string;
  hopcount?: number;
  agent?: string;
  agentpath?: string;
  meshattempt?: number;
  /** A short description: stage, node, status or failure. */
  detail?: string;
}

export const finalTypes = [
  'io.mesh.task.completed',
  'io.mesh.task.failed',
  'io.mesh.task.cancelled',
] as const;
export const terminalStatuses: readonly TaskStatus[] = ['completed', 'failed', 'cancelled'];

// KEYS: final marker, its claimant. ARGV: final type, claimant (final event and cause ids), ttl ms.
// The claimant is remembered so that the same final event, retried after its claim's reply was lost
// or after a crash between claim and publish, is still published; any other final event is refused.
const claimFinalScript = `
local current = redis.call('GET', KEYS[1])
if current == false then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[3])
  redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3])
  return 1
end
if redis.call('GET', KEYS[2]) == ARGV[2] then return 1 end
return 0
`;
/** How long a task lock holds without being released: its holder died, or Redis lost its answer. */
const lockTtlMs = 30_000;
const releaseLock = `if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0`;
// KEYS: the task's lock, the task, its final marker. ARGV: token, ttl ms. Takes the lock and reads
// the task in one round trip: {1, task JSON} when taken, {1, nil, final type or nil} when taken and
// there is no task (the final type says it ended and was forgotten), {0} when another holds it.
// The token's own lock counts as taken: a call sent again after its reply was lost (ioredis sends
// what a dead connection left unanswered on the next one) gets it instead of waiting 30 s for it.
const lockAndRead = `
if redis.call('GET', KEYS[1]) == ARGV[1] or redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2], 'NX') then
  local task = redis.call('GET', KEYS[2])
  if task then return {1, task} end
  return {1, false, redis.call('GET', KEYS[3])}
end
return {0}
`;
// KEYS: the task, its chain's seen-set and list, the index of every task, the index of its status,
// then the indexes of the statuses it leaves. ARGV: task JSON, its ttl ms, creation time (the
// indexes' score), task id, and for an ended task the ttl its chain now gets ('' otherwise). One
// script, so the document and its filing change together.
const putTask = `
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
if ARGV[5] ~= '' then
  redis.call('PEXPIRE', KEYS[2], ARGV[5])
  redis.call('PEXPIRE', KEYS[3], ARGV[5])
end
redis.call('ZADD', KEYS[4], ARGV[3], ARGV[4])
redis.call('ZADD', KEYS[5], ARGV[3], ARGV[4])
for i = 6, #KEYS do redis.call('ZREM', KEYS[i], ARGV[4]) end
return 1`;
// Files a task accepted over HTTP unless it has a state or ended already (the orchestrator may have
// applied its request first): atomic, so no lock is needed, and a state the orchestrator writes
// after it replaces it. KEYS: the document, the final marker, the index of every task, the
// accepted index. ARGV: the document, its TTL, the creation time (the score) and the id.
const fileAccepted = `
if redis.call('EXISTS', KEYS[1]) == 1 or redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('ZADD', KEYS[3], ARGV[3], ARGV[4])
redis.call('ZADD', KEYS[4], ARGV[3], ARGV[4])
return 1`;
// Files tasks written before the status indexes existed. KEYS: the index of each of the ARGV[1]
// statuses (in `taskStatuses` order), then the tasks. ARGV: their count, the statuses, then each
// task's id and score. A task's status is read from its document in the same atomic step, so a state
// written meanwhile is never filed under its old status. Returns how many tasks were filed.
const indexTasks = `
local n = tonumber(ARGV[1])
local position = {}
for i = 1, n do position[ARGV[i + 1]] = i end
local filed = 0
for t = n + 1, #KEYS do
  local doc = redis.call('GET', KEYS[t])
  if doc then
    local id, score = ARGV[n + 2 * (t - n)], ARGV[n + 2 * (t - n) + 1]
    local ok, task = pcall(cjson.decode, doc)
    local mine = ok and type(task) == 'table' and position[task.status]
    for i = 1, n do
      if i == mine then redis.call('ZADD', KEYS[i], score, id) else redis.call('ZREM', KEYS[i], id) end
    end
    if mine then filed = filed + 1 end
  end
end
return filed`;
// The events recorded while one turn of the event loop runs, of any tasks, in one call: for the
// i-th event KEYS[3i-2] is its task's seen-set, KEYS[3i-1] its chain and KEYS[3i] its final marker,
// ARGV[2i+1] its id and ARGV[2i+2] its summary. The chain is kept ARGV[1] ms (the TTL) after its
// last event, or ARGV[2] ms (the retention) once the task ended (its final marker is set). An id
// already in the seen-set is not appended again.
const recordEvents = `
for i = 1, #KEYS / 3 do
  local seen, chain = KEYS[3 * i - 2], KEYS[3 * i - 1]
  if redis.call('SADD', seen, ARGV[2 * i + 1]) == 1 then
    redis.call('RPUSH', chain, ARGV[2 * i + 2])
    local ttl = ARGV[1]
    if redis.call('EXISTS', KEYS[3 * i]) == 1 then ttl = ARGV[2] end
    redis.call('PEXPIRE', seen, ttl)
    redis.call('PEXPIRE', chain, ttl)
  end
end
return 1`;

export class TaskStore {
  readonly #redis: Redis;
  /**
   * How long the markers that recognise a task again are kept (final state, idempotency key), and
   * an unfinished task's state and chain after their last change.
   */
  readonly #ttlMs: number;
  /** How long an ended task's state and chain are kept after their last change. */
  readonly #retentionMs: number;
  readonly #prefix: string;
  // Run by hash (EVALSHA): the script bodies are sent once per connection, not with every call.
  readonly #claimFinal: Script;
  readonly #releaseLock: Script;
  readonly #lockAndRead: Script;
  readonly #indexTasks: Script;
  readonly #putTask: Script;
  readonly #fileAccepted: Script;
  /** The status each state had when it was read from Redis (or last written): see `put`. */
  readonly #storedStatus = new WeakMap<TaskState, TaskStatus>();
  /** The status indexes hold every task (`indexStatuses` finished here or in another replica). */
  #statusIndexed = false;
  /** Chain entries of one turn of the event loop, written by one script call. */
  readonly #records: Coalescer<{ taskId: string; summary: EventSummary }, void>;
  /** Per task, the tail of this process's queue for its lock. */
  readonly #localLocks = new Map<string, Promise<void>>();

  /** `prefix` is the mesh's Redis key prefix (`mesh:` by default). */
  /**
   * `prefix` is the mesh's Redis key prefix (`mesh:` by default); `ttlMs` is MESH_IDEMPOTENCY_TTL,
   * `retentionMs` MESH_TASK_RETENTION (`ttlMs` when not given).
   */
  constructor(redis: Redis, options: { ttlMs: number; retentionMs?: number; prefix: string }) {
    this.#redis = redis;
    this.#ttlMs = options.ttlMs;
    this.#retentionMs = options.retentionMs ?? options.ttlMs;
    this.#prefix = options.prefix;
    this.#claimFinal = defineScript(redis, 'meshTaskClaimFinal', claimFinalScript, 2);
    this.#releaseLock = defineScript(redis, 'meshTaskReleaseLock', releaseLock, 1);
    this.#lockAndRead = defineScript(redis, 'meshTaskLockAndRead', lockAndRead, 3);
    this.#indexTasks = defineScript(redis, 'meshTaskIndexMany', indexTasks);
    this.#putTask = defineScript(redis, 'meshTaskPut', putTask);
    this.#fileAccepted = defineScript(redis, 'meshTaskFileAccepted', fileAccepted);
    const record = defineScript(redis, 'meshTaskRecordMany', recordEvents);
    this.#records = new Coalescer(async (items) => {
      const keys: string[] = [];
      const args: string[] = [String(this.#ttlMs), String(this.#retentionMs)];
      for (const { taskId, summary } of items) {
        keys.push(
          `${this.#prefix}task:${taskId}:seen`,
          `${this.#prefix}task:${taskId}:events`,
          `${this.#prefix}final:${taskId}`,
        );
        args.push(summary.id, JSON.stringify(summary));
      }
      await record(keys, args);
      return items.map(() => undefined);
    });
  }

  async get(id: string): Promise<TaskState | undefined> {
    const text = await withRedis('could not read a task', () =>
      this.#redis.get(`${this.#prefix}task:${id}`),
    );
    return text === null ? undefined : this.#parse(text);
  }

  /**
   * Writes the task and files it under its status (`mesh:tasks:by-status:<status>`), in one script.
   * Only the index of the status the state had when read is left, and only when that status changed
   * (a state never read, such as a new task's, leaves every other one): most writes add one ZADD to
   * the SET and ZADD of the document and the index of every task.
   */
  async put(state: TaskState): Promise<void> {
    state.updatedAt = new Date().toISOString();
    const was = this.#storedStatus.get(state);
    const left =
      was === state.status
        ? []
        : was === undefined
          ? taskStatuses.filter((status) => status !== state.status)
          : [was];
    // An unfinished task is kept as long as an event of it may still come; an ended one, with its
    // chain, for the retention.
    const ended = terminalStatuses.includes(state.status);
    await withRedis('could not write a task', () =>
      this.#putTask(
        [
          `${this.#prefix}task:${state.id}`,
          `${this.#prefix}task:${state.id}:seen`,
          `${this.#prefix}task:${state.id}:events`,
          `${this.#prefix}tasks`,
          this.#statusKey(state.status),
          ...left.map((status) => this.#statusKey(status)),
        ],
        [
          JSON.stringify(state),
          ended ? this.#retentionMs : this.#ttlMs,
          Date.parse(state.createdAt),
          state.id,
          ended ? this.#retentionMs : '',
        ],
      ),
    );
    this.#storedStatus.set(state, state.status);
  }

  /**
   * Files a task accepted over HTTP, whose request is on Kafka, unless the orchestrator has applied
   * it already (it has a state, or it ended): false then.
   */
  async fileAccepted(state: TaskState): Promise<boolean> {
    const filed = await withRedis('could not file a task', () =>
      this.#fileAccepted(
        [
          `${this.#prefix}task:${state.id}`,
          `${this.#prefix}final:${state.id}`,
          `${this.#prefix}tasks`,
          this.#statusKey('accepted'),
        ],
        [JSON.stringify(state), this.#ttlMs, Date.parse(state.createdAt), state.id],
      ),
    );
    return filed === 1;
  }

  #parse(text: string): TaskState {
    const state = JSON.parse(text) as TaskState;
    this.#storedStatus.set(state, state.status);
    return state;
  }

  /** The index of the tasks in `status`, by creation time: `mesh:tasks:by-status:<status>`. */
  #statusKey(status: TaskStatus): string {
    return `${this.#prefix}tasks:by-status:${status}`;
  }

  #statusKeys(): string[] {
    return taskStatuses.map((status) => this.#statusKey(status));
  }

  /**
   * Runs `fn` holding the task's lock, with the task's state as read under the lock (undefined when
   * there is none), so the request, stage and control events of one task — which arrive on
   * different topics and may be handled at once, even by different replicas — apply one at a time.
   * The lock expires by itself if its holder dies. Without a state, `ended` is the task's final
   * type if it ended and its state is no longer kept (MESH_TASK_RETENTION shorter than
   * MESH_IDEMPOTENCY_TTL).
   */
  async withLock<T>(id: string, fn: LockedWork<T>): Promise<T> {
    // Events of one task handled by this process queue here first, in arrival order, instead of
    // polling Redis every 10 ms for a lock held by their neighbour; the Redis lock below still
    // keeps replicas apart.
    const previous = this.#localLocks.get(id);
    let release = (): void => undefined;
    const mine = new Promise<void>((resolve) => (release = resolve));
    const tail = previous === undefined ? mine : previous.then(() => mine);
    this.#localLocks.set(id, tail);
    try {
      if (previous !== undefined) await previous;
      return await this.#withRedisLock(id, fn);
    } finally {
      release();
      if (this.#localLocks.get(id) === tail) this.#localLocks.delete(id);
    }
  }

  async #withRedisLock<T>(id: string, fn: LockedWork<T>): Promise<T> {
    const key = `${this.#prefix}lock:task:${id}`;
    const token = randomUUID();
    const deadline = Date.now() + lockTtlMs;
    let state: TaskState | undefined;
    let ended: string | undefined;
    for (;;) {
      let reply: [number, string | null | undefined, string | null | undefined];
      try {
        reply = (await withRedis('could not lock a task', () =>
          this.#lockAndRead(
            [key, `${this.#prefix}task:${id}`, `${this.#prefix}final:${id}`],
            [token, lockTtlMs],
          ),
        )) as typeof reply;
      } catch (error) {
        // Redis may have taken the lock for this call before its answer was lost.
        this.#releaseWhenBack(key, token);
        throw error;
      }
      if (reply[0] === 1) {
        state = typeof reply[1] === 'string' ? this.#parse(reply[1]) : undefined;
        ended = typeof reply[2] === 'string' ? reply[2] : undefined;
        break;
      }
      if (Date.now() > deadline)
        throw retryable('redis_unavailable', `task ${id} stayed locked for 30 s`);
      await sleep(10);
    }
    try {
      return await fn(state, ended);
    } finally {
      // Not awaited: the next holder in this process asks on the same connection, after this
      // command, so Redis has released the lock by then; a replica polling for it sees it soon.
      this.#releaseWhenBack(key, token);
    }
  }

  /**
   * Gives the lock back, again while Redis does not answer (`retryInBackground`). A lock left held
   * (its call's answer lost, or its release) would hold every event of the task for the rest of
   * its 30 s once Redis is back.
   */
  #releaseWhenBack(key: string, token: string): void {
    retryInBackground(() => this.#releaseLock([key], [token]), lockTtlMs);
  }

  /**
   * Claims the task's one final state for `claimant`; false when another path already ended it.
   * Claiming again as the same claimant is true again (a retry must still publish).
   */
  async claimFinal(
    id: string,
    type: (typeof finalTypes)[number],
    claimant: string,
  ): Promise<boolean> {
    const ok = await withRedis('could not claim a final state', () =>
      this.#claimFinal(
        [`${this.#prefix}final:${id}`, `${this.#prefix}final-by:${id}`],
        [type, claimant, this.#ttlMs],
      ),
    );
    return ok === 1;
  }

  async finalOf(id: string): Promise<string | undefined> {
    return (
      (await withRedis('could not read a final state', () =>
        this.#redis.get(`${this.#prefix}final:${id}`),
      )) ?? undefined
    );
  }

  /** Appends an event to the task's causal chain once, whatever how often it is delivered. */
  async record(taskId: string, summary: EventSummary): Promise<void> {
    await withRedis('could not record an event', () => this.#records.add({ taskId, summary }));
  }

  /** The task's events, in causal order: parents before children, then by time. */
  async events(taskId: string): Promise<EventSummary[]> {
    const raw = await withRedis('could not read events', () =>
      this.#redis.lrange(`${this.#prefix}task:${taskId}:events`, 0, -1),
    );
    return causalOrder(raw.map((r) => JSON.parse(r) as EventSummary));
  }

  /**
   * Drops from the task indexes the tasks created long enough before `now` that their documents are
   * gone: the retention for the indexes of ended tasks, the TTL for the others and for `mesh:tasks`.
   * A task's documents expire after its last change, but its index entries would stay for ever: one
   * per task, a Redis that only grows. A task still changing that long after it was created (long
   * past any deadline) stays readable by id, but is no longer listed. Returns how many entries of
   * `mesh:tasks` were dropped.
   */
  async forgetExpired(now = Date.now()): Promise<number> {
    const before = (ms: number): string => `(${now - ms}`;
    const [dropped] = await withRedis('could not trim the task index', () =>
      Promise.all([
        this.#redis.zremrangebyscore(`${this.#prefix}tasks`, '-inf', before(this.#ttlMs)),
        ...taskStatuses.map((status) =>
          this.#redis.zremrangebyscore(
            this.#statusKey(status),
            '-inf',
            before(terminalStatuses.includes(status) ? this.#retentionMs : this.#ttlMs),
          ),
        ),
      ]),
    );
    return dropped ?? 0;
  }

  /**
   * Tasks newest first, those the filter selects. A query by status reads the index of each status
   * asked for, so a stuck task is found however many tasks finished since; each index is read in
   * chunks and at most `listScanBound` entries, a bound that only entries of expired tasks (not yet
   * trimmed) can reach.
   */
  async list(filter: TaskFilter): Promise<TaskState[]> {
    const statuses = filter.status === undefined ? undefined : [...new Set(filter.status)];
    if (statuses === undefined) return this.#scan(`${this.#prefix}tasks`, filter, true);
    if (!(await this.#statusIndexReady())) {
      // Tasks of an older orchestrator are being filed: the latest tasks are scanned as before.
      return this.#scan(`${this.#prefix}tasks`, filter, false);
    }
    const found = await Promise.all(
      statuses.map((status) => this.#scan(this.#statusKey(status), filter, true)),
    );
    return found
      .flat()
      .sort(
        (a, b) =>
          Date.parse(b.createdAt) - Date.parse(a.createdAt) ||
          (a.id < b.id ? 1 : a.id > b.id ? -1 : 0),
      )
      .slice(0, filter.limit);
  }

  /**
   * Reads the tasks of one index, newest first, keeping those of `filter`. `dense`: nearly every
   * task read is kept (no status to match, or the index of that status), so no more are read than
   * are wanted.
   */
  async #scan(index: string, filter: TaskFilter, dense: boolean): Promise<TaskState[]> {
    const max = filter.createdBefore === undefined ? '+inf' : `(${filter.createdBefore}`;
    const out: TaskState[] = [];
    let offset = 0;
    while (offset < listScanBound && out.length < filter.limit) {
      const chunk = dense ? Math.min(200, filter.limit - out.length) : 200;
      const ids = await withRedis('could not list tasks', () =>
        this.#redis.zrevrangebyscore(index, max, '-inf', 'LIMIT', offset, chunk),
      );
      offset += chunk;
      if (ids.length === 0) break;
      const docs = await withRedis('could not read tasks', () =>
        this.#redis.mget(ids.map((id) => `${this.#prefix}task:${id}`)),
      );
      for (const doc of docs) {
        if (doc === null) continue;
        const state = JSON.parse(doc) as TaskState;
        if (filter.status !== undefined && !filter.status.includes(state.status)) continue;
        out.push(state);
        if (out.length >= filter.limit) break;
      }
    }
    return out;
  }

  /**
   * How many tasks each status holds and when its oldest was created: two reads of each status
   * index, whatever the number of tasks. Undefined until the indexes hold every task.
   */
  async statusCounts(): Promise<Record<TaskStatus, StatusCount> | undefined> {
    if (!(await this.#statusIndexReady())) return undefined;
    const read = await withRedis('could not count tasks', () =>
      Promise.all(
        taskStatuses.map((status) =>
          Promise.all([
            this.#redis.zcard(this.#statusKey(status)),
            this.#redis.zrange(this.#statusKey(status), 0, 0, 'WITHSCORES'),
          ]),
        ),
      ),
    );
    return Object.fromEntries(
      taskStatuses.map((status, i) => {
        const [count, oldest] = read[i] as [number, string[]];
        const created = oldest[1] === undefined ? undefined : Number(oldest[1]);
        return [status, created === undefined ? { count } : { count, oldestCreatedAt: created }];
      }),
    ) as Record<TaskStatus, StatusCount>;
  }

  async #statusIndexReady(): Promise<boolean> {
    this.#statusIndexed ||=
      (await withRedis('could not read the task index', () =>
        this.#redis.exists(`${this.#prefix}tasks:by-status`),
      )) === 1;
    return this.#statusIndexed;
  }

  /**
   * Files the tasks written before the status indexes existed (by an older orchestrator), once per
   * Redis: in rounds of `indexChunk` tasks, oldest first, then it sets `mesh:tasks:by-status`. Tasks
   * written meanwhile are filed by `put`; replicas doing it at once do the same work twice, no harm.
   * Returns how many tasks it filed (0 when it was done before).
   */
  async indexStatuses(): Promise<number> {
    if (await this.#statusIndexReady()) return 0;
    const index = `${this.#prefix}tasks`;
    const statusKeys = this.#statusKeys();
    let filed = 0;
    let min = '-inf';
    // Entries at score `min` already filed: the next round starts after them.
    let skip = 0;
    for (;;) {
      const page = await withRedis('could not read the task index', () =>
        this.#redis.zrangebyscore(index, min, '+inf', 'WITHSCORES', 'LIMIT', skip, indexChunk),
      );
      if (page.length === 0) break;
      const ids: string[] = [];
      const args: (string | number)[] = [taskStatuses.length, ...taskStatuses];
      for (let i = 0; i < page.length; i += 2) {
        ids.push(page[i] as string);
        args.push(page[i] as string, page[i + 1] as string);
      }
      filed += (await withRedis('could not index tasks', () =>
        this.#indexTasks([...statusKeys, ...ids.map((id) => `${this.#prefix}task:${id}`)], args),
      )) as number;
      const last = page[page.length - 1] as string;
      let atLast = 0;
      for (let i = page.length - 1; i > 0 && page[i] === last; i -= 2) atLast += 1;
      skip = last === min ? skip + atLast : atLast;
      min = last;
      if (ids.length < indexChunk) break;
    }
    await withRedis('could not mark the task index', () =>
      this.#redis.set(`${this.#prefix}tasks:by-status`, '1'),
    );
    this.#statusIndexed = true;
    return filed;
  }

  async addDeadline(id: string, at: number): Promise<void> {
    await withRedis('could not store a deadline', () =>
      this.#redis.zadd(`${this.#prefix}deadlines`, at, id),
    );
  }

  async removeDeadline(id: string): Promise<void> {
    await withRedis('could not remove a deadline', () =>
      this.#redis.zrem(`${this.#prefix}deadlines`, id),
    );
  }

  async dueDeadlines(now: number): Promise<string[]> {
    return withRedis('could not read deadlines', () =>
      this.#redis.zrangebyscore(`${this.#prefix}deadlines`, 0, now, 'LIMIT', 0, 100),
    );
  }

  /**
   * Binds a client's idempotency key to a task id. Returns the task id the key is bound to: `taskId`
   * the first time, the earlier task's id when the request is a retry.
   */
  async bindIdempotencyKey(key: string, taskId: string): Promise<string> {
    const redisKey = `${this.#prefix}taskkey:${key}`;
    const ok = await withRedis('could not bind an idempotency key', () =>
      this.#redis.set(redisKey, taskId, 'PX', this.#ttlMs, 'NX'),
    );
    if (ok === 'OK') return taskId;
    return (
      (await withRedis('could not read an idempotency key', () => this.#redis.get(redisKey))) ??
      taskId
    );
  }
}

/** Orders events so every event comes after its cause, siblings by time. */
export function causalOrder(events: EventSummary[]): EventSummary[] {
  const byId = new Map(events.map((e) => [e.id, e]));
  const children = new Map<string, EventSummary[]>();
  const roots: EventSummary[] = [];
  for (const event of events) {
    const parent = event.causationid;
    if (parent !== undefined && byId.has(parent) && parent !== event.id) {
      const list = children.get(parent) ?? [];
      list.push(event);
      children.set(parent, list);
    } else {
      roots.push(event);
    }
  }
  const byTime = (a: EventSummary, b: EventSummary): number =>
    (a.time ?? '').localeCompare(b.time ?? '');
  const ordered: EventSummary[] = [];
  const seen = new Set<string>();
  const visit = (event: EventSummary): void => {
    if (seen.has(event.id)) return;
    seen.add(event.id);
    ordered.push(event);
    for (const child of (children.get(event.id) ?? []).sort(byTime)) visit(child);
  };
  for (const root of roots.sort(byTime)) visit(root);
  return ordered;
}
