/**
 * The orchestrator's HTTP API (docs/contract.md, "HTTP"): task intake, status, causal chain, cancel
 * and approvals. Writes only publish events (to mesh.requests or mesh.control); the consumers do the
 * work, so the HTTP path and the Kafka path behave the same.
 */
import { randomUUID } from 'node:crypto';
import { newEvent } from '@mesh/envelope';
import { loadContracts } from '@mesh/contracts';
import { MeshError } from '@mesh/errors';
import type { ServiceContext } from '@mesh/service';
import { parseDuration } from '@mesh/config';
import {
  taskStatuses,
  terminalStatuses,
  type TaskState,
  type TaskStatus,
  type TaskStore,
} from './store.ts';
import { emptyUsage, source } from './orchestrator.ts';

const idParams = {
  type: 'object',
  required: ['id'],
  additionalProperties: false,
  properties: {
    id: { type: 'string', minLength: 1, maxLength: 200, pattern: '^[A-Za-z0-9._:-]+$' },
  },
} as const;

const decisionBody = {
  type: 'object',
  additionalProperties: false,
  properties: {
    gateId: { type: 'string', pattern: '^[a-z0-9][a-z0-9._-]{0,62}$' },
    by: { type: 'string', maxLength: 200 },
    comment: { type: 'string', maxLength: 2000 },
  },
} as const;

const cancelBody = {
  type: 'object',
  additionalProperties: false,
  properties: {
    reason: { type: 'string', maxLength: 2000 },
    by: { type: 'string', maxLength: 200 },
  },
} as const;

/** What an unfinished task waits on: its started stages, since when, and their agents or gate. */
export function waitingOn(
  state: TaskState,
): { stage: string; status: string; since?: string; agents?: string[]; gate?: string }[] {
  if (terminalStatuses.includes(state.status)) return [];
  return (state.plan ?? []).flatMap((stage) => {
    const current = state.stages[stage.id];
    if (current?.status !== 'dispatched' && current?.status !== 'awaiting_approval') return [];
    return [
      {
        stage: stage.id,
        status: current.status,
        ...(current.startedAt === undefined ? {} : { since: current.startedAt }),
        ...(stage.gate === undefined
          ? { agents: [...new Set((stage.nodes ?? []).map((node) => node.agent))] }
          : { gate: stage.gate.id }),
      },
    ];
  });
}

/** 404 for a task without state: never seen, or ended and no longer kept (its final marker says). */
async function notKept(store: TaskStore, id: string): Promise<MeshError> {
  const ended = await store.finalOf(id);
  return new MeshError(
    'not_found',
    ended === undefined
      ? `no task ${id}`
      : `task ${id} ended (${ended}) and its state is no longer kept (MESH_TASK_RETENTION)`,
  );
}

export function registerTaskRoutes(
  { app, runtime, requireToken }: ServiceContext,
  store: TaskStore,
): void {
  const requestSchema = loadContracts().get('io.mesh.task.requested')?.schema;
  if (requestSchema === undefined)
    throw new Error('the contract io.mesh.task.requested is missing');
  const { $schema: _ignored, ...body } = requestSchema;

  app.post('/v1/tasks', { schema: { body }, preHandler: requireToken }, async (request, reply) => {
    const data = request.body as { idempotencyKey?: string };
    const headerKey = request.headers['idempotency-key'];
    const idempotencyKey =
      data.idempotencyKey ??
      (typeof headerKey === 'string' && headerKey.length > 0 ? headerKey.slice(0, 200) : undefined);
    const taskId = randomUUID();
    const requestData = { ...data, ...(idempotencyKey === undefined ? {} : { idempotencyKey }) };
    if (idempotencyKey !== undefined) {
      const bound = await store.bindIdempotencyKey(idempotencyKey, taskId);
      if (bound !== taskId) {
        const status =
          (await store.get(bound))?.status ??
          // Ended and no longer kept: io.mesh.task.completed → completed.
          ((await store.finalOf(bound))?.replace('io.mesh.task.', '') as TaskStatus | undefined);
        // Not applied by the orchestrator yet: the earlier POST may have failed before its request
        // reached Kafka (and then answered an error), so it is published again under the task's id.
        // Should both be written, the orchestrator applies a task's request once (docs/services.md).
        if (status === undefined) await accept(bound, requestData, 'missing');
        else if (status === 'accepted') await accept(bound, requestData, 'filed');
        return reply
          .code(200)
          .send({ taskId: bound, status: status ?? 'accepted', repeated: true });
      }
    }
    await accept(taskId, requestData, 'new');
    return reply
      .code(202)
      .header('location', `/v1/tasks/${taskId}`)
      .send({ taskId, status: 'accepted' });
  });

  /**
   * Files the task as accepted (`new`: a fresh id; `missing`: a key's task without a state, which
   * the orchestrator may be filing right now; `filed`: already) and publishes its request. When the
   * publish fails, a task still only accepted is removed again: its request may not be on Kafka, and
   * nothing would ever run it (should it be there after all, the orchestrator files it anew when it
   * applies it). The client gets the error and may send the task again; with the same idempotency
   * key it stays one task.
   */
  async function accept(
    taskId: string,
    data: Record<string, unknown>,
    state: 'new' | 'missing' | 'filed',
  ): Promise<void> {
    const event = newEvent({ type: 'io.mesh.task.requested', source, id: taskId, data });
    if (state !== 'filed') {
      const now = new Date().toISOString();
      const accepted: TaskState = {
        id: taskId,
        status: 'accepted',
        template: (data as { template?: string }).template ?? '',
        createdAt: now,
        updatedAt: now,
        input: {},
        budget: {},
        usage: emptyUsage(),
        stages: {},
      };
      if (state === 'new') await store.put(accepted);
      else
        await store.withLock(taskId, async (existing, ended) => {
          if (existing === undefined && ended === undefined) await store.put(accepted);
        });
    }
    try {
      await runtime.publish([{ topic: runtime.topics.requests, event }], runtime.httpWrite());
    } catch (error) {
      await store
        .withLock(taskId, async (existing) => {
          if (existing?.status === 'accepted') await store.drop(taskId);
        })
        .catch(() => undefined);
      throw error;
    }
  }

  // Newest first. `status` (comma-separated) and `olderThan` (a duration: 10m, 2h) find the tasks
  // that are stuck; each unfinished one says which stages it waits on, since when, for which agents.
  app.get(
    '/v1/tasks',
    {
      schema: {
        querystring: {
          type: 'object',
          additionalProperties: false,
          properties: {
            limit: { type: 'integer', minimum: 1, maximum: 500, default: 50 },
            status: { type: 'string', maxLength: 200 },
            olderThan: { type: 'string', pattern: '^[0-9]+(ms|s|m|h|d)$' },
          },
        },
      },
    },
    async (request) => {
      const query = request.query as { limit: number; status?: string; olderThan?: string };
      const statuses = query.status?.split(',');
      const unknown = statuses?.find((s) => !(taskStatuses as readonly string[]).includes(s));
      if (unknown !== undefined)
        throw new MeshError(
          'bad_request',
          `status ${JSON.stringify(unknown)} is not a task status (${taskStatuses.join(', ')})`,
        );
      const now = Date.now();
      const [tasks, counts] = await Promise.all([
        store.list({
          limit: query.limit,
          ...(statuses === undefined ? {} : { status: statuses as TaskStatus[] }),
          ...(query.olderThan === undefined
            ? {}
            : { createdBefore: now - parseDuration(query.olderThan) }),
        }),
        store.statusCounts(),
      ]);
      return {
        // Every task kept, by status, with when the oldest was created: what is stuck at a glance.
        ...(counts === undefined
          ? {}
          : {
              byStatus: Object.fromEntries(
                Object.entries(counts).map(([status, { count, oldestCreatedAt }]) => [
                  status,
                  oldestCreatedAt === undefined
                    ? { count }
                    : { count, oldestCreatedAt: new Date(oldestCreatedAt).toISOString() },
                ]),
              ),
            }),
        tasks: tasks.map((t) => {
          const waiting = waitingOn(t);
          return {
            id: t.id,
            status: t.status,
            template: t.template,
            createdAt: t.createdAt,
            updatedAt: t.updatedAt,
            usage: t.usage,
            failure: t.failure,
            ...(waiting.length === 0 ? {} : { waitingOn: waiting }),
          };
        }),
      };
    },
  );

  app.get('/v1/tasks/:id', { schema: { params: idParams } }, async (request) => {
    const { id } = request.params as { id: string };
    const state = await store.get(id);
    if (state === undefined) throw await notKept(store, id);
    const { request: _request, ...visible } = state;
    return visible;
  });

  app.get('/v1/tasks/:id/events', { schema: { params: idParams } }, async (request) => {
    const { id } = request.params as { id: string };
    const events = await store.events(id);
    if (events.length === 0 && (await store.get(id)) === undefined) throw await notKept(store, id);
    return { taskId: id, events };
  });

  app.post(
    '/v1/tasks/:id/cancel',
    { schema: { params: idParams, body: cancelBody }, preHandler: requireToken },
    async (request, reply) => {
      const { id } = request.params as { id: string };
      const body = (request.body ?? {}) as { reason?: string; by?: string };
      const state = await store.get(id);
      if (state === undefined) throw new MeshError('not_found', `no task ${id}`);
      if (['completed', 'failed', 'cancelled'].includes(state.status))
        throw new MeshError('conflict', `task ${id} already ${state.status}`);
      const event = newEvent({
        type: 'io.mesh.task.cancel',
        source,
        correlationid: id,
        data: { taskId: id, ...body },
      });
      await runtime.publish([{ topic: runtime.topics.control, event }], runtime.httpWrite());
      return reply.code(202).send({ taskId: id, status: 'cancelling' });
    },
  );

  for (const [path, type] of [
    ['approve', 'io.mesh.approval.granted'],
    ['deny', 'io.mesh.approval.denied'],
  ] as const) {
    app.post(
      `/v1/tasks/:id/${path}`,
      { schema: { params: idParams, body: decisionBody }, preHandler: requireToken },
      async (request, reply) => {
        const { id } = request.params as { id: string };
        const body = (request.body ?? {}) as { gateId?: string; by?: string; comment?: string };
        const state = await store.get(id);
        if (state === undefined) throw new MeshError('not_found', `no task ${id}`);
        const waiting =
          state.plan?.filter(
            (s) => s.gate !== undefined && state.stages[s.id]?.status === 'awaiting_approval',
          ) ?? [];
        const gate =
          body.gateId === undefined ? waiting[0] : waiting.find((s) => s.gate?.id === body.gateId);
        if (gate?.gate === undefined)
          throw new MeshError(
            'conflict',
            `task ${id} is not waiting at ${body.gateId === undefined ? 'an approval gate' : `gate ${body.gateId}`}`,
          );
        const event = newEvent({
          type,
          source,
          correlationid: id,
          data: {
            taskId: id,
            gateId: gate.gate.id,
            ...(body.by === undefined ? {} : { by: body.by }),
            ...(body.comment === undefined ? {} : { comment: body.comment }),
          },
        });
        await runtime.publish([{ topic: runtime.topics.control, event }], runtime.httpWrite());
        return reply.code(202).send({
          taskId: id,
          gateId: gate.gate.id,
          decision: path === 'approve' ? 'granted' : 'denied',
        });
      },
    );
  }
}
