/**
 * How a dead letter is remediated: the contract's table by failure class, and for `handler_error` a
 * rule table over the error detail (a JSON file, validated at start-up). Pure logic.
 */
import { readFileSync } from 'node:fs';
import { Ajv } from 'ajv';
import { MeshError, failureClasses, type FailureClass } from '@mesh/errors';

export const actions = [
  'retry',
  'retry-truncated',
  'retry-strict',
  'fallback',
  'escalate',
  'park',
] as const;
export type Action = (typeof actions)[number];

export interface Rule {
  name: string;
  /** Failure class the rule applies to; `handler_error` when absent. */
  failure?: FailureClass;
  /** Case-insensitive regular expression over `meshfailuredetail`. */
  match: string;
  action: Action;
}

/** The contract's default remediation of each failure class (docs/contract.md). */
export const defaultActions: Record<FailureClass, Action> = {
  rate_limited: 'retry',
  timeout: 'retry',
  context_overflow: 'retry-truncated',
  invalid_output: 'retry-strict',
  schema_violation: 'escalate',
  malformed_event: 'park',
  hop_limit_exceeded: 'escalate',
  cycle_detected: 'escalate',
  budget_exceeded: 'park',
  handler_error: 'fallback',
};

const rulesSchema = {
  type: 'object',
  additionalProperties: false,
  required: ['rules'],
  properties: {
    rules: {
      type: 'array',
      items: {
        type: 'object',
        additionalProperties: false,
        required: ['name', 'match', 'action'],
        properties: {
          name: { type: 'string', minLength: 1, maxLength: 200 },
          failure: { type: 'string', enum: [...failureClasses] },
          match: { type: 'string', minLength: 1, maxLength: 1000 },
          action: { type: 'string', enum: [...actions] },
        },
      },
    },
  },
} as const;
const validateRules = new Ajv({ strict: true }).compile<{ rules: Rule[] }>(rulesSchema);

export interface CompiledRule extends Rule {
  pattern: RegExp;
}

/** Parses a rules document. @throws MeshError `config_invalid` naming the fault. */
export function compileRules(document: unknown, origin = 'rules'): CompiledRule[] {
  if (!validateRules(document)) {
    const error = validateRules.errors?.[0];
    throw new MeshError(
      'config_invalid',
      `${origin}: ${error?.instancePath || '/'} ${error?.message ?? 'is invalid'}`,
    );
  }
  return document.rules.map((rule, index) => {
    try {
      return { ...rule, pattern: new RegExp(rule.match, 'i') };
    } catch (error) {
      throw new MeshError(
        'config_invalid',
        `${origin}: rule ${index} (${rule.name}) has an invalid pattern: ${(error as Error).message}`,
      );
    }
  });
}

export function loadRules(path: string | undefined): CompiledRule[] {
  if (path === undefined) return [];
  let document: unknown;
  try {
    document = JSON.parse(readFileSync(path, 'utf8'));
  } catch (error) {
    throw new MeshError('config_invalid', `rules file ${path}: ${(error as Error).message}`);
  }
  return compileRules(document, `rules file ${path}`);
}

export interface DecisionInput {
  failure: FailureClass;
  detail: string;
  /** Remediations already tried for this event. */
  remediations: number;
  maxRemediations: number;
  /** Set when a fallback model is configured. */
  fallbackModel?: string;
  /** The event is already on the fallback model. */
  onFallback: boolean;
  /** The event can be sent again (decodable, with an origin topic of the mesh). */
  retriable: boolean;
}

export interface Decision {
  action: Action;
  /** The rule that chose it, or `default`. */
  rule: string;
  reason: string;
}

/**
 * Chooses the remediation of a dead letter. Retries are bounded: once `maxRemediations` were tried
 * the event is escalated; an event that cannot be sent again is escalated or parked, never dropped.
 */
export function decide(input: DecisionInput, rules: readonly CompiledRule[]): Decision {
  const rule = rules.find(
    (r) => (r.failure ?? 'handler_error') === input.failure && r.pattern.test(input.detail),
  );
  const action = rule?.action ?? defaultActions[input.failure];
  const ruleName = rule?.name ?? 'default';
  const wantsRetry =
    action === 'retry' ||
    action === 'retry-truncated' ||
    action === 'retry-strict' ||
    action === 'fallback';
  if (action === 'fallback' && (input.fallbackModel === undefined || input.onFallback)) {
    return {
      action: 'escalate',
      rule: ruleName,
      reason: input.onFallback
        ? 'failed on the fallback model too'
        : 'no fallback model configured',
    };
  }
  if (wantsRetry && !input.retriable)
    return {
      action: 'escalate',
      rule: ruleName,
      reason: 'the event cannot be sent again (undecodable or no origin topic)',
    };
  if (wantsRetry && input.remediations >= input.maxRemediations) {
    return {
      action: 'escalate',
      rule: ruleName,
      reason: `${input.remediations} remediations tried, the limit is ${input.maxRemediations}`,
    };
  }
  return {
    action,
    rule: ruleName,
    reason: rule === undefined ? `default for ${input.failure}` : `rule ${rule.name}`,
  };
}
