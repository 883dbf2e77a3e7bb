/**
 * `mesh doctor`: every connection the mesh needs, tried with the current settings (TLS, SASL,
 * credentials included), one line each. What a platform engineer runs after pointing the mesh at
 * managed Kafka, a registry and Redis, before any service starts.
 */
import { topicSpecs } from '@mesh/runtime';
import { createRedis, evictionRisk } from '@mesh/redis';
import type { ParsedCommand } from '../args.ts';
import type { CliContext } from '../context.ts';
import { errorLine } from '../errors.ts';
import { table } from '../format.ts';
import { agentsOf } from './topics.ts';

export interface DoctorCheck {
  name: 'kafka' | 'registry' | 'redis';
  ok: boolean;
  detail: string;
}

/** A failed check's detail: the CLI's one line for the error, without its `config: ` prefix. */
function failure(error: unknown): string {
  return errorLine(error).replace(/^config: /, '');
}

async function checkKafka(ctx: CliContext): Promise<DoctorCheck> {
  try {
    const admin = await ctx.admin();
    const topics = new Set(await ctx.kafkaStep(admin.listTopics()));
    const wanted = topicSpecs(ctx.config.mesh, agentsOf(ctx, undefined)).map((s) => s.topic);
    const missing = wanted.filter((topic) => !topics.has(topic));
    const absent =
      missing.length === 0
        ? ''
        : ` (${missing.length > 3 ? `${missing.length} missing` : `missing: ${missing.join(', ')}`}; ` +
          '`mesh topics init` or a service with MESH_CREATE_TOPICS creates them)';
    return {
      name: 'kafka',
      ok: true,
      detail:
        `${ctx.brokers}: connected; ${wanted.length - missing.length} of ${wanted.length} topics ` +
        `under "${ctx.config.mesh.topicPrefix}"${absent}`,
    };
  } catch (error) {
    return { name: 'kafka', ok: false, detail: failure(error) };
  }
}

async function checkRegistry(ctx: CliContext): Promise<DoctorCheck> {
  try {
    const registry = await ctx.registry();
    const reports = await ctx.registryStep(registry.check());
    const registered = reports.filter((r) => !r.isNew).length;
    const incompatible = reports.filter((r) => !r.compatible).map((r) => r.type);
    return {
      name: 'registry',
      ok: incompatible.length === 0,
      detail:
        `${registry.url}: ${registered} of ${reports.length} contracts registered` +
        (registered < reports.length
          ? ' (`mesh schemas register` or a service registers them)'
          : '') +
        (incompatible.length === 0
          ? ', all compatible'
          : `; INCOMPATIBLE (BACKWARD): ${incompatible.join(', ')}`),
    };
  } catch (error) {
    return { name: 'registry', ok: false, detail: failure(error) };
  }
}

/** Connects as a service does; a refused setting is reported at once, an absent Redis on timeout. */
async function checkRedis(ctx: CliContext): Promise<DoctorCheck> {
  const { redis: connection } = ctx.config.mesh;
  const where = connection.url.replace(/\/\/[^@/]*@/, '//');
  let fault: string | undefined;
  const client = createRedis(connection, {
    connectionName: 'mesh-cli-doctor',
    onSettingsFault: (message) => (fault = message),
  });
  try {
    const deadline = Date.now() + ctx.config.timeoutMs;
    while (client.status !== 'ready' && fault === undefined && Date.now() < deadline)
      await new Promise((resolve) => setTimeout(resolve, 20));
    if (fault !== undefined) return { name: 'redis', ok: false, detail: fault };
    if (client.status !== 'ready')
      return {
        name: 'redis',
        ok: false,
        detail: `${where}: no answer within ${ctx.config.timeoutMs} ms`,
      };
    await client.ping();
    const risk = await evictionRisk(client);
    return {
      name: 'redis',
      ok: true,
      detail:
        `${where}: connected` +
        (risk === undefined
          ? ''
          : `; may evict mesh keys (${risk}): use maxmemory-policy noeviction`),
    };
  } catch (error) {
    return { name: 'redis', ok: false, detail: `${where}: ${failure(error)}` };
  } finally {
    client.disconnect();
  }
}

export async function doctor(ctx: CliContext, _parsed: ParsedCommand): Promise<number> {
  // A bad variable is reported before anything connects, like a service's start.
  void ctx.config;
  const checks = await Promise.all([checkKafka(ctx), checkRegistry(ctx), checkRedis(ctx)]);
  if (ctx.json) ctx.emit({ ok: checks.every((c) => c.ok), checks });
  else
    for (const line of table(
      ['CHECK', 'STATUS', 'DETAIL'],
      checks.map((c) => [c.name, c.ok ? 'ok' : 'FAILED', c.detail]),
    ))
      ctx.print(line);
  const failed = checks.filter((c) => !c.ok);
  if (failed.length === 0) return 0;
  ctx.note(`mesh: ${failed.map((c) => c.name).join(', ')} failed`);
  return 1;
}
