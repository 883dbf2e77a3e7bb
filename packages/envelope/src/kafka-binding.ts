/**
 * The CloudEvents Kafka protocol binding (cloudevents/spec `kafka-protocol-binding.md`, v1.0),
 * modelled on cloudevents/sdk-javascript `src/message/kafka/index.ts`.
 *
 * The mesh produces binary mode (§3.2): every attribute is a `ce_<name>` header, `datacontenttype`
 * is the `content-type` header, the Kafka key is the `partitionkey` extension (§3.1 "Key Mapping"),
 * and the value is the event data, here already encoded by `@mesh/contracts` in the Confluent wire
 * format. On intake it also reads structured mode (§3.3): `content-type:
 * application/cloudevents+json` and the whole event as JSON in the value.
 */
import { isMeshError, terminal } from '@mesh/errors';
import {
  attributeKind,
  integerExtensions,
  knownAttributeNames,
  parseAttributes,
  readAttribute,
  requiredFault,
  stringAttributes,
  timestampAttributes,
  type AttributeKind,
  type MeshEventAttributes,
} from './event.ts';

/** A Kafka record as the mesh's Kafka package hands it over (kafkajs-compatible, no kafkajs import). */
export interface WireMessage {
  key: Buffer | string | null;
  value: Buffer | null;
  headers: Record<string, Buffer | string | (Buffer | string)[] | undefined>;
  timestamp?: string;
}

/** A message to produce. */
export interface OutgoingMessage {
  key: string | null;
  value: Buffer;
  headers: Record<string, string>;
}

export const headerPrefix = 'ce_';
export const structuredContentType = 'application/cloudevents+json';
export const jsonContentType = 'application/json';

/**
 * Binary-mode message for an event whose data is already encoded. The Kafka key is `partitionkey`
 * when set, else the `correlationid` (one task's events stay ordered), else null.
 */
export function toKafka(event: MeshEventAttributes, value: Buffer): OutgoingMessage {
  const headers: Record<string, string> = { ce_specversion: event.specversion };
  const source = event as unknown as Record<string, unknown>;
  for (const name of stringAttributes) {
    const attribute = source[name];
    if (typeof attribute === 'string') headers[ceHeader[name]] = attribute;
  }
  for (const name of integerExtensions) {
    const attribute = source[name];
    if (typeof attribute === 'number') headers[ceHeader[name]] = String(attribute);
  }
  for (const name of timestampAttributes) {
    const attribute = source[name];
    if (typeof attribute === 'string') headers[ceHeader[name]] = attribute;
  }
  if (event.extensions !== undefined)
    for (const name in event.extensions)
      headers[`${headerPrefix}${name}`] = event.extensions[name] as string;
  // §3.2.1: datacontenttype maps to the content-type header, not to a ce_ header.
  headers['content-type'] = event.datacontenttype ?? jsonContentType;
  return { key: event.partitionkey ?? event.correlationid ?? null, value, headers };
}

type HeaderAttribute =
  | (typeof stringAttributes)[number]
  | (typeof integerExtensions)[number]
  | (typeof timestampAttributes)[number];

/** The `ce_` header of every attribute the mesh writes, built once rather than per event. */
const ceHeader = Object.fromEntries(
  [...stringAttributes, ...integerExtensions, ...timestampAttributes].map((name) => [
    name,
    `${headerPrefix}${name}`,
  ]),
) as Record<HeaderAttribute, string>;

export type BindingMode = 'binary' | 'structured';

export interface DecodedMessage {
  mode: BindingMode;
  attributes: MeshEventAttributes;
  /** Binary mode: the raw value (wire format or plain JSON). */
  value?: Buffer;
  /** Structured mode: the `data` member, already parsed. */
  data?: unknown;
}

function headerText(value: Buffer | string | (Buffer | string)[] | undefined): string | undefined {
  if (value === undefined) return undefined;
  const one = Array.isArray(value) ? value[value.length - 1] : value;
  if (one === undefined) return undefined;
  return typeof one === 'string' ? one : one.toString('utf8');
}

const utf8 = new TextDecoder('utf-8', { fatal: true });

/** Decodes UTF-8 strictly: invalid sequences are a malformed event, not a replacement character. */
export function strictUtf8(bytes: Buffer, what: string): string {
  try {
    return utf8.decode(bytes);
  } catch {
    throw terminal('malformed_event', `${what} is not valid UTF-8`);
  }
}

interface KnownHeader {
  attribute: string;
  kind: AttributeKind | undefined;
}

/** The `ce_` header of each attribute the mesh knows, and what it reads: one lookup per header. */
const knownHeaders = new Map<string, KnownHeader>(
  knownAttributeNames.map((attribute) => [
    `${headerPrefix}${attribute}`,
    { attribute, kind: attributeKind(attribute) },
  ]),
);

/**
 * Reads a Kafka record as a CloudEvent, in binary or structured mode.
 *
 * The headers are read in one pass, straight into the attributes; a bad attribute is reported
 * after what the spec checks first (a CloudEvent at all, its content type, the required
 * attributes), and the first bad one in header order, as reading them one by one would.
 *
 * @throws MeshError `malformed_event` (terminal) when it is not a CloudEvent, an attribute is
 *   invalid, the content type is wrong, or the value is larger than `maxBytes`.
 */
export function fromKafka(
  message: WireMessage,
  options: { maxBytes?: number } = {},
): DecodedMessage {
  const value = message.value;
  if (options.maxBytes !== undefined && value !== null && value.length > options.maxBytes) {
    throw terminal(
      'malformed_event',
      `value of ${value.length} bytes is over the limit of ${options.maxBytes}`,
    );
  }
  const { headers } = message;
  // Read as they come; the required ones are checked once all are read.
  const attributes = {} as MeshEventAttributes;
  let fault: string | undefined;
  let contentTypeHeader: string | undefined;
  for (const name in headers) {
    const known = knownHeaders.get(name);
    if (known === undefined && !name.startsWith(headerPrefix)) {
      // Kafka header names are case-sensitive, but a client may well send Content-Type.
      if (
        name === 'content-type' ||
        (contentTypeHeader === undefined && name.toLowerCase() === 'content-type')
      )
        contentTypeHeader = name;
      continue;
    }
    const text = headerText(headers[name]);
    if (text === undefined) continue;
    const problem =
      known === undefined
        ? readAttribute(attributes, name.slice(headerPrefix.length), text, undefined)
        : readAttribute(attributes, known.attribute, text, known.kind);
    fault ??= problem;
  }
  const contentType =
    contentTypeHeader === undefined
      ? undefined
      : headerText(headers[contentTypeHeader])?.trim().toLowerCase();
  if (contentType?.startsWith(structuredContentType)) return fromStructured(value);
  if (attributes.specversion === undefined) {
    throw terminal(
      'malformed_event',
      contentType === undefined
        ? 'not a CloudEvent: no ce_specversion header and no content-type'
        : `not a CloudEvent: content-type ${contentType.slice(0, 60)} without ce_ headers`,
    );
  }
  if (contentType !== undefined && !contentType.startsWith(jsonContentType)) {
    throw terminal(
      'malformed_event',
      `unsupported content-type ${contentType.slice(0, 60)}; the mesh carries application/json data`,
    );
  }
  const required = requiredFault(attributes);
  if (required !== undefined) throw terminal('malformed_event', required);
  if (fault !== undefined) throw terminal('malformed_event', fault);
  attributes.datacontenttype = jsonContentType;
  if (value === null || value.length === 0)
    throw terminal('malformed_event', 'binary-mode event without a value');
  return { mode: 'binary', attributes, value };
}

function fromStructured(value: Buffer | null): DecodedMessage {
  if (value === null || value.length === 0)
    throw terminal('malformed_event', 'structured-mode event without a value');
  let parsed: unknown;
  try {
    parsed = JSON.parse(strictUtf8(value, 'structured-mode value'));
  } catch (error) {
    if (isMeshError(error)) throw error;
    throw terminal('malformed_event', 'structured-mode value is not JSON');
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) {
    throw terminal('malformed_event', 'structured-mode value is not a JSON object');
  }
  const raw: Record<string, string> = {};
  let data: unknown;
  for (const [name, member] of Object.entries(parsed as Record<string, unknown>)) {
    if (name === 'data') {
      data = member;
      continue;
    }
    if (name === 'data_base64')
      throw terminal('malformed_event', 'data_base64 is not supported; the mesh carries JSON data');
    if (typeof member === 'string') raw[name] = member;
    else if (typeof member === 'number' && Number.isInteger(member) && member >= 0)
      raw[name] = String(member);
    else if (typeof member === 'boolean') raw[name] = String(member);
    else
      throw terminal(
        'malformed_event',
        `attribute ${JSON.stringify(name.slice(0, 40))} must be a string or a non-negative integer`,
      );
  }
  const attributes = parseAttributes(raw);
  const dataContentType = attributes.datacontenttype?.toLowerCase();
  if (dataContentType !== undefined && !dataContentType.startsWith(jsonContentType)) {
    throw terminal(
      'malformed_event',
      `unsupported datacontenttype ${dataContentType.slice(0, 60)}`,
    );
  }
  attributes.datacontenttype = jsonContentType;
  if (data === undefined) throw terminal('malformed_event', 'structured-mode event without data');
  return { mode: 'structured', attributes, data };
}
