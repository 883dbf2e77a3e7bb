import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { isMeshError } from '@mesh/errors';
import { buildPrompt, parseOutput, schemaMarker, truncateJson } from './prompt.ts';

describe('truncateJson', () => {
  test('leaves JSON within the limit alone', () => {
    assert.deepEqual(truncateJson({ a: 'x' }, 100), { text: '{"a":"x"}', truncated: false });
  });

  test('cuts the longest strings first and stays valid JSON within the limit', () => {
    const value = { task: { topic: 'tides' }, notes: 'n'.repeat(5_000), other: 'o'.repeat(2_000) };
    const { text, truncated } = truncateJson(value, 1_000);
    assert.ok(truncated);
    assert.ok(text.length <= 1_000, `${text.length}`);
    const parsed = JSON.parse(text) as { task: { topic: string }; notes: string; other: string };
    assert.equal(parsed.task.topic, 'tides', 'short fields survive');
    assert.match(parsed.notes, /…\[truncated\]$/);
  });

  test('halves long arrays of short items', () => {
    const { text } = truncateJson({ items: Array.from({ length: 1_000 }, (_, i) => i) }, 300);
    const parsed = JSON.parse(text) as { items: unknown[] };
    assert.ok(text.length <= 300);
    assert.equal(parsed.items.at(-1), '…[truncated]');
  });

  test('cuts the text itself as a last resort', () => {
    const many = Object.fromEntries(Array.from({ length: 500 }, (_, i) => [`k${i}`, i]));
    const { text, truncated } = truncateJson(many, 200);
    assert.ok(truncated);
    assert.equal(text.length, 200);
    assert.ok(text.endsWith('…[truncated]'));
  });
});

describe('buildPrompt', () => {
  const schema = { type: 'object', required: ['a'] };

  test('names the agent, carries the schema and the input JSON', () => {
    const prompt = buildPrompt(
      { task: { q: 1 } },
      { agent: 'writer', outputSchema: schema, strictOutput: false },
    );
    const [system, user] = prompt.messages;
    assert.match(system?.content ?? '', /You are "writer"/);
    assert.ok(system?.content.endsWith(`${schemaMarker}\n${JSON.stringify(schema)}`));
    assert.equal(user?.content, '{"task":{"q":1}}');
    assert.equal(prompt.responseFormat, undefined, 'no response_format unless strict');
  });

  test('strictOutput asks for JSON only and sets response_format', () => {
    const withSchema = buildPrompt({}, { agent: 'a', outputSchema: schema, strictOutput: true });
    assert.match(withSchema.messages[0]?.content ?? '', /single JSON object: no prose/);
    assert.deepEqual(withSchema.responseFormat, {
      type: 'json_schema',
      json_schema: { name: 'output', schema, strict: false },
    });
    assert.deepEqual(buildPrompt({}, { agent: 'a', strictOutput: true }).responseFormat, {
      type: 'json_object',
    });
  });

  test('truncates the input to maxInputChars and says so', () => {
    const prompt = buildPrompt(
      { notes: 'x'.repeat(10_000) },
      { agent: 'a', strictOutput: false, maxInputChars: 500 },
    );
    assert.ok(prompt.truncated);
    assert.ok((prompt.messages[1]?.content.length ?? 0) <= 500);
    assert.match(prompt.messages[0]?.content ?? '', /has been shortened/);
  });
});

describe('parseOutput', () => {
  const invalid = (content: unknown, message: RegExp) =>
    assert.throws(
      () => parseOutput(content),
      (error: unknown) =>
        isMeshError(error) &&
        error.code === 'invalid_output' &&
        error.retryable &&
        message.test(error.message),
    );

  test('accepts a JSON object, also inside one code fence', () => {
    assert.deepEqual(parseOutput('{"a":1}'), { a: 1 });
    assert.deepEqual(parseOutput('```json\n{"a":1}\n```'), { a: 1 });
  });

  test('refuses prose, arrays and empty replies as invalid_output', () => {
    invalid('Sure! {"a": 1', /not JSON/);
    invalid('[1,2]', /not an object \(an array\)/);
    invalid('', /no content/);
    invalid(null, /no content/);
  });
});
