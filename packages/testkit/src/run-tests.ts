/**
 * `npm test`: every test, unit and integration, in one `node --test` run against the real stack.
 *
 * Resolves the stack once (environment variables, testcontainers or the local processes), checks
 * each component answers, passes the three MESH_* addresses to every test file, and stops what it
 * started afterwards. The reliability suite (test/chaos) runs last. `--unit` runs the unit tests
 * alone, without a stack; `--chaos` runs the reliability suite alone.
 */
import { spawn } from 'node:child_process';
import { globSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { resolveEnvironment, verifyEnvironment, type TestEnvironment } from './environment.ts';

const root = fileURLToPath(new URL('../../../', import.meta.url));
const args = process.argv.slice(2);
const unitOnly = args.includes('--unit');
const chaos = args.includes('--chaos');
const filters = args.filter((arg) => !arg.startsWith('--'));

const unitPatterns = ['packages/*/src/**/*.test.ts', 'services/*/src/**/*.test.ts'];
const integrationPatterns = [
  'packages/*/test/**/*.test.ts',
  'services/*/test/**/*.test.ts',
  'test/e2e/**/*.test.ts',
];
// The reliability suite stops and restarts Kafka and Redis, so it needs the local stack; part of
// `npm test`, and alone as `npm run test:chaos`.
const chaosPatterns = ['test/chaos/**/*.test.ts'];

function find(patterns: string[]): string[] {
  const files = patterns.flatMap((pattern) =>
    globSync(pattern, { cwd: root, exclude: (name) => name.includes('node_modules') }),
  );
  return [...new Set(files)]
    .sort()
    .filter((file) => filters.length === 0 || filters.some((f) => file.includes(f)));
}

// Two runs: everything else, then the reliability suite, which stops and restarts the stack's Kafka
// and Redis (node --test orders the files it is given by name, so one run cannot put it last).
const runs: string[][] = chaos
  ? [find(chaosPatterns)]
  : unitOnly
    ? [find(unitPatterns)]
    : [[...find(unitPatterns), ...find(integrationPatterns)], find(chaosPatterns)];
const files = runs.flat();
if (files.length === 0) {
  process.stderr.write('no test files matched\n');
  process.exit(1);
}

let environment: TestEnvironment | undefined;
const env: NodeJS.ProcessEnv = { ...process.env };
if (!unitOnly) {
  const started = Date.now();
  try {
    environment = await resolveEnvironment();
    await verifyEnvironment(environment.env);
  } catch (error) {
    process.stderr.write(`${(error as Error).message}\n`);
    await environment?.stop();
    process.exit(1);
  }
  Object.assign(env, environment.env);
  const redis = environment.env.MESH_REDIS_URL.replace(/\/\/[^@/]*@/, '//***@');
  process.stdout.write(
    `integration tests run against the real stack (${environment.source}, ready in ${((Date.now() - started) / 1000).toFixed(1)}s):\n` +
      `  kafka    ${environment.env.MESH_KAFKA_BROKERS}` +
      (environment.env.MESH_TEST_KAFKA_SASL_SSL_BROKERS === undefined
        ? ' (no TLS endpoints: their tests fail)'
        : ` (SASL_SSL ${environment.env.MESH_TEST_KAFKA_SASL_SSL_BROKERS})`) +
      `\n  registry ${environment.env.MESH_SCHEMA_REGISTRY_URL}\n  redis    ${redis}\n`,
  );
}

let running: ReturnType<typeof spawn> | undefined;
const forward = (signal: NodeJS.Signals): void => {
  running?.kill(signal);
};
process.on('SIGINT', forward);
process.on('SIGTERM', forward);
let code = 0;
for (const run of runs.filter((r) => r.length > 0)) {
  const child = spawn(
    process.execPath,
    [
      // Without it --test-force-exit can drop the last results of a file (see the module).
      '--import',
      new URL('./blocking-stdout.mjs', import.meta.url).href,
      '--test',
      '--test-concurrency=1',
      '--test-timeout=1800000',
      '--test-force-exit',
      '--test-reporter=spec',
      ...run,
    ],
    { cwd: root, env, stdio: 'inherit' },
  );
  running = child;
  const status = await new Promise<number>((resolve) =>
    child.on('exit', (exit, signal) => resolve(exit ?? (signal === null ? 1 : 128))),
  );
  // Both runs always go: a failure in one says nothing about the other.
  if (code === 0) code = status;
  if (status >= 128) break;
}
await environment?.stop();
process.exit(code);
