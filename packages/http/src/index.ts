/**
 * The HTTP face every service has (docs/contract.md, "HTTP"): `GET /healthz` (live), `GET /readyz`
 * (Kafka, Redis and the registry reachable), `GET /metrics` (Prometheus text), plus the service's
 * own routes. Write routes are guarded by the bearer token when `MESH_API_TOKEN` is set; errors
 * answer with the status and stable code of the error taxonomy.
 */
import { timingSafeEqual, createHash } from 'node:crypto';
import Fastify, { type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify';
import { isMeshError, safeDetail } from '@mesh/errors';
import type { MeshMetrics, Logger } from '@mesh/telemetry';

export interface ReadinessReport {
  ready: boolean;
  /** Each check (true when it passed), and details such as what a stalled consumer waits on. */
  [check: string]: boolean | string | undefined;
}

export interface HttpOptions {
  service: string;
  metrics: MeshMetrics;
  readiness: () => Promise<ReadinessReport>;
  apiToken?: string;
  /** Largest request body accepted, in bytes (default 256 KiB). */
  bodyLimit?: number;
  logger?: Logger;
}

/** Constant-time comparison of a presented bearer token with the configured one. */
export function tokenMatches(header: string | undefined, token: string): boolean {
  const presented = /^Bearer\s+(.+)$/i.exec(header ?? '')?.[1] ?? '';
  // Hash both so the comparison takes the same time whatever the lengths.
  const a = createHash('sha256').update(presented).digest();
  const b = createHash('sha256').update(token).digest();
  return timingSafeEqual(a, b) && presented.length > 0;
}

export type WriteGuard = (request: FastifyRequest, reply: FastifyReply) => Promise<void>;

/** The Retry-After of a retryable error that names no time of its own. */
const defaultRetryAfterMs = 5_000;

/** Builds the server with the common routes; the caller adds its own and listens. */
export function createHttpServer(options: HttpOptions): {
  app: FastifyInstance;
  requireToken: WriteGuard;
} {
  const app = Fastify({
    logger: false,
    bodyLimit: options.bodyLimit ?? 262_144,
    // Query strings and URL parameters are text: `?limit=20` must satisfy `type: integer`.
    ajv: { customOptions: { removeAdditional: false, coerceTypes: 'array', allErrors: false } },
  });
  const token = options.apiToken;
  const requireToken: WriteGuard = async (request, reply) => {
    if (token === undefined) return;
    if (!tokenMatches(request.headers.authorization, token)) {
      await reply
        .code(401)
        .header('www-authenticate', 'Bearer')
        .send({ error: 'unauthorized', message: 'a valid bearer token is required' });
    }
  };
  app.setErrorHandler((error, _request, reply) => {
    if (isMeshError(error)) {
      // A dependency away (503) or a limit (429): when to try again, for clients and proxies.
      if (error.retryable && (error.statusCode === 503 || error.statusCode === 429))
        void reply.header(
          'retry-after',
          String(Math.max(1, Math.ceil((error.retryAfterMs ?? defaultRetryAfterMs) / 1_000))),
        );
      void reply
        .code(error.statusCode)
        .send({ error: error.code, message: safeDetail(error.message) });
      return;
    }
    const status =
      typeof (error as { statusCode?: unknown }).statusCode === 'number'
        ? (error as { statusCode: number }).statusCode
        : 500;
    if (status >= 500) options.logger?.error({ err: safeDetail(error) }, 'request failed');
    const code =
      status === 413
        ? 'payload_too_large'
        : status === 404
          ? 'not_found'
          : status === 415
            ? 'unsupported_media_type'
            : status < 500
              ? 'bad_request'
              : 'internal';
    void reply.code(status).send({
      error: code,
      message: status >= 500 ? 'internal error' : safeDetail((error as Error).message),
    });
  });
  app.setNotFoundHandler((request, reply) => {
    void reply.code(404).send({
      error: 'not_found',
      message: `no route ${request.method} ${request.url.split('?')[0] ?? ''}`,
    });
  });
  app.get('/healthz', async () => ({ status: 'ok', service: options.service }));
  app.get('/readyz', async (_request, reply) => {
    const report = await options.readiness();
    return reply.code(report.ready ? 200 : 503).send({ ...report, service: options.service });
  });
  app.get('/metrics', async (_request, reply) => {
    const text = await options.metrics.registry.metrics();
    return reply.header('content-type', options.metrics.registry.contentType).send(text);
  });
  return { app, requireToken };
}
