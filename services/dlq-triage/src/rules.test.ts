import { test } from 'node:test';
import assert from 'node:assert/strict';
import { failureClasses } from '@mesh/errors';
import { compileRules, decide, defaultActions, type DecisionInput } from './rules.ts';

const base: DecisionInput = {
  failure: 'handler_error',
  detail: 'boom',
  remediations: 0,
  maxRemediations: 2,
  onFallback: false,
  retriable: true,
};

test('every failure class has the remediation of the contract', () => {
  assert.deepEqual(Object.keys(defaultActions).sort(), [...failureClasses].sort());
  const expected = {
    rate_limited: 'retry',
    timeout: 'retry',
    context_overflow: 'retry-truncated',
    invalid_output: 'retry-strict',
    schema_violation: 'escalate',
    malformed_event: 'park',
    hop_limit_exceeded: 'escalate',
    cycle_detected: 'escalate',
    budget_exceeded: 'park',
  } as const;
  for (const [failure, action] of Object.entries(expected)) {
    assert.equal(
      decide({ ...base, failure: failure as DecisionInput['failure'] }, []).action,
      action,
      failure,
    );
  }
});

test('handler_error goes to the fallback model once, then escalates', () => {
  assert.equal(decide(base, []).action, 'escalate', 'no fallback configured');
  assert.equal(decide({ ...base, fallbackModel: 'small' }, []).action, 'fallback');
  const again = decide({ ...base, fallbackModel: 'small', onFallback: true }, []);
  assert.equal(again.action, 'escalate');
  assert.match(again.reason, /fallback model too/);
});

test('remediations are bounded and an event that cannot be resent is escalated', () => {
  const exhausted = decide({ ...base, failure: 'timeout', remediations: 2 }, []);
  assert.equal(exhausted.action, 'escalate');
  assert.match(exhausted.reason, /2 remediations tried/);
  assert.equal(decide({ ...base, failure: 'timeout', retriable: false }, []).action, 'escalate');
});

test('the rule table routes handler_error by detail, case-insensitively, first match wins', () => {
  const rules = compileRules({
    rules: [
      { name: 'overloaded', match: 'overloaded|503', action: 'retry' },
      { name: 'bad key', match: 'invalid api key', action: 'escalate' },
      { name: 'schema park', failure: 'schema_violation', match: '.*', action: 'park' },
    ],
  });
  assert.deepEqual(decide({ ...base, detail: 'Upstream OVERLOADED' }, rules), {
    action: 'retry',
    rule: 'overloaded',
    reason: 'rule overloaded',
  });
  assert.equal(decide({ ...base, detail: 'Invalid API key' }, rules).action, 'escalate');
  assert.equal(decide({ ...base, failure: 'schema_violation' }, rules).action, 'park');
  assert.equal(
    decide({ ...base, detail: 'something else', fallbackModel: 'm' }, rules).rule,
    'default',
  );
});

test('a bad rules document is refused naming the fault', () => {
  assert.throws(
    () => compileRules({ rules: [{ name: 'x', match: 'a', action: 'explode' }] }),
    /\/rules\/0\/action must be equal to one of the allowed values/,
  );
  assert.throws(
    () => compileRules({ rules: [{ name: 'x', match: '(', action: 'retry' }] }),
    /rule 0 \(x\) has an invalid pattern/,
  );
  assert.throws(() => compileRules({ nope: [] }), /must have required property 'rules'/);
});
