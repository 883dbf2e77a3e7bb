/**
 * W3C Trace Context (https://www.w3.org/TR/trace-context/ §3.2 "traceparent"), carried on every event
 * as the CloudEvents distributed-tracing extension.
 */
import { randomBytes } from 'node:crypto';

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

/** A new root span (sampled). */
export function newTraceparent(): string {
  return formatTraceparent({
    traceId: randomBytes(16).toString('hex'),
    spanId: randomBytes(8).toString('hex'),
    flags: '01',
  });
}

/** A child span of `parent`: same trace id and flags, new span id; a new root when parent is absent or invalid. */
export function childTraceparent(parent: string | undefined): string {
  const context = parseTraceparent(parent);
  if (context === undefined) return newTraceparent();
  return formatTraceparent({ ...context, spanId: randomBytes(8).toString('hex') });
}
