/**
 * Events to and from Kafka records: the CloudEvents binding of `@mesh/envelope` with the data
 * encoded and validated by the registry contracts.
 */
import { terminal } from '@mesh/errors';
import {
  fromKafka,
  toKafka,
  type MeshEvent,
  type MeshEventAttributes,
  type OutgoingMessage,
  type WireMessage,
} from '@mesh/envelope';
import {
  notCached,
  type ContractRegistry,
  type DecodeOptions,
  type WireValue,
} from './registry.ts';

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
    return this.encodeNow(event);
  }

  /**
   * `encode` for the hot path: synchronous once the type's schema is cached (every event but the
   * first of its type), a promise only while the registry is asked. A fault of the event itself is
   * thrown, not rejected.
   */
  encodeNow(event: MeshEvent): OutgoingMessage | Promise<OutgoingMessage> {
    const cached = this.registry.encodeCached(event.type, event.data);
    if (cached === notCached)
      return this.registry
        .encode(event.type, event.data)
        .then((wire) => this.#message(event, wire));
    return this.#message(event, cached);
  }

  #message(event: MeshEvent, { value, schemaId }: WireValue): OutgoingMessage {
    event.dataschema = this.registry.dataschema(schemaId);
    return toKafka(event, value);
  }

  /**
   * Decodes a record into a validated event.
   *
   * @throws MeshError `malformed_event` or `schema_violation` (terminal: the record goes to
   *   `mesh.dlq`), or `registry_unavailable` (retryable: the record is tried again, never
   *   dead-lettered).
   */
  async decode(message: WireMessage, options: CodecDecodeOptions = {}): Promise<MeshEvent> {
    return this.decodeNow(message, options);
  }

  /**
   * `decode` for the hot path: synchronous once the schema of the data is cached (every event but
   * the first of its schema), a promise only while the registry is asked. A fault of the record is
   * thrown, not rejected.
   */
  decodeNow(
    message: WireMessage,
    options: CodecDecodeOptions = {},
  ): MeshEvent | Promise<MeshEvent> {
    const decoded = fromKafka(message, { maxBytes: this.maxBytes });
    const { attributes } = decoded;
    let value: Buffer;
    if (decoded.mode === 'structured') {
      if (options.intake !== true)
        throw terminal(
          'malformed_event',
          'structured-mode events are accepted on the intake topic only',
        );
      value = Buffer.from(JSON.stringify(decoded.data));
    } else {
      value = decoded.value ?? Buffer.alloc(0);
    }
    // Structured mode and the intake's binary mode with plain JSON: validated against the latest
    // schema of the type, so that clients without a registry can take part.
    const decodeOptions =
      decoded.mode === 'structured' || options.intake === true ? plainJsonToo : wireFormatOnly;
    const data = this.registry.decodeCached(attributes.type, value, decodeOptions);
    if (data === notCached)
      return this.registry
        .decode(attributes.type, value, decodeOptions)
        .then((loaded) => withData(attributes, loaded));
    return withData(attributes, data);
  }
}

const plainJsonToo: DecodeOptions = { acceptPlainJson: true };
const wireFormatOnly: DecodeOptions = {};

/** The decoded attributes become the event: they were made for it, so no copy is needed. */
function withData(attributes: MeshEventAttributes, data: unknown): MeshEvent {
  const event = attributes as MeshEvent;
  event.data = data;
  return event;
}
