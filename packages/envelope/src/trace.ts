/**
 * W3C Trace Context (https://www.w3.org/TR/trace-context/ §3.2 "traceparent"), carried on every event
 * as the CloudEvents distributed-tracing extension.
 */
import { randomFillSync } from 'node:crypto';

const traceparentPattern = /^00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$/;
const zeroTraceId = '0'.repeat(32);
const zeroSpanId = '0'.repeat(16);

/**
 * A version-00 traceparent with ids that are not all zero (§3.2.2.3), checked in place: no match
 * array or id strings. The trace id is at 3-35, the span id at 36-52, the flags at 53.
 */
function isValidTraceparent(value: string | undefined): value is string {
  return (
    value !== undefined &&
    traceparentPattern.test(value) &&
    !value.startsWith(zeroTraceId, 3) &&
    !value.startsWith(zeroSpanId, 36)
  );
}

export interface TraceContext {
  traceId: string;
  spanId: string;
  flags: string;
}

/** Parses a version-00 traceparent; an invalid one (or all-zero ids, §3.2.2.3) yields undefined. */
export function parseTraceparent(value: string | undefined): TraceContext | undefined {
  if (!isValidTraceparent(value)) return undefined;
  return { traceId: value.slice(3, 35), spanId: value.slice(36, 52), flags: value.slice(53) };
}

export function formatTraceparent(context: TraceContext): string {
  return `00-${context.traceId}-${context.spanId}-${context.flags}`;
}

/**
 * Random ids are cut from a pool filled 4 KiB at a time: every derived event needs a span id, and a
 * `randomBytes` call per id (a synchronous trip into OpenSSL) was a measurable share of the runtime's
 * CPU. The pool is the same CSPRNG output, used once.
 */
const pool = Buffer.allocUnsafe(4096);
let poolOffset = pool.length;

/** `bytes` random bytes as lower-case hex. */
export function randomHex(bytes: number): string {
  if (poolOffset + bytes > pool.length) {
    randomFillSync(pool);
    poolOffset = 0;
  }
  const hex = pool.toString('hex', poolOffset, poolOffset + bytes);
  poolOffset += bytes;
  return hex;
}

/** A new root span (sampled). */
export function newTraceparent(): string {
  return formatTraceparent({ traceId: randomHex(16), spanId: randomHex(8), flags: '01' });
}

/** A child span of `parent`: same trace id and flags, new span id; a new root when parent is absent or invalid. */
export function childTraceparent(parent: string | undefined): string {
  if (!isValidTraceparent(parent)) return newTraceparent();
  return `${parent.slice(0, 36)}${randomHex(8)}${parent.slice(52)}`;
}
