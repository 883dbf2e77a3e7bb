/**
 * Lineage: how an event caused by another carries the task's identity and the causal chain forward,
 * and the loop guards that stop circular delegation.
 */
import { hash as digest, randomUUID } from 'node:crypto';
import { terminal } from '@mesh/errors';
import type { MeshEvent, MeshEventAttributes } from './event.ts';
import { childTraceparent, newTraceparent } from './trace.ts';
import { jsonContentType } from './kafka-binding.ts';

/**
 * A name-based UUID (RFC 9562 §5.5, version 5 layout over SHA-1) of `cause` and `discriminator`.
 * The same cause always yields the same child ids, so a redelivered event that is processed again
 * emits events with the same ids, and consumers that deduplicate by id see one event.
 */
export function deterministicId(cause: string, discriminator: string): string {
  // One-shot hashing straight to hex: no Hash object or Buffer per derived event.
  const hex = digest('sha1', `${cause}\u0000${discriminator}`, 'hex');
  // Version 5 in the high nibble of byte 6, the RFC 4122 variant (10xx) in the high bits of byte 8.
  const variant = ((parseInt(hex.charAt(16), 16) & 0x3) | 0x8).toString(16);
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-5${hex.slice(13, 16)}-${variant}${hex.slice(17, 20)}-${hex.slice(20, 32)}`;
}

let isoMs = Number.NaN;
let isoText = '';

/**
 * The current time as an RFC 3339 timestamp: the same text for every event of one millisecond,
 * formatted once (thousands of events a second share their milliseconds).
 */
export function nowIso(): string {
  const ms = Date.now();
  if (ms !== isoMs) {
    isoMs = ms;
    isoText = new Date(ms).toISOString();
  }
  return isoText;
}

export interface NewEventInit<D> {
  type: string;
  source: string;
  data: D;
  id?: string;
  /** The task id; defaults to the event id, as the contract says for requests. */
  correlationid?: string;
  agent?: string;
  extensions?: Record<string, string>;
}

/** A root event (a task request): hopcount 0, a new trace, the task id as key and subject. */
export function newEvent<D>(init: NewEventInit<D>): MeshEvent<D> {
  const id = init.id ?? randomUUID();
  const correlationid = init.correlationid ?? id;
  return {
    specversion: '1.0',
    id,
    source: init.source,
    type: init.type,
    time: nowIso(),
    subject: correlationid,
    datacontenttype: jsonContentType,
    correlationid,
    hopcount: 0,
    agentpath: '',
    traceparent: newTraceparent(),
    partitionkey: correlationid,
    ...(init.agent === undefined ? {} : { agent: init.agent }),
    ...(init.extensions === undefined ? {} : { extensions: init.extensions }),
    data: init.data,
  };
}

export interface DeriveInit<D> {
  type: string;
  source: string;
  data: D;
  /**
   * Distinguishes the children of one cause (e.g. the node id of a dispatched subtask). The child's
   * id is `deterministicId(cause.id, type + discriminator)` unless `id` is given.
   */
  discriminator?: string;
  id?: string;
  /** Target agent of an assigned subtask. */
  agent?: string;
  /** The agent that handled the cause and is appended to agentpath (the worker's own agent). */
  visited?: string;
  meshattempt?: number;
}

/**
 * The child event of `cause`: same correlationid (task id), causationid = cause.id, hopcount + 1,
 * agentpath extended by `visited`, a child span of the cause's traceparent, the task id as key.
 */
export function deriveEvent<D>(cause: MeshEventAttributes, init: DeriveInit<D>): MeshEvent<D> {
  const correlationid = cause.correlationid ?? cause.id;
  const event: MeshEvent<D> = {
    specversion: '1.0',
    id: init.id ?? deterministicId(cause.id, `${init.type}\u0000${init.discriminator ?? ''}`),
    source: init.source,
    type: init.type,
    time: nowIso(),
    subject: correlationid,
    datacontenttype: jsonContentType,
    correlationid,
    causationid: cause.id,
    hopcount: (cause.hopcount ?? 0) + 1,
    agentpath: extendAgentPath(cause.agentpath, init.visited),
    traceparent: childTraceparent(cause.traceparent),
    partitionkey: correlationid,
    data: init.data,
  };
  if (cause.tracestate !== undefined) event.tracestate = cause.tracestate;
  if (init.agent !== undefined) event.agent = init.agent;
  if (init.meshattempt !== undefined) event.meshattempt = init.meshattempt;
  return event;
}

export function splitAgentPath(agentpath: string | undefined): string[] {
  return agentpath === undefined || agentpath === '' ? [] : agentpath.split(',').filter(Boolean);
}

/** A path without empty segments, as `splitAgentPath(...).join(',')` writes it. */
function isCleanPath(agentpath: string): boolean {
  return (
    agentpath.charCodeAt(0) !== 44 &&
    agentpath.charCodeAt(agentpath.length - 1) !== 44 &&
    !agentpath.includes(',,')
  );
}

/** `agentpath` with `visited` appended (when given), empty segments dropped. */
export function extendAgentPath(agentpath: string | undefined, visited?: string): string {
  const path = agentpath ?? '';
  if (path === '' || isCleanPath(path)) {
    if (visited === undefined || visited === '') return path;
    return path === '' ? visited : `${path},${visited}`;
  }
  const segments = splitAgentPath(path);
  if (visited !== undefined && visited !== '') segments.push(visited);
  return segments.join(',');
}

/** How many segments of `agentpath` are exactly `agent`, without splitting it. */
function visitsOf(agentpath: string | undefined, agent: string): number {
  if (agentpath === undefined || agentpath === '' || agent === '') return 0;
  let visits = 0;
  for (let start = 0; start <= agentpath.length;) {
    const comma = agentpath.indexOf(',', start);
    const end = comma === -1 ? agentpath.length : comma;
    if (end - start === agent.length && agentpath.startsWith(agent, start)) visits += 1;
    if (comma === -1) break;
    start = comma + 1;
  }
  return visits;
}

export interface LoopGuardLimits {
  maxHops: number;
  maxRevisits: number;
}

/**
 * The loop guards of the contract, checked before a handler runs.
 *
 * @throws MeshError `hop_limit_exceeded` when hopcount is over `maxHops`, `cycle_detected` when the
 *   target agent already appears in agentpath more than `maxRevisits` times. Both are terminal.
 */
export function checkLoopGuards(
  event: MeshEventAttributes,
  limits: LoopGuardLimits,
  targetAgent = event.agent,
): void {
  const hops = event.hopcount ?? 0;
  if (hops > limits.maxHops) {
    throw terminal(
      'hop_limit_exceeded',
      `hopcount ${hops} is over the limit of ${limits.maxHops}`,
      {
        details: { hopcount: hops, maxHops: limits.maxHops },
      },
    );
  }
  if (targetAgent === undefined) return;
  const visits = visitsOf(event.agentpath, targetAgent);
  if (visits > limits.maxRevisits) {
    throw terminal(
      'cycle_detected',
      `agent ${targetAgent} already visited ${visits} times in this chain (limit ${limits.maxRevisits})`,
      {
        details: { agent: targetAgent, visits, maxRevisits: limits.maxRevisits },
      },
    );
  }
}
