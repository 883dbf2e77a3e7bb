/**
 * W3C Trace Context (https://www.w3.org/TR/trace-context/ §3.2 "traceparent"), carried on every event
 * as the CloudEvents distributed-tracing extension.
 */
import { randomFillSync } from 'node:crypto';

const traceparentPattern = /^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$/;

export interface TraceContext {
  traceId: string;
  spanId: string;
  flags: string;
}

/** Parses a version-00 traceparent; an invalid one (or all-zero ids, §3.2.2.3) yields undefined. */
export function parseTraceparent(value: string | undefined): TraceContext | undefined {
  const match = value === undefined ? null : traceparentPattern.exec(value);
  if (match === null) return undefined;
  const [, traceId = '', spanId = '', flags = '00'] = match;
  if (/^0+$/.test(traceId) || /^0+$/.test(spanId)) return undefined;
  return { traceId, spanId, flags };
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

const zeroTraceId = '0'.repeat(32);
const zeroSpanId = '0'.repeat(16);

/** A child span of `parent`: same trace id and flags, new span id; a new root when parent is absent or invalid. */
export function childTraceparent(parent: string | undefined): string {
  // Checked in place (no match array or id strings): the parent's trace id and flags are kept.
  if (
    parent === undefined ||
    !traceparentPattern.test(parent) ||
    parent.startsWith(zeroTraceId, 3) ||
    parent.startsWith(zeroSpanId, 36)
  )
    return newTraceparent();
  return `${parent.slice(0, 36)}${randomHex(8)}${parent.slice(52)}`;
}
