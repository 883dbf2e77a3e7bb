/**
 * Events to and from Kafka records: the CloudEvents binding of `@mesh/envelope` with the data
 * encoded and validated by the registry contracts.
 */
import { terminal } from '@mesh/errors';
import {
  fromKafka,
  toKafka,
  type MeshEvent,
  type OutgoingMessage,
  type WireMessage,
} from '@mesh/envelope';
import type { ContractRegistry } from './registry.ts';

export interface CodecDecodeOptions {
  /**
   * An intake topic (`mesh.requests`) also accepts structured mode and binary mode with a plain JSON
   * value, both validated against the latest registered schema of the type, so that clients without
   * a schema registry (kcat, a script) can take part.
   */
  intake?: boolean;
}

export class EventCodec {
  readonly registry: ContractRegistry;
  readonly maxBytes: number;

  constructor(registry: ContractRegistry, options: { maxBytes: number }) {
    this.registry = registry;
    this.maxBytes = options.maxBytes;
  }

  /**
   * Encodes an event in binary mode with its data in the Confluent wire format; sets `dataschema`.
   *
   * @throws MeshError `schema_violation` when the data breaks its contract (a bug in the producer:
   *   the event is not published), `registry_unavailable` (retryable).
   */
  async encode(event: MeshEvent): Promise<OutgoingMessage> {
    const { value, schemaId } = await this.registry.encode(event.type, event.data);
    event.dataschema = this.registry.dataschema(schemaId);
    return toKafka(event, value);
  }

  /**
   * Decodes a record into a validated event.
   *
   * @throws MeshError `malformed_event` or `schema_violation` (terminal: the record goes to
   *   `mesh.dlq`), or `registry_unavailable` (retryable: the record is tried again, never dead-lettered).
   */
  async decode(message: WireMessage, options: CodecDecodeOptions = {}): Promise<MeshEvent> {
    const decoded = fromKafka(message, { maxBytes: this.maxBytes });
    if (decoded.mode === 'structured') {
      if (options.intake !== true)
        throw terminal(
          'malformed_event',
          'structured-mode events are accepted on the intake topic only',
        );
      const value = Buffer.from(JSON.stringify(decoded.data));
      const data = await this.registry.decode(decoded.attributes.type, value, {
        acceptPlainJson: true,
      });
      return { ...decoded.attributes, data };
    }
    const data = await this.registry.decode(
      decoded.attributes.type,
      decoded.value ?? Buffer.alloc(0),
      {
        acceptPlainJson: options.intake === true,
      },
    );
    return { ...decoded.attributes, data };
  }
}
