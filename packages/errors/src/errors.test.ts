// node:test's test() and describe() return promises the runner itself awaits.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import {
  certificateFault,
  MeshError,
  failureClassOf,
  failureClasses,
  infraCodes,
  isFailureClass,
  isMeshError,
  retryable,
  safeDetail,
  terminal,
  toMeshError,
  type ErrorCode,
} from './index.ts';

describe('MeshError', () => {
  test('carries its code, message, cause and options', () => {
    const cause = new Error('socket hang up');
    const error = new MeshError('rate_limited', 'provider said 429', {
      cause,
      retryAfterMs: 1_500,
      details: { provider: 'x' },
    });
    assert.equal(error.code, 'rate_limited');
    assert.equal(error.message, 'provider said 429');
    assert.equal(error.name, 'MeshError');
    assert.equal(error.cause, cause);
    assert.equal(error.retryAfterMs, 1_500);
    assert.deepEqual(error.details, { provider: 'x' });
    assert.ok(error instanceof Error);
  });

  test('has no cause property when none is given', () => {
    const error = new MeshError('timeout', 'slow');
    assert.equal(Object.hasOwn(error, 'cause'), false);
    assert.equal(error.retryAfterMs, undefined);
    assert.equal(error.details, undefined);
  });

  test('retryable defaults follow the contract', () => {
    const expected: Record<ErrorCode, boolean> = {
      rate_limited: true,
      timeout: true,
      context_overflow: true,
      invalid_output: true,
      schema_violation: false,
      malformed_event: false,
      hop_limit_exceeded: false,
      cycle_detected: false,
      budget_exceeded: false,
      handler_error: true,
      config_invalid: false,
      schema_incompatible: false,
      registry_unavailable: true,
      kafka_unavailable: true,
      redis_unavailable: true,
      not_found: false,
      conflict: false,
      unauthorized: false,
      bad_request: false,
    };
    for (const code of [...failureClasses, ...infraCodes]) {
      assert.equal(new MeshError(code, 'x').retryable, expected[code], code);
    }
  });

  test('an explicit retryable option overrides the default', () => {
    assert.equal(new MeshError('handler_error', 'x', { retryable: false }).retryable, false);
    assert.equal(new MeshError('malformed_event', 'x', { retryable: true }).retryable, true);
  });

  test('terminal() and retryable() force the flag whatever the code', () => {
    const t = terminal('timeout', 'gave up', { retryAfterMs: 10 });
    assert.equal(t.code, 'timeout');
    assert.equal(t.retryable, false);
    assert.equal(t.retryAfterMs, 10);
    const r = retryable('schema_violation', 'try again');
    assert.equal(r.code, 'schema_violation');
    assert.equal(r.retryable, true);
  });

  test('statusCode maps codes to HTTP statuses', () => {
    assert.equal(new MeshError('not_found', 'x').statusCode, 404);
    assert.equal(new MeshError('unauthorized', 'x').statusCode, 401);
    assert.equal(new MeshError('conflict', 'x').statusCode, 409);
    assert.equal(new MeshError('rate_limited', 'x').statusCode, 429);
    assert.equal(new MeshError('bad_request', 'x').statusCode, 400);
    assert.equal(new MeshError('kafka_unavailable', 'x').statusCode, 503);
    assert.equal(new MeshError('handler_error', 'x').statusCode, 500);
  });

  test('failure classes and infra codes do not overlap', () => {
    const overlap = failureClasses.filter((code) =>
      (infraCodes as readonly string[]).includes(code),
    );
    assert.deepEqual(overlap, []);
  });
});

describe('isMeshError and instanceof', () => {
  const brand = Symbol.for('@mesh/errors.MeshError');

  test('recognises a MeshError', () => {
    const error = new MeshError('conflict', 'x');
    assert.equal(isMeshError(error), true);
    assert.ok(error instanceof MeshError);
  });

  test('recognises any object carrying the brand, as from another copy of the package', () => {
    const foreign = { [brand]: true, code: 'timeout', message: 'x' };
    assert.equal(isMeshError(foreign), true);
    assert.ok((foreign as unknown) instanceof MeshError);
  });

  test('rejects plain errors, a brand that is not exactly true, and non-objects', () => {
    for (const value of [
      new Error('x'),
      { code: 'timeout', message: 'x' },
      { [brand]: 'yes' },
      { [Symbol('@mesh/errors.MeshError')]: true },
      null,
      undefined,
      'handler_error',
      42,
    ]) {
      assert.equal(isMeshError(value), false, typeof value);
      assert.equal(value instanceof MeshError, false);
    }
  });

  test('the brand is not enumerable, so it does not leak into JSON or spreads', () => {
    const error = new MeshError('timeout', 'x');
    assert.equal(Object.getOwnPropertySymbols(error).includes(brand), true);
    assert.equal(Object.prototype.propertyIsEnumerable.call(error, brand), false);
    assert.equal(isMeshError({ ...error }), false);
  });
});

describe('toMeshError', () => {
  test('returns a MeshError unchanged', () => {
    const error = terminal('budget_exceeded', 'spent');
    assert.equal(toMeshError(error), error);
  });

  test('wraps an Error as a retryable handler_error keeping message and cause', () => {
    const original = new TypeError('undefined is not a function');
    const error = toMeshError(original);
    assert.equal(error.code, 'handler_error');
    assert.equal(error.retryable, true);
    assert.equal(error.message, 'undefined is not a function');
    assert.equal(error.cause, original);
  });

  test('wraps a thrown string as its message', () => {
    const error = toMeshError('boom');
    assert.equal(error.code, 'handler_error');
    assert.equal(error.message, 'boom');
    assert.equal(error.cause, 'boom');
  });

  test('never uses the payload of a non-error value as message', () => {
    const error = toMeshError({ secret: 'payload' });
    assert.equal(error.code, 'handler_error');
    assert.equal(error.message, 'non-error thrown');
  });
});

describe('failureClassOf', () => {
  test('keeps failure classes as they are', () => {
    for (const code of failureClasses) {
      assert.equal(failureClassOf(new MeshError(code, 'x')), code);
    }
  });

  test('maps every infrastructure code to handler_error', () => {
    for (const code of infraCodes) {
      assert.equal(failureClassOf(new MeshError(code, 'x')), 'handler_error', code);
    }
  });

  test('isFailureClass accepts only the contract classes', () => {
    assert.equal(isFailureClass('cycle_detected'), true);
    assert.equal(isFailureClass('config_invalid'), false);
    assert.equal(isFailureClass('Timeout'), false);
    assert.equal(isFailureClass(undefined), false);
  });
});

describe('safeDetail', () => {
  test('masks the password in a URL but keeps host and scheme', () => {
    const text = safeDetail(new Error('connect failed to redis://:hunter2@cache:6379/0'));
    assert.equal(text, 'Error: connect failed to redis://:***@cache:6379/0');
  });

  test('masks user:password in a URL', () => {
    const text = safeDetail('GET https://alice:s3cr3t@registry.local/subjects');
    assert.equal(text.includes('s3cr3t'), false);
    assert.match(text, /https:\/\/alice:\*\*\*@registry\.local\/subjects/);
  });

  test('masks bearer tokens', () => {
    const text = safeDetail('sent Authorization header Bearer xyz.abc-123');
    assert.equal(text.includes('xyz'), false);
    assert.match(text, /Bearer \*\*\*/);
  });

  test('masks password=, api_key: and similar pairs', () => {
    const text = safeDetail('login password=hunter2 and api_key: abc123 and token="t0k" user=bob');
    for (const secret of ['hunter2', 'abc123', 't0k'])
      assert.equal(text.includes(secret), false, secret);
    assert.match(text, /password=\*\*\*/);
    assert.match(text, /api_key: \*\*\*/);
    assert.match(text, /user=bob/);
  });

  test('masks sk- style API keys', () => {
    const text = safeDetail('OpenAI rejected key sk-proj-AbCdEf1234567890 for model x');
    assert.equal(text.includes('AbCdEf1234567890'), false);
    assert.equal(text, 'OpenAI rejected key *** for model x');
  });

  test('leaves short sk- words alone', () => {
    assert.equal(safeDetail('task-sk-1 failed'), 'task-sk-1 failed');
  });

  test('prefixes a MeshError with its code and an Error with its name', () => {
    assert.equal(safeDetail(new MeshError('timeout', 'model took 31s')), 'timeout: model took 31s');
    assert.equal(safeDetail(new RangeError('bad')), 'RangeError: bad');
    assert.equal(safeDetail(42), '42');
  });

  test('folds newlines and runs of whitespace into single spaces', () => {
    assert.equal(
      safeDetail('  line one\n\tline two\r\n\nline three  '),
      'line one line two line three',
    );
  });

  test('truncates long text to maxLength with an ellipsis', () => {
    const text = safeDetail('a'.repeat(2_000));
    assert.equal(text.length, 512);
    assert.ok(text.endsWith('…'));
    const short = safeDetail('b'.repeat(50), 20);
    assert.equal(short, `${'b'.repeat(19)}…`);
    assert.equal(safeDetail('c'.repeat(20), 20), 'c'.repeat(20));
  });
});

describe('certificateFault', () => {
  const variables = { ca: 'MESH_X_CA_FILE', address: 'MESH_X_URL' };
  const tlsError = (code: string, message: string): Error =>
    Object.assign(new Error(message), { code });

  test('an untrusted or expired certificate names the CA variable', () => {
    for (const code of [
      'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
      'SELF_SIGNED_CERT_IN_CHAIN',
      'DEPTH_ZERO_SELF_SIGNED_CERT',
      'CERT_HAS_EXPIRED',
    ])
      assert.equal(
        certificateFault(
          tlsError(code, 'Connection error: bad cert'),
          'the server at h:1',
          variables,
        ),
        'MESH_X_CA_FILE must name the CA that signed the certificate of the server at h:1: bad cert',
      );
  });

  test('a certificate for another name names the address variable', () => {
    assert.match(
      certificateFault(tlsError('ERR_TLS_CERT_ALTNAME_INVALID', 'altnames'), 'Redis', variables) ??
        '',
      /^MESH_X_URL must use a name in the certificate of Redis: altnames$/,
    );
  });

  test('anything else is no certificate fault', () => {
    assert.equal(
      certificateFault(tlsError('ECONNREFUSED', 'refused'), 'Redis', variables),
      undefined,
    );
    assert.equal(certificateFault(new Error('no code'), 'Redis', variables), undefined);
    assert.equal(certificateFault('a string', 'Redis', variables), undefined);
  });
});
