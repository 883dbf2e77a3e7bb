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
  // One-shot hashing: no Hash object per derived event.
  const hash = digest('sha1', `${cause}\u0000${discriminator}`, 'buffer');
  hash[6] = ((hash[6] ?? 0) & 0x0f) | 0x50;
  hash[8] = ((hash[8] ?? 0) & 0x3f) | 0x80;
  const hex = hash.subarray(0, 16).toString('hex');
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20, 32)}`;
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
    time: new Date().toISOString(),
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
  const path = splitAgentPath(cause.agentpath);
  if (init.visited !== undefined && init.visited !== '') path.push(init.visited);
  const event: MeshEvent<D> = {
    specversion: '1.0',
    id: init.id ?? deterministicId(cause.id, `${init.type}\u0000${init.discriminator ?? ''}`),
    source: init.source,
    type: init.type,
    time: new Date().toISOString(),
    subject: correlationid,
    datacontenttype: jsonContentType,
    correlationid,
    causationid: cause.id,
    hopcount: (cause.hopcount ?? 0) + 1,
    agentpath: path.join(','),
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
  const visits = splitAgentPath(event.agentpath).filter((agent) => agent === targetAgent).length;
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
