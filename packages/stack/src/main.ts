import { readFile } from 'node:fs/promises';
import { parseArgs } from 'node:util';
import { formatEnvFile } from './env-file.ts';
import {
  componentNames,
  isComponentName,
  resolveStackSettings,
  type ComponentName,
} from './settings.ts';
import { readStackEnv, stackDown, stackStatus, stackUp, StackError } from './stack.ts';
import { errorMessage } from './tools.ts';

const usage = `usage: npm run stack -- <command> [component…]

  up [component…]     start the stack (or the named components) and write .env.mesh
  down [component…]   stop everything and delete its data; with components: stop those, keeping data
  status              show each component; exits 1 unless all are up
  env                 print .env.mesh; exits 1 unless the stack is up

components: ${componentNames.join(', ')}
ports: MESH_STACK_KAFKA_PORT (19092), MESH_STACK_KAFKA_CONTROLLER_PORT (19093),
       MESH_STACK_KAFKA_SECURE_PORT (19094, SASL_SSL), MESH_STACK_REGISTRY_PORT (18081),
       MESH_STACK_REGISTRY_TLS_PORT (18082), MESH_STACK_REDIS_PORT (16379),
       MESH_STACK_REDIS_TLS_PORT (16380)`;

async function main(argv: string[]): Promise<number> {
  const { positionals, values } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: { help: { type: 'boolean', short: 'h' } },
  });
  const [command, ...rest] = positionals;
  if (values.help === true || command === undefined || command === 'help') {
    process.stdout.write(`${usage}\n`);
    return command === undefined && values.help !== true ? 2 : 0;
  }
  const unknown = rest.filter((name) => !isComponentName(name));
  if (unknown.length > 0) {
    process.stderr.write(
      `unknown component(s): ${unknown.join(', ')} (expected ${componentNames.join(', ')})\n`,
    );
    return 2;
  }
  const components = rest.filter(isComponentName);
  switch (command) {
    case 'up':
      return up(components);
    case 'down':
      await stackDown(components.length > 0 ? { components } : {});
      return 0;
    case 'status':
      return status();
    case 'env':
      return env();
    default:
      process.stderr.write(`unknown command ${JSON.stringify(command)}\n${usage}\n`);
      return 2;
  }
}

async function up(components: ComponentName[]): Promise<number> {
  const controller = new AbortController();
  let interrupted = 0;
  const onSignal = (signal: NodeJS.Signals) => {
    interrupted += 1;
    if (interrupted > 1) process.exit(130);
    process.stderr.write(`${signal}: stopping what this command started (again to quit at once)\n`);
    controller.abort();
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  try {
    const env = await stackUp({
      components: components.length > 0 ? components : componentNames,
      signal: controller.signal,
    });
    if ((await readStackEnv()) !== undefined) process.stdout.write(formatEnvFile(env));
    else
      process.stderr.write(
        `not all components are up; start the rest with \`npm run stack -- up\`\n`,
      );
    return 0;
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
}

async function status(): Promise<number> {
  const statuses = await stackStatus();
  const width = Math.max(...statuses.map((s) => s.name.length));
  for (const s of statuses) {
    const pid = s.pid === undefined ? '-' : String(s.pid);
    const detail = s.detail === undefined ? '' : `  (${s.detail})`;
    process.stdout.write(
      `${s.name.padEnd(width)}  ${s.state.padEnd(9)}  pid ${pid.padEnd(8)}  ${s.address}${detail}\n`,
    );
  }
  return statuses.every((s) => s.state === 'up') ? 0 : 1;
}

async function env(): Promise<number> {
  if ((await readStackEnv()) === undefined) {
    process.stderr.write('the stack is not up: run `npm run stack -- up`\n');
    return 1;
  }
  process.stdout.write(await readFile(resolveStackSettings().envFile, 'utf8'));
  return 0;
}

try {
  process.exitCode = await main(process.argv.slice(2));
} catch (error) {
  // A StackError's message is written for people (it ends with the log tail); anything else is a bug: show its stack.
  process.stderr.write(
    `${error instanceof StackError ? error.message : error instanceof Error ? (error.stack ?? error.message) : errorMessage(error)}\n`,
  );
  process.exitCode = 1;
}
// Detached children are unref'd; a kafkajs client still retrying after a failed probe must not hold the CLI open.
process.exit();
