/**
 * `npm run bench -- <name> [options]`: runs `bench/<name>.ts` against the real stack (MESH_* variables,
 * else the local stack, see `@mesh/testkit`'s `meshEnv`), prints its JSON and writes it to
 * `bench/results/<name>.json`. The results files hold runs with the defaults: a run given options
 * prints but does not write unless `--write` is given too, and a partial run (`--only`, profiling)
 * never writes.
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
  const [name, ...given] = process.argv.slice(2);
  const write = given.includes('--write');
  const args = given.filter((arg) => arg !== '--write');
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
    // Aligned with the bench's own options.
    const column = /^( {2}--.*?\s{2,})\S/m.exec(bench.usage)?.[1]?.length ?? 25;
    const option = '--write'.padEnd(column - 2);
    process.stdout.write(
      `${bench.usage}\n  ${option}write bench/results/${name}.json although options were given\n`,
    );
    return;
  }
  const result = { ...(await bench.run(args)), args };
  const json = `${JSON.stringify(result, null, 2)}\n`;
  process.stdout.write(json);
  if (result.partial) {
    process.stderr.write(`partial run: bench/results/${name}.json left as it was\n`);
    return;
  }
  if (args.length > 0 && !write) {
    process.stderr.write(
      `run with options: bench/results/${name}.json left as it was (it holds a run with the defaults; --write writes this one)\n`,
    );
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
