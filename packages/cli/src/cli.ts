/**
 * The `mesh` command: parses the command line, runs the command with a context, and turns every
 * failure into one line on stderr (`mesh: …`) and exit status 1.
 *
 * Command modules are loaded when their command runs: the mesh's packages take a while to load, and
 * `mesh --help` or a usage error should answer at once.
 */
import { parseCommandLine, type ParsedCommand } from './args.ts';
import type { CliContext, ContextOptions } from './context.ts';
import { errorLine } from './errors.ts';

type Run = (ctx: CliContext, parsed: ParsedCommand) => Promise<number | void>;

const runners: Record<string, () => Promise<Run>> = {
  'topics init': async () => (await import('./commands/topics.ts')).topicsInit,
  'schemas register': async () => (await import('./commands/schemas.ts')).schemasRegister,
  'schemas check': async () => (await import('./commands/schemas.ts')).schemasCheck,
  publish: async () => (await import('./commands/publish.ts')).publish,
  tail: async () => (await import('./commands/tail.ts')).tail,
  task: async () => (await import('./commands/task.ts')).task,
  tasks: async () => (await import('./commands/task.ts')).tasks,
  lag: async () => (await import('./commands/lag.ts')).lag,
  'dlq list': async () => (await import('./commands/dlq.ts')).dlqList,
  'dlq replay': async () => (await import('./commands/dlq.ts')).dlqReplay,
  'dlq discard': async () => (await import('./commands/dlq.ts')).dlqDiscard,
  start: async () => (await import('./commands/start.ts')).start,
  doctor: async () => (await import('./commands/doctor.ts')).doctor,
};

/** Runs one command line and returns the exit status. Never throws. */
export async function run(
  argv: readonly string[],
  options: Omit<ContextOptions, 'json'> = {},
): Promise<number> {
  const stderr = options.stderr ?? process.stderr;
  let ctx: CliContext | undefined;
  try {
    const line = parseCommandLine(argv);
    if ('help' in line) {
      (options.stdout ?? process.stdout).write(`${line.help}\n`);
      return 0;
    }
    const load = runners[line.spec.name];
    if (load === undefined) throw new Error(`no runner for ${line.spec.name}`);
    const [runner, { CliContext }] = await Promise.all([load(), import('./context.ts')]);
    ctx = new CliContext({ ...options, json: line.json });
    const status = await runner(ctx, line);
    return status ?? 0;
  } catch (error) {
    stderr.write(`mesh: ${errorLine(error)}\n`);
    return 1;
  } finally {
    await ctx?.close();
  }
}
