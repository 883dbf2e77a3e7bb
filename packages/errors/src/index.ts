/**
 * The error taxonomy of the mesh.
 *
 * Every error the mesh raises carries a stable `code`, whether it may be retried, an optional
 * `retryAfterMs` and its `cause`. The failure classes of the wire contract (`meshfailure`) are a
 * subset of these codes and map one-to-one onto them, so dead-letter routing and triage switch on
 * `code`, never on message text.
 *
 * Errors are recognised by a `Symbol.for` brand rather than `instanceof`, so an error thrown by one
 * copy of this package is still recognised by another (the same reason Temporal uses
 * `SymbolBasedInstanceOfError`).
 */

/** The failure classes of the contract (`meshfailure` on `mesh.dlq` and the retry tiers). */
export const failureClasses = [
  'rate_limited',
  'timeout',
  'context_overflow',
  'invalid_output',
  'schema_violation',
  'malformed_event',
  'hop_limit_exceeded',
  'cycle_detected',
  'budget_exceeded',
  'handler_error',
] as const;
export type FailureClass = (typeof failureClasses)[number];

/** Codes that are not failure classes of an event: configuration and infrastructure faults. */
export const infraCodes = [
  'config_invalid',
  'schema_incompatible',
  'registry_unavailable',
  'kafka_unavailable',
  'redis_unavailable',
  'not_found',
  'conflict',
  'unauthorized',
  'bad_request',
] as const;
export type InfraCode = (typeof infraCodes)[number];

export type ErrorCode = FailureClass | InfraCode;

/** Whether an error of this code may succeed when tried again, by default. */
const retryableByDefault: Record<ErrorCode, boolean> = {
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

/** The HTTP status an error of this code answers with (fastify's error catalogue does the same). */
const httpStatusOf: Record<ErrorCode, number> = {
  rate_limited: 429,
  timeout: 504,
  context_overflow: 422,
  invalid_output: 502,
  schema_violation: 400,
  malformed_event: 400,
  hop_limit_exceeded: 422,
  cycle_detected: 422,
  budget_exceeded: 422,
  handler_error: 500,
  config_invalid: 500,
  schema_incompatible: 409,
  registry_unavailable: 503,
  kafka_unavailable: 503,
  redis_unavailable: 503,
  not_found: 404,
  conflict: 409,
  unauthorized: 401,
  bad_request: 400,
};

const brand = Symbol.for('@mesh/errors.MeshError');

export interface MeshErrorOptions {
  cause?: unknown;
  /** Overrides the code's default. */
  retryable?: boolean;
  /** The earliest a retry may succeed, e.g. from a provider's Retry-After. */
  retryAfterMs?: number;
  /** Extra machine-readable facts; never secrets or payloads. */
  details?: Record<string, unknown>;
}

export class MeshError extends Error {
  readonly code: ErrorCode;
  readonly retryable: boolean;
  readonly retryAfterMs: number | undefined;
  readonly details: Record<string, unknown> | undefined;

  constructor(code: ErrorCode, message: string, options: MeshErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'MeshError';
    this.code = code;
    this.retryable = options.retryable ?? retryableByDefault[code];
    this.retryAfterMs = options.retryAfterMs;
    this.details = options.details;
    Object.defineProperty(this, brand, { value: true });
  }

  get statusCode(): number {
    return httpStatusOf[this.code];
  }

  /** True for any MeshError, from any copy of this package. */
  static override [Symbol.hasInstance](value: unknown): boolean {
    return isMeshError(value);
  }
}

/** Brand check that holds across package copies and realms. */
export function isMeshError(value: unknown): value is MeshError {
  return (
    typeof value === 'object' &&
    value !== null &&
    (value as Record<symbol, unknown>)[brand] === true
  );
}

/** A failure that must not be retried: it goes straight to `mesh.dlq` (Restate's TerminalError). */
export function terminal(
  code: ErrorCode,
  message: string,
  options: Omit<MeshErrorOptions, 'retryable'> = {},
): MeshError {
  return new MeshError(code, message, { ...options, retryable: false });
}

/** A failure that may succeed later, optionally no earlier than `retryAfterMs` from now. */
export function retryable(
  code: ErrorCode,
  message: string,
  options: Omit<MeshErrorOptions, 'retryable'> = {},
): MeshError {
  return new MeshError(code, message, { ...options, retryable: true });
}

export function isFailureClass(value: unknown): value is FailureClass {
  return typeof value === 'string' && (failureClasses as readonly string[]).includes(value);
}

/**
 * Turns anything thrown into a MeshError. A MeshError is returned as it is; anything else becomes a
 * retryable `handler_error` whose message is the thrown error's message (never its payload).
 */
export function toMeshError(value: unknown): MeshError {
  if (isMeshError(value)) return value;
  const message =
    value instanceof Error ? value.message : typeof value === 'string' ? value : 'non-error thrown';
  return new MeshError('handler_error', message, { cause: value });
}

/** The failure class an error is recorded under on `mesh.dlq`; infrastructure codes count as `handler_error`. */
export function failureClassOf(error: MeshError): FailureClass {
  return isFailureClass(error.code) ? error.code : 'handler_error';
}

const secretPatterns: RegExp[] = [
  /(bearer\s+)[A-Za-z0-9._~+/=-]+/gi,
  /((?:password|passwd|pwd|secret|token|api[_-]?key|authorization)["']?\s*[:=]\s*["']?)[^\s"',;&]+/gi,
  /(\w+:\/\/[^:/@\s]*:)[^@\s]+(@)/g,
  /\bsk-[A-Za-z0-9_-]{8,}/g,
];

const knownSecrets = new Set<string>();

/**
 * Registers a secret value (an API key, a password) so that `safeDetail` masks it wherever it
 * appears, also bare — a provider may quote a key back in an error. The config loader registers every
 * secret-kind variable. Values shorter than 6 characters are not registered (they would mask words).
 */
export function registerSecret(value: string): void {
  if (value.length >= 6) knownSecrets.add(value);
}

/**
 * A one-line, bounded description of an error that is safe to put in `meshfailuredetail` or a log:
 * credentials in URLs, bearer tokens and `password=`-style pairs are masked, newlines are folded.
 */
export function safeDetail(value: unknown, maxLength = 512): string {
  let text = isMeshError(value)
    ? `${value.code}: ${value.message}`
    : value instanceof Error
      ? `${value.name}: ${value.message}`
      : String(value);
  for (const pattern of secretPatterns) {
    text = text.replace(pattern, (_match, ...groups: unknown[]) => {
      const prefix = typeof groups[0] === 'string' ? groups[0] : '';
      const suffix = typeof groups[1] === 'string' && groups[1] === '@' ? '@' : '';
      return `${prefix}***${suffix}`;
    });
  }
  for (const secret of knownSecrets) text = text.split(secret).join('***');
  text = text.replace(/\s+/g, ' ').trim();
  return text.length > maxLength ? `${text.slice(0, maxLength - 1)}…` : text;
}

/**
 * What a failed TLS connection says about the settings, as one line naming the variable to fix, or
 * undefined when it is no certificate fault. Node's codes (OpenSSL's verify results): a certificate
 * the client does not trust (unknown CA, expired) names `variables.ca`; one for another host name
 * names `variables.address`. Neither passes by waiting: a settings fault, never an outage.
 */
export function certificateFault(
  error: unknown,
  server: string,
  variables: { ca: string; address: string },
): string | undefined {
  if (!(error instanceof Error)) return undefined;
  const code = 'code' in error ? error.code : undefined;
  const reason = error.message.replace(/^Connection error: /, '');
  if (typeof code !== 'string') return undefined;
  if (/^(UNABLE_TO_|SELF_SIGNED_CERT|DEPTH_ZERO_SELF_SIGNED_CERT|CERT_)/.test(code))
    return `${variables.ca} must name the CA that signed the certificate of ${server}: ${reason}`;
  if (code === 'ERR_TLS_CERT_ALTNAME_INVALID')
    return `${variables.address} must use a name in the certificate of ${server}: ${reason}`;
  return undefined;
}
