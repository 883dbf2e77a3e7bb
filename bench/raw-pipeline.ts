/**
 * `node bench/raw-pipeline.ts <role> --brokers B --prefix P [--mode batch|each|slow]
 * [--kafkajs patched|stock] [--llm-url U] [--input T --output T --group G]`: one role of the raw
 * kafkajs pipeline as a process (see `startRawRole` in `plain-kafkajs.ts`). Prints `ready` once its
 * consumers joined; SIGTERM stops it cleanly (so `--cpu-prof` writes its profile).
 */
import { parseArgs } from 'node:util';
import { kafkajsCopies, rawModes, rawRoles, startRawRole, type RawRole } from './plain-kafkajs.ts';

const { positionals, values } = parseArgs({
  allowPositionals: true,
  options: {
    brokers: { type: 'string' },
    prefix: { type: 'string', default: '' },
    mode: { type: 'string', default: 'batch' },
    kafkajs: { type: 'string', default: 'patched' },
    'llm-url': { type: 'string' },
    input: { type: 'string' },
    output: { type: 'string' },
    group: { type: 'string' },
  },
});
const role = positionals[0] as RawRole;
if (!rawRoles.includes(role) || values.brokers === undefined) {
  process.stderr.write(`usage: node bench/raw-pipeline.ts <${rawRoles.join('|')}> --brokers B\n`);
  process.exit(2);
}
/** The value of `--name` if it is one of `allowed`; else the process stops naming what is. */
function oneOf<T extends string>(
  name: string,
  value: string | undefined,
  allowed: readonly T[],
): T {
  if (allowed.includes(value as T)) return value as T;
  process.stderr.write(`--${name} must be ${allowed.join(' or ')}, got ${JSON.stringify(value)}\n`);
  process.exit(2);
}
// A value mistyped must not run another variant under the label the caller asked for.
const mode = oneOf('mode', values.mode, rawModes);
const kafkajs = oneOf('kafkajs', values.kafkajs, kafkajsCopies);
const stop = await startRawRole(role, {
  brokers: values.brokers.split(','),
  prefix: values.prefix,
  mode,
  kafkajs,
  ...(values['llm-url'] === undefined ? {} : { llmUrl: values['llm-url'] }),
  ...(values.input !== undefined && values.output !== undefined && values.group !== undefined
    ? { relay: { input: values.input, output: values.output, groupId: values.group } }
    : {}),
});
process.stdout.write('ready\n');
const onSignal = (): void => {
  stop().then(
    () => process.exit(0),
    () => process.exit(1),
  );
};
process.once('SIGTERM', onSignal);
process.once('SIGINT', onSignal);
