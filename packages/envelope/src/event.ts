/**
 * The mesh's CloudEvent: the CloudEvents 1.0 context attributes plus the mesh extensions of the
 * contract (docs/contract.md, "Extensions"). Extension names are lower-case alphanumerics, as
 * CloudEvents 1.0 §3.1.1 (attribute naming convention) demands.
 */
import { isFailureClass, terminal, type FailureClass } from '@mesh/errors';

export interface MeshEventAttributes {
  /** CloudEvents 1.0 §3.1.1 REQUIRED attributes. */
  specversion: '1.0';
  id: string;
  source: string;
  type: string;
  /** OPTIONAL attributes the mesh always sets on what it produces. */
  time?: string;
  subject?: string;
  datacontenttype?: string;
  dataschema?: string;
  /** Mesh extensions. */
  correlationid?: string;
  causationid?: string;
  hopcount?: number;
  agentpath?: string;
  agent?: string;
  traceparent?: string;
  tracestate?: string;
  partitionkey?: string;
  meshattempt?: number;
  meshnotbefore?: string;
  meshfailure?: FailureClass;
  meshfailuredetail?: string;
  meshfailedby?: string;
  meshorigintopic?: string;
  /** Any other extension a client set; carried as it is. */
  extensions?: Record<string, string>;
}

export interface MeshEvent<D = unknown> extends MeshEventAttributes {
  data: D;
}

/** Extensions whose value is an integer on the wire. */
export const integerExtensions = ['hopcount', 'meshattempt'] as const;
/** Extensions whose value is an RFC 3339 timestamp. */
export const timestampAttributes = ['time', 'meshnotbefore'] as const;
/** String-valued attributes the mesh knows, in the order they are written as headers. */
export const stringAttributes = [
  'id',
  'source',
  'type',
  'subject',
  'dataschema',
  'correlationid',
  'causationid',
  'agentpath',
  'agent',
  'traceparent',
  'tracestate',
  'partitionkey',
  'meshfailure',
  'meshfailuredetail',
  'meshfailedby',
  'meshorigintopic',
] as const;

/** Every attribute name the mesh knows (the rest are extensions). */
export const knownAttributeNames: readonly string[] = [
  'specversion',
  'datacontenttype',
  'data',
  'data_base64',
  ...stringAttributes,
  ...integerExtensions,
  ...timestampAttributes,
];

const knownAttributes = new Set<string>(knownAttributeNames);

/** How each attribute the mesh knows is read from the wire. */
export type AttributeKind = 'required' | 'data' | 'integer' | 'timestamp' | 'string';

const attributeKinds = new Map<string, AttributeKind>([
  ['specversion', 'required'],
  ['id', 'required'],
  ['source', 'required'],
  ['type', 'required'],
  ['data', 'data'],
  ['data_base64', 'data'],
  ['datacontenttype', 'string'],
  ...stringAttributes
    .filter((name) => !['id', 'source', 'type'].includes(name))
    .map((name) => [name, 'string'] as const),
  ...integerExtensions.map((name) => [name, 'integer'] as const),
  ...timestampAttributes.map((name) => [name, 'timestamp'] as const),
]);

/** The kind of each attribute the mesh knows; undefined for an extension. */
export function attributeKind(name: string): AttributeKind | undefined {
  return attributeKinds.get(name);
}

export function isKnownAttribute(name: string): boolean {
  return knownAttributes.has(name);
}

/**
 * CloudEvents 1.0 §3.1.1: attribute names are lower-case a-z and digits. Names SHOULD NOT exceed 20
 * characters, which is advice, not a rule: longer ones are accepted up to a sanity bound.
 */
const attributeName = /^[a-z0-9]{1,100}$/;
/** RFC 3339 date-time, as CloudEvents §3.1.1 "Timestamp" requires. */
const rfc3339 = /^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$/;

const integerText = /^(0|[1-9][0-9]{0,8})$/;

/**
 * Reads one attribute (not a required one) from its wire text into `target`, an extension into
 * `target.extensions`. Returns why it is invalid instead of throwing, so that a caller reading
 * several can report the fault the spec puts first.
 */
export function readAttribute(
  target: MeshEventAttributes,
  name: string,
  value: string,
  kind: AttributeKind | undefined = attributeKinds.get(name),
): string | undefined {
  const attributes = target as unknown as Record<string, unknown>;
  switch (kind) {
    case 'string':
      if (name === 'meshfailure' && !isFailureClass(value))
        return `meshfailure ${JSON.stringify(value.slice(0, 40))} is not a failure class`;
      attributes[name] = value;
      return undefined;
    case 'integer':
      if (!integerText.test(value))
        return `${name} must be a non-negative integer, got ${JSON.stringify(value.slice(0, 20))}`;
      attributes[name] = Number(value);
      return undefined;
    case 'timestamp':
      if (!rfc3339.test(value) || Number.isNaN(Date.parse(value)))
        return `${name} must be an RFC 3339 timestamp`;
      attributes[name] = value;
      return undefined;
    case 'data':
      return `${name} is not an attribute: in binary mode the data is the Kafka value`;
    case 'required':
      attributes[name] = value;
      return undefined;
    case undefined:
      // Known names are valid by construction; only the others are checked against the convention.
      if (!attributeName.test(name))
        return `invalid attribute name ${JSON.stringify(name.slice(0, 40))}`;
      (target.extensions ??= {})[name] = value;
      return undefined;
  }
}

/**
 * Why the REQUIRED attributes (CloudEvents 1.0 §3.1.1) are not those of a 1.0 event: specversion
 * missing or not 1.0, or id, source or type missing or empty. Undefined when they are.
 */
export function requiredFault(attributes: {
  specversion?: string;
  id?: string;
  source?: string;
  type?: string;
}): string | undefined {
  if (attributes.specversion === undefined) return 'not a CloudEvent: no specversion';
  if (attributes.specversion !== '1.0')
    return `unsupported specversion ${JSON.stringify(attributes.specversion.slice(0, 20))}`;
  for (const required of ['id', 'source', 'type'] as const) {
    const value = attributes[required];
    if (value === undefined || value.length === 0) return `missing required attribute ${required}`;
  }
  return undefined;
}

/**
 * Checks raw attribute values read from the wire and returns typed attributes.
 *
 * @throws MeshError `malformed_event` (terminal) naming the first attribute at fault.
 */
export function parseAttributes(raw: Record<string, string>): MeshEventAttributes {
  const required = requiredFault(raw);
  if (required !== undefined) throw terminal('malformed_event', required);
  const attributes: MeshEventAttributes = {
    specversion: '1.0',
    id: raw.id ?? '',
    source: raw.source ?? '',
    type: raw.type ?? '',
  };
  for (const name in raw) {
    const kind = attributeKinds.get(name);
    if (kind === 'required') continue;
    const fault = readAttribute(attributes, name, raw[name] as string, kind);
    if (fault !== undefined) throw terminal('malformed_event', fault);
  }
  return attributes;
}
