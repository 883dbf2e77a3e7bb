/**
 * Calls to the services' HTTP APIs (the orchestrator's tasks, dlq-triage's dead letters): JSON in and
 * out, the bearer token of MESH_API_TOKEN when set, bounded by MESH_CLI_TIMEOUT, and every failure as
 * one line naming the service and its address.
 */
import type { CliContext } from './context.ts';
import { CliError, reasonOf } from './errors.ts';

export type ServiceName = 'orchestrator' | 'dlq-triage';

export function baseUrl(ctx: CliContext, service: ServiceName): string {
  return service === 'orchestrator' ? ctx.config.orchestratorUrl : ctx.config.dlqUrl;
}

const variableOf: Record<ServiceName, string> = {
  orchestrator: 'MESH_ORCHESTRATOR_URL',
  'dlq-triage': 'MESH_DLQ_URL',
};

/**
 * Sends one request and returns the parsed JSON answer of a 2xx status.
 * @throws CliError: the service unreachable, or its error answer (`error` and `message` of the
 *   mesh's HTTP errors), with a hint for 401.
 */
export async function callApi<T>(
  ctx: CliContext,
  service: ServiceName,
  method: 'GET' | 'POST',
  path: string,
  body?: unknown,
): Promise<T> {
  const base = baseUrl(ctx, service);
  const token = ctx.config.mesh.apiToken;
  let response: Response;
  try {
    response = await fetch(`${base}${path}`, {
      method,
      headers: {
        accept: 'application/json',
        ...(body === undefined ? {} : { 'content-type': 'application/json' }),
        ...(token === undefined ? {} : { authorization: `Bearer ${token}` }),
      },
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
      signal: AbortSignal.timeout(Math.max(ctx.config.timeoutMs, 10_000)),
    });
  } catch (error) {
    throw new CliError(
      `cannot reach ${service} at ${base} (${reasonOf(error)}); is it running? (\`npm start\` starts the mesh; ${variableOf[service]} points elsewhere)`,
      { cause: error },
    );
  }
  const text = await response.text().catch(() => '');
  let json: unknown;
  try {
    json = text === '' ? undefined : JSON.parse(text);
  } catch {
    json = undefined;
  }
  if (response.ok) return json as T;
  const answer = json as { error?: unknown; message?: unknown } | undefined;
  const message =
    typeof answer?.message === 'string'
      ? answer.message
      : text.slice(0, 200) || response.statusText;
  const code = typeof answer?.error === 'string' ? `${answer.error}, ` : '';
  const hint =
    response.status === 401
      ? token === undefined
        ? "; set MESH_API_TOKEN to the services' token"
        : "; MESH_API_TOKEN does not match the services' token"
      : '';
  throw new CliError(
    `${service} answered ${response.status} (${code}${method} ${path}): ${message}${hint}`,
  );
}
