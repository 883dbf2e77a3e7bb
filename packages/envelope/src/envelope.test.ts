// node:test's test() and describe() return promises the runner itself awaits.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { CloudEvent, Kafka, type KafkaMessage } from 'cloudevents';
import { isMeshError } from '@mesh/errors';
import {
  checkLoopGuards,
  childTraceparent,
  deriveEvent,
  deterministicId,
  extendAgentPath,
  fromKafka,
  newEvent,
  parseTraceparent,
  splitAgentPath,
  toKafka,
  type MeshEventAttributes,
  type WireMessage,
} from './index.ts';

const uuidV5 = /^[0-9a-f]{8}-[0-9a-f]{4}-5[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;
const traceparent = '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01';

/** Every attribute and mesh extension set, plus two client extensions. */
const fullEvent: MeshEventAttributes = {
  specversion: '1.0',
  id: 'evt-1',
  source: '/mesh/worker',
  type: 'io.mesh.subtask.failed',
  time: '2025-01-02T03:04:05.678Z',
  subject: 'task-1',
  datacontenttype: 'application/json',
  dataschema: 'http://registry:8081/schemas/ids/7',
  correlationid: 'task-1',
  causationid: 'evt-0',
  hopcount: 3,
  agentpath: 'planner,researcher',
  agent: 'writer',
  traceparent,
  tracestate: 'vendor=abc',
  partitionkey: 'pk-1',
  meshattempt: 2,
  meshnotbefore: '2025-01-02T03:05:00Z',
  meshfailure: 'timeout',
  meshfailuredetail: 'model took 31s',
  meshfailedby: 'worker/mesh.worker.writer',
  meshorigintopic: 'mesh.work.writer',
  extensions: { tenant: 'acme', region2: 'eu' },
};

const jsonValue = (data: unknown): Buffer => Buffer.from(JSON.stringify(data));

/** Binary-mode headers of a minimal valid event, to be spoiled by the malformed cases. */
function binaryHeaders(extra: Record<string, string> = {}): Record<string, string> {
  return {
    ce_specversion: '1.0',
    ce_id: 'id-1',
    ce_source: '/client',
    ce_type: 'io.mesh.task.requested',
    'content-type': 'application/json',
    ...extra,
  };
}

function structured(event: Record<string, unknown>): WireMessage {
  return {
    key: null,
    value: Buffer.from(JSON.stringify(event)),
    headers: { 'content-type': 'application/cloudevents+json; charset=utf-8' },
  };
}

function assertMalformed(fn: () => unknown, message?: RegExp): void {
  assert.throws(fn, (error: unknown) => {
    assert.ok(isMeshError(error), `expected a MeshError, got ${String(error)}`);
    assert.equal(error.code, 'malformed_event');
    assert.equal(error.retryable, false);
    if (message !== undefined) assert.match(error.message, message);
    return true;
  });
}

/** What a Kafka client hands over after the SDK's message went over the wire: string headers. */
function overTheWire(message: KafkaMessage<unknown>, value: Buffer): WireMessage {
  const headers: Record<string, Buffer> = {};
  for (const [name, headerValue] of Object.entries(message.headers)) {
    if (headerValue !== undefined) headers[name] = Buffer.from(String(headerValue));
  }
  return { key: typeof message.key === 'string' ? message.key : null, value, headers };
}

describe('toKafka / fromKafka binary mode', () => {
  test('writes ce_ headers, content-type and the partition key', () => {
    const message = toKafka(fullEvent, jsonValue({ ok: true }));
    assert.equal(message.key, 'pk-1');
    assert.equal(message.headers['content-type'], 'application/json');
    assert.equal(message.headers.ce_specversion, '1.0');
    assert.equal(message.headers.ce_id, 'evt-1');
    assert.equal(message.headers.ce_hopcount, '3');
    assert.equal(message.headers.ce_meshattempt, '2');
    assert.equal(message.headers.ce_tenant, 'acme');
    assert.equal('ce_datacontenttype' in message.headers, false);
    for (const name of Object.keys(message.headers)) {
      assert.ok(name === 'content-type' || /^ce_[a-z0-9]+$/.test(name), name);
    }
  });

  test('round-trips every attribute and extension', () => {
    const value = jsonValue({ reason: 'x' });
    const message = toKafka(fullEvent, value);
    const decoded = fromKafka(message);
    assert.equal(decoded.mode, 'binary');
    assert.deepEqual(decoded.attributes, fullEvent);
    assert.deepEqual(decoded.value, value);
    assert.equal(decoded.data, undefined);
  });

  test('round-trips Buffer headers as a Kafka client delivers them', () => {
    const message = toKafka(fullEvent, jsonValue(1));
    const headers = Object.fromEntries(
      Object.entries(message.headers).map(([name, value]) => [name, Buffer.from(value)]),
    );
    const decoded = fromKafka({ key: Buffer.from('pk-1'), value: message.value, headers });
    assert.deepEqual(decoded.attributes, fullEvent);
  });

  test('the key is the correlationid when there is no partitionkey, else null', () => {
    const base: MeshEventAttributes = { specversion: '1.0', id: 'a', source: '/s', type: 't' };
    assert.equal(toKafka({ ...base, correlationid: 'task-9' }, jsonValue(1)).key, 'task-9');
    assert.equal(toKafka(base, jsonValue(1)).key, null);
    assert.equal(toKafka(base, jsonValue(1)).headers['content-type'], 'application/json');
  });

  test('reads the last value of a repeated header', () => {
    const repeated = fromKafka({
      key: null,
      value: jsonValue({}),
      headers: { ...binaryHeaders(), ce_id: [Buffer.from('first'), 'second'] },
    });
    assert.equal(repeated.attributes.id, 'second');
  });

  test('accepts a message within maxBytes', () => {
    const value = Buffer.alloc(100, 0x20);
    value[0] = 0x7b;
    const decoded = fromKafka({ key: null, value, headers: binaryHeaders() }, { maxBytes: 100 });
    assert.equal(decoded.value?.length, 100);
  });
});

describe('fromKafka structured mode', () => {
  test('reads attributes, integer extensions and data from the JSON value', () => {
    const decoded = fromKafka({
      key: 'k',
      value: Buffer.from(
        JSON.stringify({
          specversion: '1.0',
          id: 'req-1',
          source: 'kcat',
          type: 'io.mesh.task.requested',
          time: '2025-05-06T07:08:09+02:00',
          datacontenttype: 'application/json',
          correlationid: 'task-7',
          hopcount: 0,
          custom: 'yes',
          data: { prompt: 'hello', n: [1, 2] },
        }),
      ),
      headers: { 'content-type': 'application/cloudevents+json' },
    });
    assert.equal(decoded.mode, 'structured');
    assert.equal(decoded.value, undefined);
    assert.deepEqual(decoded.data, { prompt: 'hello', n: [1, 2] });
    assert.deepEqual(decoded.attributes, {
      specversion: '1.0',
      id: 'req-1',
      source: 'kcat',
      type: 'io.mesh.task.requested',
      time: '2025-05-06T07:08:09+02:00',
      datacontenttype: 'application/json',
      correlationid: 'task-7',
      hopcount: 0,
      extensions: { custom: 'yes' },
    });
  });

  test('a content-type header in another case is read the same', () => {
    const value = Buffer.from(
      JSON.stringify({ specversion: '1.0', id: 'a', source: 's', type: 't', data: { n: 1 } }),
    );
    for (const name of ['Content-Type', 'CONTENT-TYPE']) {
      const decoded = fromKafka({
        key: null,
        value,
        headers: { [name]: Buffer.from('application/cloudevents+json') },
      });
      assert.equal(decoded.mode, 'structured', name);
      assert.deepEqual(decoded.data, { n: 1 }, name);
    }
  });

  test('data may be any JSON value, including null', () => {
    const decoded = fromKafka(
      structured({ specversion: '1.0', id: 'a', source: 's', type: 't', data: null }),
    );
    assert.equal(decoded.data, null);
  });
});

describe('fromKafka rejects malformed events with malformed_event', () => {
  const value = jsonValue({ a: 1 });
  const binary = (headers: Record<string, string>, v: Buffer | null = value): WireMessage => ({
    key: null,
    value: v,
    headers,
  });
  const withoutHeader = (name: string): Record<string, string> => {
    const headers = binaryHeaders();
    delete headers[name];
    return headers;
  };

  test('no specversion, binary and structured', () => {
    assertMalformed(() => fromKafka(binary(withoutHeader('ce_specversion'))), /not a CloudEvent/);
    assertMalformed(() => fromKafka(binary({})), /not a CloudEvent/);
    assertMalformed(
      () => fromKafka(structured({ id: 'a', source: 's', type: 't', data: {} })),
      /no specversion/,
    );
  });

  test('specversion 0.3', () => {
    assertMalformed(
      () => fromKafka(binary(binaryHeaders({ ce_specversion: '0.3' }))),
      /unsupported specversion/,
    );
    assertMalformed(
      () =>
        fromKafka(structured({ specversion: '0.3', id: 'a', source: 's', type: 't', data: {} })),
      /unsupported specversion/,
    );
  });

  for (const name of ['id', 'source', 'type']) {
    test(`missing or empty ${name}`, () => {
      assertMalformed(
        () => fromKafka(binary(withoutHeader(`ce_${name}`))),
        new RegExp(`missing required attribute ${name}`),
      );
      assertMalformed(
        () => fromKafka(binary(binaryHeaders({ [`ce_${name}`]: '' }))),
        new RegExp(`missing required attribute ${name}`),
      );
    });
  }

  for (const bad of ['-1', '1.5', 'abc', '', '01', '1e3']) {
    test(`hopcount ${JSON.stringify(bad)}`, () => {
      assertMalformed(
        () => fromKafka(binary(binaryHeaders({ ce_hopcount: bad }))),
        /hopcount must be a non-negative integer/,
      );
    });
  }

  test('a negative or fractional hopcount in structured mode', () => {
    for (const hopcount of [-1, 1.5]) {
      assertMalformed(() =>
        fromKafka(
          structured({ specversion: '1.0', id: 'a', source: 's', type: 't', hopcount, data: {} }),
        ),
      );
    }
  });

  test('bad time and meshnotbefore', () => {
    for (const time of [
      'yesterday',
      '2025-01-02',
      '2025-01-02 03:04:05Z',
      '2025-13-45T03:04:05Z',
    ]) {
      assertMalformed(
        () => fromKafka(binary(binaryHeaders({ ce_time: time }))),
        /time must be an RFC 3339 timestamp/,
      );
    }
    assertMalformed(
      () => fromKafka(binary(binaryHeaders({ ce_meshnotbefore: '5s' }))),
      /meshnotbefore/,
    );
  });

  test('invalid attribute names', () => {
    assertMalformed(
      () => fromKafka(binary(binaryHeaders({ ce_Tenant: 'x' }))),
      /invalid attribute name "Tenant"/,
    );
    assertMalformed(
      () => fromKafka(binary(binaryHeaders({ ce_my_ext: 'x' }))),
      /invalid attribute name/,
    );
    assertMalformed(
      () =>
        fromKafka(
          structured({ specversion: '1.0', id: 'a', source: 's', type: 't', Foo: 'x', data: {} }),
        ),
      /invalid attribute name/,
    );
  });

  test('read in one pass, the faults are reported in the order the checks come, not the headers', () => {
    // A bad extension before the headers that make it a CloudEvent: not a CloudEvent comes first,
    // then the content type, then the required attributes, then the first bad attribute.
    const badFirst = (rest: Record<string, string>): Record<string, string> => ({
      ce_hopcount: 'x',
      ce_Bad: 'y',
      ...rest,
    });
    assertMalformed(() => fromKafka(binary(badFirst({}))), /not a CloudEvent/);
    assertMalformed(
      () => fromKafka(binary(badFirst({ ...binaryHeaders(), 'content-type': 'text/plain' }))),
      /unsupported content-type text\/plain/,
    );
    assertMalformed(
      () => fromKafka(binary(badFirst(withoutHeader('ce_source')))),
      /missing required attribute source/,
    );
    assertMalformed(
      () => fromKafka(binary(badFirst(binaryHeaders()))),
      /hopcount must be a non-negative integer/,
    );
    // A structured-mode record is read from its value: stray ce_ headers are not looked at.
    const decoded = fromKafka({
      key: null,
      value: Buffer.from(
        JSON.stringify({ specversion: '1.0', id: 'a', source: 's', type: 't', data: 1 }),
      ),
      headers: { ce_hopcount: 'x', 'Content-Type': 'application/cloudevents+json' },
    });
    assert.equal(decoded.mode, 'structured');
    assert.equal(decoded.attributes.hopcount, undefined);
  });

  test('invalid UTF-8 in a structured value', () => {
    assertMalformed(
      () =>
        fromKafka({
          key: null,
          value: Buffer.from([0x7b, 0xff, 0x7d]),
          headers: { 'content-type': 'application/cloudevents+json' },
        }),
      /not valid UTF-8/,
    );
  });

  test('a structured value that is not JSON, or not a JSON object', () => {
    const headers = { 'content-type': 'application/cloudevents+json' };
    assertMalformed(
      () => fromKafka({ key: null, value: Buffer.from('{"specversion":'), headers }),
      /is not JSON/,
    );
    assertMalformed(
      () => fromKafka({ key: null, value: Buffer.from('[1,2]'), headers }),
      /not a JSON object/,
    );
    assertMalformed(() => fromKafka({ key: null, value: null, headers }), /without a value/);
  });

  test('a structured event without data, with data_base64, or with object attributes', () => {
    const base = { specversion: '1.0', id: 'a', source: 's', type: 't' };
    assertMalformed(() => fromKafka(structured(base)), /without data/);
    assertMalformed(() => fromKafka(structured({ ...base, data_base64: 'AAE=' })), /data_base64/);
    assertMalformed(
      () => fromKafka(structured({ ...base, correlationid: { id: 1 }, data: {} })),
      /must be a string or a non-negative integer/,
    );
    assertMalformed(
      () => fromKafka(structured({ ...base, datacontenttype: 'text/xml', data: '<a/>' })),
      /unsupported datacontenttype/,
    );
  });

  test('a content type other than JSON with ce_ headers', () => {
    assertMalformed(
      () => fromKafka(binary(binaryHeaders({ 'content-type': 'text/plain' }))),
      /unsupported content-type text\/plain/,
    );
  });

  test('a non-CloudEvent content type without ce_ headers', () => {
    assertMalformed(
      () => fromKafka(binary({ 'content-type': 'text/plain' })),
      /content-type text\/plain without ce_ headers/,
    );
  });

  test('a value larger than maxBytes, in either mode', () => {
    const big = Buffer.alloc(101, 0x20);
    assertMalformed(
      () => fromKafka(binary(binaryHeaders(), big), { maxBytes: 100 }),
      /over the limit of 100/,
    );
    assertMalformed(
      () =>
        fromKafka(
          { key: null, value: big, headers: { 'content-type': 'application/cloudevents+json' } },
          { maxBytes: 100 },
        ),
      /over the limit/,
    );
  });

  test('a binary event with an empty or null value', () => {
    assertMalformed(() => fromKafka(binary(binaryHeaders(), Buffer.alloc(0))), /without a value/);
    assertMalformed(() => fromKafka(binary(binaryHeaders(), null)), /without a value/);
  });
});

describe('interop with the CloudEvents SDK (cloudevents v10)', () => {
  const sdkEvent = new CloudEvent({
    specversion: '1.0',
    id: 'sdk-1',
    source: '/python-client',
    type: 'io.mesh.task.requested',
    time: '2025-03-04T05:06:07.000Z',
    subject: 'task-42',
    datacontenttype: 'application/json',
    correlationid: 'task-42',
    hopcount: 0,
    partitionkey: 'task-42',
    tenant: 'acme',
    data: { prompt: 'summarise' },
  });
  const expected: MeshEventAttributes = {
    specversion: '1.0',
    id: 'sdk-1',
    source: '/python-client',
    type: 'io.mesh.task.requested',
    time: '2025-03-04T05:06:07.000Z',
    subject: 'task-42',
    datacontenttype: 'application/json',
    correlationid: 'task-42',
    hopcount: 0,
    partitionkey: 'task-42',
    extensions: { tenant: 'acme' },
  };

  test('fromKafka reads the SDK binary mode', () => {
    const message = Kafka.binary(sdkEvent);
    const decoded = fromKafka(overTheWire(message, jsonValue(sdkEvent.data)));
    assert.equal(decoded.mode, 'binary');
    assert.deepEqual(decoded.attributes, expected);
    assert.deepEqual(JSON.parse(decoded.value?.toString() ?? ''), { prompt: 'summarise' });
  });

  test('fromKafka reads the SDK structured mode', () => {
    const message = Kafka.structured(sdkEvent);
    const decoded = fromKafka(overTheWire(message, Buffer.from(message.value)));
    assert.equal(decoded.mode, 'structured');
    assert.deepEqual(decoded.attributes, expected);
    assert.deepEqual(decoded.data, { prompt: 'summarise' });
  });

  test('the SDK reads what toKafka produces', () => {
    const message = toKafka(fullEvent, jsonValue({ reason: 'x' }));
    assert.equal(Kafka.isEvent({ headers: message.headers, body: message.value }), true);
    const kafkaMessage: KafkaMessage<Buffer> = {
      key: message.key ?? '',
      value: message.value,
      headers: message.headers,
      body: message.value,
    };
    const event = Kafka.toEvent<unknown>(kafkaMessage);
    assert.ok(event instanceof CloudEvent, 'one event, not a batch');
    const attributes = event as unknown as Record<string, unknown>;
    const expectedStrings: Record<string, string> = {};
    for (const [name, value] of Object.entries(fullEvent)) {
      if (name === 'extensions') continue;
      expectedStrings[name] = String(value);
    }
    Object.assign(expectedStrings, fullEvent.extensions);
    for (const [name, value] of Object.entries(expectedStrings)) {
      assert.equal(String(attributes[name]), value, name);
    }
    assert.deepEqual(event.data, { reason: 'x' });
  });
});

describe('newEvent and deriveEvent', () => {
  const cause = {
    ...newEvent({ type: 'io.mesh.task.requested', source: '/client', data: { p: 1 }, id: 'req-1' }),
    traceparent,
    tracestate: 'vendor=abc',
  };

  test('a root event has hopcount 0, the id as task id and a fresh trace', () => {
    const root = newEvent({ type: 'io.mesh.task.requested', source: '/client', data: 1 });
    assert.match(root.id, /^[0-9a-f-]{36}$/);
    assert.equal(root.correlationid, root.id);
    assert.equal(root.partitionkey, root.id);
    assert.equal(root.subject, root.id);
    assert.equal(root.hopcount, 0);
    assert.equal(root.agentpath, '');
    assert.ok(parseTraceparent(root.traceparent) !== undefined);
    assert.equal(
      newEvent({ type: 't', source: 's', data: 1, correlationid: 'c' }).correlationid,
      'c',
    );
  });

  test('the child carries the lineage forward', () => {
    const child = deriveEvent(
      { ...cause, hopcount: 2, agentpath: 'planner' },
      {
        type: 'io.mesh.subtask.assigned',
        source: '/orchestrator',
        data: { node: 'n1' },
        discriminator: 'n1',
        agent: 'writer',
        visited: 'researcher',
        meshattempt: 1,
      },
    );
    assert.equal(child.hopcount, 3);
    assert.equal(child.causationid, 'req-1');
    assert.equal(child.correlationid, 'req-1');
    assert.equal(child.partitionkey, 'req-1');
    assert.equal(child.subject, 'req-1');
    assert.equal(child.agentpath, 'planner,researcher');
    assert.equal(child.agent, 'writer');
    assert.equal(child.meshattempt, 1);
    assert.equal(child.tracestate, 'vendor=abc');
    assert.deepEqual(child.data, { node: 'n1' });
    const parent = parseTraceparent(traceparent);
    const span = parseTraceparent(child.traceparent);
    assert.ok(parent !== undefined && span !== undefined);
    assert.equal(span.traceId, parent.traceId);
    assert.equal(span.flags, parent.flags);
    assert.notEqual(span.spanId, parent.spanId);
  });

  test('without visited the agentpath is unchanged; the correlationid defaults to the cause id', () => {
    const child = deriveEvent(
      { specversion: '1.0', id: 'x-1', source: 's', type: 't', agentpath: 'a,b' },
      { type: 'io.mesh.subtask.completed', source: '/worker', data: null },
    );
    assert.equal(child.agentpath, 'a,b');
    assert.equal(child.correlationid, 'x-1');
    assert.equal(child.hopcount, 1);
    assert.ok(parseTraceparent(child.traceparent) !== undefined);
  });

  test('ids are deterministic per cause, type and discriminator', () => {
    const init = { type: 'io.mesh.subtask.assigned', source: '/o', data: {}, discriminator: 'n1' };
    const a = deriveEvent(cause, init);
    const b = deriveEvent(cause, init);
    assert.equal(a.id, b.id);
    assert.match(a.id, uuidV5);
    assert.notEqual(deriveEvent(cause, { ...init, discriminator: 'n2' }).id, a.id);
    assert.notEqual(deriveEvent(cause, { ...init, type: 'io.mesh.other' }).id, a.id);
    assert.notEqual(deriveEvent({ ...cause, id: 'req-2' }, init).id, a.id);
    assert.equal(deriveEvent(cause, { ...init, id: 'explicit' }).id, 'explicit');
  });

  test('deterministicId is a stable version 5 UUID', () => {
    const id = deterministicId('cause', 'disc');
    assert.match(id, uuidV5);
    assert.equal(deterministicId('cause', 'disc'), id);
    assert.notEqual(deterministicId('cause', 'other'), id);
    // The separator keeps ("ab", "c") and ("a", "bc") apart.
    assert.notEqual(deterministicId('ab', 'c'), deterministicId('a', 'bc'));
    // Pinned: a redelivery handled by a newer release must emit the ids an older one emitted.
    assert.equal(id, 'f0de3b45-f7a9-52a5-85fd-af2199c8eb38');
    assert.equal(
      deterministicId('task-1', 'io.mesh.subtask.assigned\u0000assign:s1/n1'),
      '0c770b14-058a-57be-b4d5-97ec9e99c1ef',
    );
  });

  test('derived events survive the Kafka binding', () => {
    const child = deriveEvent(cause, { type: 't.child', source: '/w', data: 1, visited: 'w' });
    const { data: _data, ...attributes } = child;
    const decoded = fromKafka(toKafka(attributes, jsonValue(1)));
    assert.deepEqual(decoded.attributes, attributes);
  });
});

describe('trace context', () => {
  test('parseTraceparent accepts version 00 and rejects invalid or all-zero ids', () => {
    assert.deepEqual(parseTraceparent(traceparent), {
      traceId: '4bf92f3577b34da6a3ce929d0e0e4736',
      spanId: '00f067aa0ba902b7',
      flags: '01',
    });
    assert.equal(parseTraceparent(undefined), undefined);
    assert.equal(parseTraceparent('garbage'), undefined);
    assert.equal(parseTraceparent(`00-${'0'.repeat(32)}-00f067aa0ba902b7-01`), undefined);
    assert.equal(
      parseTraceparent(`00-4bf92f3577b34da6a3ce929d0e0e4736-${'0'.repeat(16)}-01`),
      undefined,
    );
    assert.equal(parseTraceparent(traceparent.toUpperCase()), undefined);
  });

  test('childTraceparent starts a new trace when the parent is invalid', () => {
    const child = parseTraceparent(childTraceparent('nonsense'));
    assert.ok(child !== undefined);
    assert.notEqual(child.traceId, '4bf92f3577b34da6a3ce929d0e0e4736');
    for (const invalid of [
      '00-00000000000000000000000000000000-00f067aa0ba902b7-01',
      '00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01',
      '01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01',
      `${traceparent}-`,
    ]) {
      const fresh = parseTraceparent(childTraceparent(invalid));
      assert.ok(fresh !== undefined && fresh.flags === '01', invalid);
      assert.notEqual(fresh.traceId, invalid.slice(3, 35), invalid);
    }
  });

  test('childTraceparent keeps the trace id and flags and draws a new span id', () => {
    const unsampled = '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00';
    const child = parseTraceparent(childTraceparent(unsampled));
    assert.deepEqual(
      { traceId: child?.traceId, flags: child?.flags },
      { traceId: '4bf92f3577b34da6a3ce929d0e0e4736', flags: '00' },
    );
    assert.notEqual(child?.spanId, '00f067aa0ba902b7');
  });
});

describe('checkLoopGuards', () => {
  const limits = { maxHops: 10, maxRevisits: 2 };
  const event = (extra: Partial<MeshEventAttributes>): MeshEventAttributes => ({
    specversion: '1.0',
    id: 'e',
    source: 's',
    type: 't',
    ...extra,
  });

  test('passes within the limits', () => {
    assert.doesNotThrow(() => checkLoopGuards(event({}), limits));
    assert.doesNotThrow(() => checkLoopGuards(event({ hopcount: 10 }), limits));
    assert.doesNotThrow(() =>
      checkLoopGuards(event({ hopcount: 5, agent: 'a', agentpath: 'a,b,a' }), limits),
    );
  });

  test('hopcount over maxHops is hop_limit_exceeded', () => {
    assert.throws(
      () => checkLoopGuards(event({ hopcount: 11 }), limits),
      (error: unknown) =>
        isMeshError(error) &&
        error.code === 'hop_limit_exceeded' &&
        !error.retryable &&
        error.details?.hopcount === 11,
    );
  });

  test('an agent in agentpath more than maxRevisits times is cycle_detected', () => {
    assert.throws(
      () => checkLoopGuards(event({ agent: 'a', agentpath: 'a,b,a,c,a' }), limits),
      (error: unknown) =>
        isMeshError(error) &&
        error.code === 'cycle_detected' &&
        !error.retryable &&
        error.details?.visits === 3,
    );
  });

  test('the target agent may be given explicitly', () => {
    const e = event({ agent: 'a', agentpath: 'b,b,b' });
    assert.doesNotThrow(() => checkLoopGuards(e, limits));
    assert.throws(
      () => checkLoopGuards(e, limits, 'b'),
      (error: unknown) => isMeshError(error) && error.code === 'cycle_detected',
    );
  });

  test('with maxRevisits 0 a single earlier visit is a cycle', () => {
    assert.throws(
      () => checkLoopGuards(event({ agent: 'a', agentpath: 'a' }), { maxHops: 10, maxRevisits: 0 }),
      (error: unknown) => isMeshError(error) && error.code === 'cycle_detected',
    );
  });

  test('splitAgentPath ignores empty segments', () => {
    assert.deepEqual(splitAgentPath(undefined), []);
    assert.deepEqual(splitAgentPath(''), []);
    assert.deepEqual(splitAgentPath('a,,b,'), ['a', 'b']);
  });

  test('a derived agentpath drops empty segments; visits count whole names only', () => {
    for (const [path, visited, expected] of [
      [undefined, undefined, ''],
      ['', 'w', 'w'],
      ['a,b', 'w', 'a,b,w'],
      ['a,b', undefined, 'a,b'],
      [',a,,b,', 'w', 'a,b,w'],
      [',a,,b,', undefined, 'a,b'],
      [',', '', ''],
    ] as const) {
      assert.equal(extendAgentPath(path, visited), expected, `${path} + ${visited}`);
    }
    const limits = { maxHops: 10, maxRevisits: 1 };
    const event = (agentpath: string): MeshEventAttributes => ({
      specversion: '1.0',
      id: 'e',
      source: 's',
      type: 't',
      agentpath,
      agent: 'a',
    });
    // 'aa' and 'ab' are other agents than 'a'; an empty segment is no visit.
    checkLoopGuards(event('aa,a,ab,,'), limits);
    assert.throws(
      () => checkLoopGuards(event('a,aa,,a'), limits),
      (error: unknown) => isMeshError(error) && /visited 2 times/.test(error.message),
    );
  });
});
