/**
 * `mesh start` (what `npm start` runs): the local stack when it is not up, the topics and the
 * contracts, then the four services as child processes with their output prefixed by their name,
 * until Ctrl-C or SIGTERM — which stops the services gracefully and leaves the stack up.
 */
import { existsSync } from 'node:fs';
import { createConnection } from 'node:net';
import { join, relative } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { readStackEnv, stackEnvKeys, stackUp, type StackEnv } from '@mesh/stack';
import { stringOption, parseInterval, type ParsedCommand } from '../args.ts';
import { repoRoot } from '../config.ts';
import { CliContext } from '../context.ts';
import { CliError } from '../errors.ts';
import { RestartPolicy, ServiceProcess } from '../supervisor.ts';
import { registerSchemas } from './schemas.ts';
import { agentsOf, initTopics } from './topics.ts';

export interface ServiceSpec {
  name: 'orchestrator' | 'worker' | 'aggregator' | 'dlq-triage';
  port: number;
}

export const meshServices: readonly ServiceSpec[] = [
  { name: 'orchestrator', port: 8080 },
  { name: 'worker', port: 8082 },
  { name: 'aggregator', port: 8083 },
  { name: 'dlq-triage', port: 8084 },
];

const colors: Record<ServiceSpec['name'], string> = {
  orchestrator: '\u001b[36m',
  worker: '\u001b[35m',
  aggregator: '\u001b[33m',
  'dlq-triage': '\u001b[32m',
};

/**
 * The environment of a service: the caller's, minus the stack script's and test harness's MESH_*
 * variables (a service refuses MESH_* variables `@mesh/config` does not declare), plus the stack's
 * addresses, its port and MESH_LOG_LEVEL=info unless set.
 */
export function serviceEnv(
  env: NodeJS.ProcessEnv,
  stack: StackEnv,
  port: number,
): NodeJS.ProcessEnv {
  const out: NodeJS.ProcessEnv = {};
  for (const [name, value] of Object.entries(env)) {
    if (/^MESH_(STACK|TEST)_/.test(name)) continue;
    out[name] = value;
  }
  return {
    ...out,
    ...stack,
    MESH_LOG_LEVEL: env.MESH_LOG_LEVEL ?? 'info',
    MESH_HTTP_PORT: String(port),
  };
}

/** True when something accepts connections on 127.0.0.1:`port`. */
function portInUse(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = createConnection({ host: '127.0.0.1', port });
    socket.setTimeout(1_000);
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('timeout', () => {
      socket.destroy();
      resolve(false);
    });
    socket.once('error', () => resolve(false));
  });
}

async function isReady(port: number): Promise<boolean> {
  try {
    const response = await fetch(`http://127.0.0.1:${port}/readyz`, {
      signal: AbortSignal.timeout(1_000),
    });
    await response.body?.cancel();
    return response.status === 200;
  } catch {
    return false;
  }
}

/** Polls `/readyz` until it answers 200 (true), `gone()` says to stop, or the timeout passes. */
async function announceReady(
  spec: ServiceSpec,
  gone: () => boolean,
  timeoutMs: number,
): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline && !gone()) {
    if (await isReady(spec.port)) return true;
    await sleep(300);
  }
  return false;
}

/** The stack's addresses: the caller's variables, a running local stack, or one started now. */
async function ensureStack(ctx: CliContext): Promise<{ stack: StackEnv; how: string }> {
  const given = stackEnvKeys.every((key) => (ctx.env[key] ?? '') !== '');
  if (given) {
    const stack = Object.fromEntries(
      stackEnvKeys.map((key) => [key, ctx.env[key] ?? '']),
    ) as unknown as StackEnv;
    return { stack, how: 'from the MESH_* variables' };
  }
  const running = await readStackEnv();
  if (running !== undefined) return { stack: running, how: 'the local stack, already up' };
  ctx.note('mesh: the local stack is not up; starting it (npm run stack -- up)');
  try {
    const stack = await stackUp({ report: (line) => ctx.note(`stack: ${line}`) });
    return { stack, how: 'the local stack, started now' };
  } catch (error) {
    const message = error instanceof Error ? error.message : String(error);
    const [first, ...rest] = message.split('\n');
    if (rest.length > 0) ctx.note(rest.join('\n'));
    throw new CliError(`the local stack could not start: ${first ?? message}`, { cause: error });
  }
}

export async function start(ctx: CliContext, parsed: ParsedCommand): Promise<number> {
  const timeoutText = stringOption(parsed.values, 'ready-timeout');
  const readyTimeoutMs =
    timeoutText === undefined ? 90_000 : parseInterval(timeoutText, '--ready-timeout', 1_000);
  const { stack, how } = await ensureStack(ctx);

  // Topics and contracts with a context on the stack's addresses, closed before the services start.
  const setup = new CliContext({ json: ctx.json, env: { ...ctx.env, ...stack } });
  const mesh = setup.config.mesh;
  try {
    const agents = agentsOf(setup, undefined);
    const topics = await initTopics(setup, agents);
    const ids = await registerSchemas(setup);
    report(
      ctx,
      'setup',
      {
        kafka: stack.MESH_KAFKA_BROKERS,
        registry: stack.MESH_SCHEMA_REGISTRY_URL,
        stack: how,
        topicsCreated: topics.created.length,
        topicsExisting: topics.existing.length,
        contracts: ids.size,
      },
      `stack: ${how} — kafka ${stack.MESH_KAFKA_BROKERS}, registry ${stack.MESH_SCHEMA_REGISTRY_URL}\ntopics: ${topics.created.length} created, ${topics.existing.length} already there (prefix ${JSON.stringify(mesh.topicPrefix)}); contracts: ${ids.size} registered`,
    );
  } finally {
    await setup.close();
  }

  const tty = process.stdout.isTTY && !ctx.json;
  const width = Math.max(...meshServices.map((s) => s.name.length));
  const processes = new Map<ServiceSpec['name'], ServiceProcess>();
  const gaveUp = new Set<string>();
  let stopping = false;
  let exitCode = 0;
  let resolveStop: () => void = () => undefined;
  const stopRequested = new Promise<void>((resolve) => {
    resolveStop = resolve;
  });
  // The children keep the event loop alive, but not while one is between a crash and its restart.
  const keepAlive = setInterval(() => undefined, 60_000);

  for (const spec of meshServices) {
    const entry = join(repoRoot, 'services', spec.name, 'src', 'main.ts');
    if (!existsSync(entry)) {
      report(
        ctx,
        'missing',
        { service: spec.name, entry },
        `mesh: ${spec.name}: ${relative(process.cwd(), entry) || entry} does not exist yet; going on without it`,
        true,
      );
      continue;
    }
    if (await portInUse(spec.port)) {
      report(
        ctx,
        'port-in-use',
        { service: spec.name, port: spec.port },
        `mesh: ${spec.name}: port ${spec.port} is already in use (another \`npm start\`?); not starting it`,
        true,
      );
      continue;
    }
    const label = `${spec.name.padEnd(width)} │`;
    const prefix = tty ? `${colors[spec.name]}${label}\u001b[0m` : label;
    const policy = new RestartPolicy(5, 60_000);
    const child: ServiceProcess = new ServiceProcess({
      name: spec.name,
      entry,
      cwd: repoRoot,
      env: serviceEnv(ctx.env, stack, spec.port),
      onLine: (line, stream) => {
        if (ctx.json) ctx.emit({ event: 'log', service: spec.name, stream, line });
        else process.stdout.write(`${prefix} ${line}\n`);
      },
      onUnexpectedExit: (code, signal) => {
        if (stopping) return;
        const how = signal === null ? `exit code ${code ?? '?'}` : `signal ${signal}`;
        // 78 (EX_CONFIG) is a bad variable: it will not fix itself by a restart.
        if (code !== 78 && policy.allow(Date.now())) {
          report(
            ctx,
            'exited',
            { service: spec.name, code, signal, restarting: true },
            `mesh: ${spec.name} exited unexpectedly (${how}); restarting it in 1s`,
            true,
          );
          setTimeout(() => {
            if (stopping) return;
            child.start();
            void announceReady(spec, () => stopping || !child.running, readyTimeoutMs).then(
              (ok) => {
                if (ok)
                  report(
                    ctx,
                    'ready',
                    { service: spec.name, port: spec.port, restarted: true },
                    `mesh: ${spec.name} ready again on :${spec.port}`,
                    true,
                  );
              },
            );
          }, 1_000);
        } else {
          gaveUp.add(spec.name);
          report(
            ctx,
            'exited',
            { service: spec.name, code, signal, restarting: false },
            code === 78
              ? `mesh: ${spec.name} refused its configuration (${how}, see its output above); not restarting it`
              : `mesh: ${spec.name} exited unexpectedly (${how}) after ${policy.max} restarts within a minute; not restarting it again`,
            true,
          );
          if (gaveUp.size === processes.size) {
            exitCode = 1;
            report(ctx, 'failed', {}, 'mesh: no service is running any more', true);
            resolveStop();
          }
        }
      },
    });
    processes.set(spec.name, child);
    child.start();
  }
  if (processes.size === 0) {
    clearInterval(keepAlive);
    throw new CliError('no service could be started');
  }

  // Ctrl-C / SIGTERM: a graceful stop; a second one kills what is left.
  let signalled = 0;
  const onSignal = (signal: NodeJS.Signals): void => {
    signalled += 1;
    if (signalled === 1) {
      stopping = true;
      if (!ctx.json) process.stdout.write('\n');
      report(
        ctx,
        'stopping',
        { signal },
        signal === 'SIGHUP'
          ? 'mesh: the terminal or the parent process went away: stopping the services'
          : `mesh: ${signal}: stopping the services (again to kill them now)`,
        true,
      );
      resolveStop();
    } else {
      for (const child of processes.values()) child.kill();
    }
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  process.on('SIGHUP', onSignal);
  // `npm start` killed with SIGTERM exits without passing the signal on; the services must not be
  // left behind, so a vanished parent counts as a stop request too.
  const parent = process.ppid;
  const orphanCheck = setInterval(() => {
    if (process.ppid !== parent && signalled === 0) onSignal('SIGHUP');
  }, 1_000);

  const deadline = Date.now() + readyTimeoutMs;
  const ready = new Set<string>();
  const waiting = new Set(processes.keys());
  while (waiting.size > 0 && !stopping) {
    for (const name of [...waiting]) {
      if (stopping) break;
      const spec = meshServices.find((s) => s.name === name);
      const child = processes.get(name);
      if (spec === undefined || child === undefined) continue;
      if (gaveUp.has(name)) {
        waiting.delete(name);
        continue;
      }
      if (await isReady(spec.port)) {
        waiting.delete(name);
        ready.add(name);
        report(
          ctx,
          'ready',
          { service: name, port: spec.port },
          `mesh: ${name} ready on :${spec.port}`,
          true,
        );
      }
    }
    if (waiting.size === 0) break;
    if (Date.now() > deadline) {
      for (const name of waiting) {
        const child = processes.get(name);
        const spec = meshServices.find((s) => s.name === name);
        const tail = child?.tail(15) ?? [];
        report(
          ctx,
          'not-ready',
          { service: name, port: spec?.port, tail },
          `mesh: ${name} did not answer 200 on http://127.0.0.1:${spec?.port}/readyz within ${Math.round(readyTimeoutMs / 1000)}s; the last lines of its output:\n${tail.map((l) => `  ${l}`).join('\n') || '  (none)'}`,
          true,
        );
      }
      break;
    }
    await Promise.race([sleep(300), stopRequested]);
  }

  if (!stopping && exitCode === 0) {
    const tokenHeader =
      mesh.apiToken === undefined ? '' : ` -H "authorization: Bearer $MESH_API_TOKEN"`;
    const requests = `${mesh.topicPrefix}requests`;
    const lines = [
      '',
      `mesh running: ${meshServices
        .map(
          (s) =>
            `${s.name} ${ready.has(s.name) ? `:${s.port}` : processes.has(s.name) ? '(not ready)' : '(not started)'}`,
        )
        .join(', ')}`,
      '',
      'Publish a task:',
      '  npx mesh publish examples/research.json',
      `  curl -sS -X POST http://127.0.0.1:8080/v1/tasks -H 'content-type: application/json'${tokenHeader} --data @examples/research.json`,
      `  kcat -P -b ${stack.MESH_KAFKA_BROKERS} -t ${requests} -H content-type=application/cloudevents+json examples/structured-event.json`,
      '',
      'Watch:',
      '  npx mesh lag --watch',
      '  npx mesh tail outputs --follow',
      '  npx mesh task <task id>',
      '  npx mesh tasks --status running --older-than 1m',
      '  http://127.0.0.1:8080/dashboard',
      '',
      'Ctrl-C stops the services and leaves the stack up (npm run stack -- down stops it).',
      '',
    ];
    report(
      ctx,
      'running',
      { ready: [...ready], topicPrefix: mesh.topicPrefix, kafka: stack.MESH_KAFKA_BROKERS },
      lines.join('\n'),
    );
    await stopRequested;
  }

  stopping = true;
  const graceMs = mesh.shutdownTimeoutMs + 5_000;
  const results = await Promise.all(
    [...processes].map(async ([name, child]) => [name, await child.stop(graceMs)] as const),
  );
  for (const [name, how] of results) {
    if (how !== 'not running')
      report(
        ctx,
        'stopped',
        { service: name, how },
        `mesh: ${name} ${how === 'killed' ? `killed after ${graceMs / 1000}s` : 'stopped'}`,
        true,
      );
  }
  report(
    ctx,
    'done',
    { stackUp: true },
    'mesh: services stopped; the stack is still up (npm run stack -- down stops it)',
    true,
  );
  process.off('SIGINT', onSignal);
  process.off('SIGTERM', onSignal);
  process.off('SIGHUP', onSignal);
  clearInterval(orphanCheck);
  clearInterval(keepAlive);
  return exitCode;
}

/** A status line: NDJSON `{ event, … }` with --json, else text (on stderr when `toStderr`). */
function report(
  ctx: CliContext,
  event: string,
  fields: Record<string, unknown>,
  text: string,
  toStderr = false,
): void {
  if (ctx.json) ctx.emit({ event, at: new Date().toISOString(), ...fields });
  else if (toStderr) ctx.note(text);
  else ctx.print(text);
}
