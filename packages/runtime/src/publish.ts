/**
 * Publishing events: encoded with their contracts, written by the producer, counted once Kafka
 * acknowledged them. The one way the runtime and its handlers' outputs reach Kafka.
 */
import type { EventCodec } from '@mesh/contracts';
import type { MeshEvent, OutgoingMessage } from '@mesh/envelope';
import type { MeshProducer, OutgoingRecord, SendOptions } from '@mesh/kafka';
import type { MeshMetrics } from '@mesh/telemetry';

export interface Emit {
  topic: string;
  event: MeshEvent;
}

export interface PublishDeps {
  codec: EventCodec;
  producer: MeshProducer;
  metrics: MeshMetrics;
  /** The `service` label of `mesh_events_produced_total`. */
  service: string;
}

/**
 * Encodes the events and resolves once Kafka acknowledged all of them (acks=all). Encoding is
 * synchronous once the registry's answers are cached, so the common case awaits the producer
 * alone.
 * @throws MeshError `schema_violation` (terminal, thrown rather than rejected when the schema was
 *   cached) for an event its contract refuses, and nothing is sent; rejects with
 *   `kafka_unavailable` or `registry_unavailable` (retryable).
 */
export function publishEvents(
  deps: PublishDeps,
  emits: readonly Emit[],
  options?: SendOptions,
): Promise<void> {
  if (emits.length === 0) return Promise.resolve();
  const records: OutgoingRecord[] = [];
  for (const { topic, event } of emits) {
    const encoding = deps.codec.encodeNow(event);
    if (encoding instanceof Promise)
      return publishAfterLookup(deps, emits, records, encoding, options);
    records.push(recordOf(topic, encoding));
  }
  return deps.producer.send(records, options).then(() => countProduced(deps, emits));
}

/** `publishEvents` on from the first event whose schema is being fetched (`encoding`). */
async function publishAfterLookup(
  deps: PublishDeps,
  emits: readonly Emit[],
  records: OutgoingRecord[],
  encoding: Promise<OutgoingMessage>,
  options: SendOptions | undefined,
): Promise<void> {
  const first = records.length;
  for (let i = first; i < emits.length; i += 1) {
    const { topic, event } = emits[i] as Emit;
    records.push(recordOf(topic, await (i === first ? encoding : deps.codec.encodeNow(event))));
  }
  await deps.producer.send(records, options);
  countProduced(deps, emits);
}

function recordOf(topic: string, message: OutgoingMessage): OutgoingRecord {
  return { topic, key: message.key, value: message.value, headers: message.headers };
}

function countProduced(deps: PublishDeps, emits: readonly Emit[]): void {
  for (const { topic, event } of emits) deps.metrics.countProduced(deps.service, topic, event.type);
}
