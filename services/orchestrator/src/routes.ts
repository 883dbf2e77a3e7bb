/**
 * The orchestrator's HTTP API (docs/contract.md, "HTTP"): task intake, status, causal chain, cancel
 * and approvals. Writes only publish events (to mesh.requests or mesh.control); the consumers do the
 * work, so the HTTP path and the Kafka path behave the same.
 */
import { randomUUID } from 'node:crypto';
import { newEvent } from '@mesh/envelope';
import { loadContracts } from '@mesh/contracts';
import { MeshError, safeDetail } from '@mesh/errors';
import type { ServiceContext } from '@mesh/service';
import { parseDuration } from '@mesh/config';
import { RepeatedLines } from '@mesh/telemetry';
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

  const unfiled = new RepeatedLines();

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
        // The final marker first: it is claimed before the final event is published, and the state
        // written after it, so a client that saw the outcome on mesh.outputs is not told `running`.
        // It also answers for a task that ended and is no longer kept.
        const [state, final] = await Promise.all([store.get(bound), store.finalOf(bound)]);
        const status =
          (final?.replace('io.mesh.task.', '') as TaskStatus | undefined) ?? state?.status;
        // No state: the earlier POST failed before its request reached Kafka (and answered an
        // error), or its filing failed after; published again under the task's id. Should both
        // be written, the orchestrator applies a task's request once (docs/services.md). A task
        // with a state has its request on Kafka: it is filed only once Kafka has it.
        if (status === undefined) await accept(bound, requestData);
        return reply
          .code(200)
          .send({ taskId: bound, status: status ?? 'accepted', repeated: true });
      }
    }
    await accept(taskId, requestData);
    return reply
      .code(202)
      .header('location', `/v1/tasks/${taskId}`)
      .send({ taskId, status: 'accepted' });
  });

  /**
   * Publishes the task's request, then files the task as `accepted` unless the orchestrator has
   * applied it already. In that order, a task is never filed that nothing will run: a POST that
   * fails, or a process that dies, before Kafka has the request leaves no state behind, and one
   * that dies after it leaves the request, which the orchestrator files when it applies it. The
   * filing only lets a GET see the task before that; when Redis refuses it, the task is still
   * accepted (its request is on Kafka) and shows once the orchestrator applies it.
   */
  async function accept(taskId: string, data: Record<string, unknown>): Promise<void> {
    const event = newEvent({ type: 'io.mesh.task.requested', source, id: taskId, data });
    await runtime.publish([{ topic: runtime.topics.requests, event }], runtime.httpWrite());
    const now = new Date().toISOString();
    const accepted: TaskState = {
      id: taskId,
      status: 'accepted',
      template: (data as { template?: string }).template ?? '',
      createdAt: event.time ?? now,
      updatedAt: now,
      input: {},
      budget: {},
      usage: emptyUsage(),
      stages: {},
    };
    try {
      await store.fileAccepted(accepted);
    } catch (error) {
      // Every POST while Redis is away: told once per fault and window.
      const err = safeDetail(error);
      unfiled.warn(
        runtime.log,
        err,
        { taskId, err },
        'task accepted (its request is on Kafka) but not filed: it shows once the orchestrator applies it',
      );
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
