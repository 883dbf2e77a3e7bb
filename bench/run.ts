/**
 * `npm run bench -- <name> [options]`: runs `bench/<name>.ts` against the real stack (MESH_* variables,
 * else the local stack, see `@mesh/testkit`'s `meshEnv`), prints its JSON and writes it to
 * `bench/results/<name>.json`. A partial run (`--only`, profiling) prints but does not write.
 */
import { mkdir, rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';

interface BenchModule {
  usage: string;
  run(args: string[]): Promise<Record<string, unknown> & { partial: boolean }>;
}

const benches: Record<string, () => Promise<BenchModule>> = {
  runtime: () => import('./runtime.ts'),
  e2e: () => import('./e2e.ts'),
  'slow-agents': () => import('./slow-agents.ts'),
  overhead: () => import('./overhead.ts'),
  memory: () => import('./memory.ts'),
  'lag-recovery': () => import('./lag-recovery.ts'),
};

async function main(): Promise<void> {
  const [name, ...args] = process.argv.slice(2);
  const load = name === undefined ? undefined : benches[name];
  if (name === undefined || load === undefined) {
    process.stderr.write(
      `usage: npm run bench -- <name> [options]\n  benchmarks: ${Object.keys(benches).join(', ')}\n`,
    );
    process.exitCode = 2;
    return;
  }
  const bench = await load();
  if (args.includes('--help') || args.includes('-h')) {
    process.stdout.write(`${bench.usage}\n`);
    return;
  }
  const result = await bench.run(args);
  const json = `${JSON.stringify(result, null, 2)}\n`;
  process.stdout.write(json);
  if (result.partial) {
    process.stderr.write(`partial run: bench/results/${name}.json left as it was\n`);
    return;
  }
  const dir = join(import.meta.dirname, 'results');
  await mkdir(dir, { recursive: true });
  const file = join(dir, `${name}.json`);
  await writeFile(`${file}.tmp`, json);
  await rename(`${file}.tmp`, file);
  process.stderr.write(`written to bench/results/${name}.json\n`);
}

main().then(
  () => {
    // A client that failed to close must not keep a finished benchmark alive.
    setTimeout(() => process.exit(), 5_000).unref();
  },
  (error: unknown) => {
    process.stderr.write(
      `${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`,
    );
    process.exit(1);
  },
);
