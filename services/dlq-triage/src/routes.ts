/**
 * The dlq-triage HTTP API (docs/contract.md, "HTTP"): list dead letters, replay or discard one,
 * replay the waiting ones a filter selects, list escalations. Write endpoints need the bearer token
 * when MESH_API_TOKEN is set.
 */
import { isMeshError, MeshError } from '@mesh/errors';
import type { ServiceContext } from '@mesh/service';
import type { DeadLetter, DeadLetterStore } from './store.ts';
import type { Triage } from './triage.ts';

const idParams = {
  type: 'object',
  required: ['id'],
  additionalProperties: false,
  properties: { id: { type: 'string', pattern: '^[a-f0-9]{20}$' } },
} as const;

/**
 * The read endpoints answer any origin, so that a page served elsewhere (the orchestrator's
 * /dashboard) can fetch them from the browser. Simple GETs need no preflight; writes stay same-origin.
 */
const allowAnyOrigin = {
  onSend: async (_request: unknown, reply: { header(name: string, value: string): unknown }) => {
    reply.header('access-control-allow-origin', '*');
  },
};

/** What dead letters can be selected by, in a list or a replay. */
const filterProperties = {
  failure: { type: 'string', maxLength: 50 },
  agent: { type: 'string', maxLength: 100 },
  task: { type: 'string', maxLength: 200 },
} as const;

/** What the API shows of a dead letter: everything but the raw value and headers. */
function view(letter: DeadLetter): Record<string, unknown> {
  const { value: _value, headers: _headers, ...rest } = letter;
  return rest;
}

export function registerDlqRoutes(
  { app, requireToken }: ServiceContext,
  store: DeadLetterStore,
  triage: Triage,
): void {
  app.get(
    '/v1/dlq',
    {
      ...allowAnyOrigin,
      schema: {
        querystring: {
          type: 'object',
          additionalProperties: false,
          properties: {
            ...filterProperties,
            status: {
              type: 'string',
              enum: ['parked', 'retrying', 'escalated', 'replayed', 'discarded'],
            },
            limit: { type: 'integer', minimum: 1, maximum: 1000, default: 100 },
          },
        },
      },
    },
    async (request) => {
      const query = request.query as {
        failure?: string;
        agent?: string;
        task?: string;
        status?: string;
        limit: number;
      };
      const items = await store.list(query);
      return { items: items.map(view) };
    },
  );

  app.get('/v1/dlq/:id', { ...allowAnyOrigin, schema: { params: idParams } }, async (request) => {
    const { id } = request.params as { id: string };
    const letter = await store.get(id);
    if (letter === undefined) throw new MeshError('not_found', `no dead letter ${id}`);
    return { ...view(letter), headers: letter.headers };
  });

  /** Replays one letter to `topic` (default: its origin) and records it. */
  const replayOne = async (letter: DeadLetter, topic?: string): Promise<string> => {
    let target: string;
    try {
      ({ topic: target } = await triage.replay(letter, topic));
    } catch (error) {
      // Kafka or Redis away keeps its own answer (503); a topic it cannot go to is the caller's.
      if (isMeshError(error)) throw error;
      throw new MeshError('bad_request', (error as Error).message);
    }
    await store.setStatus(letter, 'replayed', `replayed to ${target}`);
    return target;
  };

  // After an outage many letters wait for the same fix: they are replayed by what they have in
  // common, the ones still waiting for someone (parked or escalated), oldest first.
  app.post(
    '/v1/dlq/replay',
    {
      schema: {
        body: {
          type: 'object',
          additionalProperties: false,
          properties: {
            ...filterProperties,
            all: { type: 'boolean', default: false },
            dryRun: { type: 'boolean', default: false },
            limit: { type: 'integer', minimum: 1, maximum: 1000, default: 100 },
          },
        },
      },
      preHandler: requireToken,
    },
    async (request, reply) => {
      const body = (request.body ?? {}) as {
        failure?: string;
        agent?: string;
        task?: string;
        all?: boolean;
        dryRun?: boolean;
        limit?: number;
      };
      const { failure, agent, task } = body;
      if (failure === undefined && agent === undefined && task === undefined && body.all !== true)
        throw new MeshError(
          'bad_request',
          'name the dead letters to replay (failure, agent or task), or all: true',
        );
      const letters = (
        await store.list({
          ...(failure === undefined ? {} : { failure }),
          ...(agent === undefined ? {} : { agent }),
          ...(task === undefined ? {} : { task }),
          status: ['parked', 'escalated'],
          limit: body.limit ?? 100,
        })
      ).reverse();
      if (body.dryRun === true)
        return { dryRun: true, matched: letters.length, items: letters.map(view) };
      const items = await Promise.all(
        letters.map(async (letter) => {
          try {
            return { id: letter.id, status: 'replayed', topic: await replayOne(letter) };
          } catch (error) {
            return { id: letter.id, status: 'failed', error: (error as Error).message };
          }
        }),
      );
      const replayed = items.filter((item) => item.status === 'replayed').length;
      return reply.code(202).send({
        matched: letters.length,
        replayed,
        failed: letters.length - replayed,
        items,
      });
    },
  );

  app.post(
    '/v1/dlq/:id/replay',
    {
      schema: {
        params: idParams,
        body: {
          type: 'object',
          additionalProperties: false,
          properties: { topic: { type: 'string', maxLength: 249 } },
        },
      },
      preHandler: requireToken,
    },
    async (request, reply) => {
      const { id } = request.params as { id: string };
      const body = (request.body ?? {}) as { topic?: string };
      const letter = await store.get(id);
      if (letter === undefined) throw new MeshError('not_found', `no dead letter ${id}`);
      if (letter.status === 'discarded')
        throw new MeshError('conflict', `dead letter ${id} was discarded`);
      const target = await replayOne(letter, body.topic);
      return reply.code(202).send({ id, status: 'replayed', topic: target });
    },
  );

  app.post(
    '/v1/dlq/:id/discard',
    {
      schema: {
        params: idParams,
        body: {
          type: 'object',
          additionalProperties: false,
          required: ['reason'],
          properties: { reason: { type: 'string', minLength: 1, maxLength: 2000 } },
        },
      },
      preHandler: requireToken,
    },
    async (request) => {
      const { id } = request.params as { id: string };
      const { reason } = request.body as { reason: string };
      const letter = await store.get(id);
      if (letter === undefined) throw new MeshError('not_found', `no dead letter ${id}`);
      if (letter.status === 'discarded') return { id, status: 'discarded' };
      await triage.discard(letter);
      await store.setStatus(letter, 'discarded', reason);
      return { id, status: 'discarded' };
    },
  );

  app.get(
    '/v1/escalations',
    {
      ...allowAnyOrigin,
      schema: {
        querystring: {
          type: 'object',
          additionalProperties: false,
          properties: { limit: { type: 'integer', minimum: 1, maximum: 1000, default: 100 } },
        },
      },
    },
    async (request) => {
      const { limit } = request.query as { limit: number };
      return { items: await store.escalations(limit) };
    },
  );
}
