import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { renderConfigurationDoc } from './docs.ts';

test('docs/configuration.md lists every variable as the table declares it', () => {
  const current = readFileSync(new URL('../../../docs/configuration.md', import.meta.url), 'utf8');
  assert.equal(
    current,
    renderConfigurationDoc(),
    'regenerate with: node packages/config/src/docs.ts > docs/configuration.md',
  );
});
