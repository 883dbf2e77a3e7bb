/**
 * docs/configuration.md, generated from the variable table so the two cannot drift:
 * `node packages/config/src/docs.ts > docs/configuration.md` (a unit test checks it is current).
 */
import { formatDuration, variables, type Kind, type Variable } from './index.ts';

function allowed(kind: Kind): string {
  switch (kind.type) {
    case 'string':
      return kind.allowed ?? 'text';
    case 'secret':
      return 'secret text (never logged)';
    case 'url':
      return `${kind.schemes.join(' or ')} URL`;
    case 'int':
      return `integer ${kind.min}–${kind.max}`;
    case 'bool':
      return 'true or false';
    case 'duration':
      return `duration ${formatDuration(kind.minMs)}–${formatDuration(kind.maxMs)}`;
    case 'durations':
      return 'comma-separated durations';
    case 'enum':
      return kind.values.join(', ');
    case 'list':
      return kind.allowed;
  }
}

export function renderConfigurationDoc(): string {
  const rows = Object.entries(variables as Record<string, Variable>).map(
    ([name, v]) =>
      `| \`${name}\` | ${allowed(v.kind)} | ${v.default === undefined ? '' : `\`${v.default}\``} | ${v.doc.replace(/\|/g, '\\|')} |`,
  );
  return [
    '# Configuration',
    '',
    'Every service reads its settings from `MESH_*` environment variables, validated once at start-up:',
    'a bad value, a missing required one or an unknown `MESH_` name stops the service with one line per',
    'variable and exit status 78. The services share one table (this one), so an environment file',
    "shared by all four services is fine: a neighbour's variable is known, a typo is not.",
    '`MESH_STACK_*` and `MESH_TEST_*` configure the local stack and the test harness, not services.',
    '',
    'Required: `MESH_KAFKA_BROKERS`, `MESH_SCHEMA_REGISTRY_URL`, `MESH_REDIS_URL`.',
    '',
    '| variable | allowed | default | meaning |',
    '|---|---|---|---|',
    ...rows,
    '',
  ].join('\n');
}

if (import.meta.main) process.stdout.write(renderConfigurationDoc());
