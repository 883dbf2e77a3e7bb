/**
 * The codec's hot path against the real schema registry: synchronous once the registry's answers
 * are cached, a promise only while it is asked, and the same answers either way.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { newEvent, toKafka, type MeshEvent } from '@mesh/envelope';
import { isMeshError } from '@mesh/errors';
import { meshEnv } from '@mesh/testkit';
import { ContractRegistry, EventCodec, notCached } from '../src/index.ts';

/** A registry of one contract of its own, on the real registry, and a codec over it. */
async function freshCodec(): Promise<{
  registry: ContractRegistry;
  codec: EventCodec;
  type: string;
}> {
  const env = await meshEnv();
  const type = `test.codec.${randomUUID()}`;
  const schema = {
    $schema: 'http://json-schema.org/draft-07/schema#',
    title: type,
    type: 'object',
    properties: { n: { type: 'integer' } },
    required: ['n'],
    additionalProperties: false,
  };
  const contracts = new Map([[type, { type, schema }]]);
  await new ContractRegistry({ url: env.MESH_SCHEMA_REGISTRY_URL }, contracts).register(type);
  // A second instance knows nothing yet: what a service has right after it started.
  const registry = new ContractRegistry({ url: env.MESH_SCHEMA_REGISTRY_URL }, contracts);
  return { registry, codec: new EventCodec(registry, { maxBytes: 1_000_000 }), type };
}

const isMalformed = (error: unknown): boolean =>
  isMeshError(error) && error.code === 'malformed_event' && !error.retryable;

test('encodeNow and decodeNow ask the registry once, then answer without a promise', async () => {
  const { registry, codec, type } = await freshCodec();
  const event = (n: number): MeshEvent =>
    newEvent({ type, source: '/test', data: { n }, correlationid: 'task-1' });

  assert.equal(registry.encodeCached(type, { n: 1 }), notCached, 'nothing is cached yet');
  const first = codec.encodeNow(event(1));
  assert.ok(first instanceof Promise, 'the first encode asks the registry');
  const message = await first;
  const second = codec.encodeNow(event(2));
  assert.ok(!(second instanceof Promise), 'the next ones are synchronous');
  assert.equal(second.value.readUInt32BE(1), message.value.readUInt32BE(1), 'the same schema id');

  // A codec that never saw the schema id asks for its subjects and the schema, then no more.
  const reader = new EventCodec(new ContractRegistry({ url: registry.url }, new Map()), {
    maxBytes: 1_000_000,
  });
  const record = { key: null, value: second.value, headers: second.headers };
  const decoding = reader.decodeNow(record);
  assert.ok(decoding instanceof Promise, 'the first decode of a schema id asks the registry');
  assert.deepEqual((await decoding).data, { n: 2 });
  const decoded = reader.decodeNow(record);
  assert.ok(!(decoded instanceof Promise), 'the next decode is synchronous');
  assert.deepEqual(decoded.data, { n: 2 });
  assert.equal(decoded.type, type);
  assert.equal(decoded.correlationid, 'task-1');
});

test('a fault of the record is thrown by the hot path and rejected by decode and encode', async () => {
  const { codec, type } = await freshCodec();
  await codec.encode(newEvent({ type, source: '/test', data: { n: 1 } }));

  const bad = newEvent({ type, source: '/test', data: { n: 'one' } });
  assert.throws(
    () => codec.encodeNow(bad),
    (error: unknown) => isMeshError(error) && error.code === 'schema_violation',
  );
  await assert.rejects(
    codec.encode(bad),
    (error: unknown) => isMeshError(error) && error.code === 'schema_violation',
  );

  const good = await codec.encode(newEvent({ type, source: '/test', data: { n: 3 } }));
  const broken = { key: null, value: Buffer.from([0, 0, 0]), headers: good.headers };
  assert.throws(() => codec.decodeNow(broken), isMalformed);
  await assert.rejects(codec.decode(broken), isMalformed);

  // A schema id the registry does not know: asked once (a promise), refused as malformed.
  const unknownId = Buffer.concat([Buffer.from([0, 0x7f, 0xff, 0xff, 0xf0]), Buffer.from('{}')]);
  const unknown = toKafka(newEvent({ type, source: '/test', data: {} }), unknownId);
  await assert.rejects(
    Promise.resolve(codec.decodeNow({ key: null, value: unknown.value, headers: unknown.headers })),
    (error: unknown) => isMalformed(error) && /unknown schema id/.test((error as Error).message),
  );
});
