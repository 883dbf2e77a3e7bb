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

const knownAttributes = new Set<string>([
  'specversion',
  'datacontenttype',
  'data',
  'data_base64',
  ...stringAttributes,
  ...integerExtensions,
  ...timestampAttributes,
]);

/** How `parseAttributes` reads each attribute the mesh knows (one lookup per header). */
const attributeKinds = new Map<string, 'required' | 'data' | 'integer' | 'timestamp' | 'string'>([
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

/**
 * Checks raw attribute values read from the wire and returns typed attributes.
 *
 * @throws MeshError `malformed_event` (terminal) naming the first attribute at fault.
 */
export function parseAttributes(raw: Record<string, string>): MeshEventAttributes {
  const bad = (why: string) => terminal('malformed_event', why);
  if (raw.specversion === undefined) throw bad('not a CloudEvent: no specversion');
  if (raw.specversion !== '1.0')
    throw bad(`unsupported specversion ${JSON.stringify(raw.specversion.slice(0, 20))}`);
  for (const required of ['id', 'source', 'type'] as const) {
    const value = raw[required];
    if (value === undefined || value.length === 0)
      throw bad(`missing required attribute ${required}`);
  }
  const attributes: MeshEventAttributes = {
    specversion: '1.0',
    id: raw.id ?? '',
    source: raw.source ?? '',
    type: raw.type ?? '',
  };
  const target = attributes as unknown as Record<string, unknown>;
  let extensions: Record<string, string> | undefined;
  for (const name in raw) {
    const value = raw[name] as string;
    // Known names are valid by construction; only the others are checked against the convention.
    const kind = attributeKinds.get(name);
    if (kind === 'required') continue;
    if (kind === undefined && !attributeName.test(name))
      throw bad(`invalid attribute name ${JSON.stringify(name.slice(0, 40))}`);
    if (kind === 'data')
      throw bad(`${name} is not an attribute: in binary mode the data is the Kafka value`);
    if (name === 'meshfailure' && !isFailureClass(value))
      throw bad(`meshfailure ${JSON.stringify(value.slice(0, 40))} is not a failure class`);
    if (kind === 'integer') {
      if (!/^(0|[1-9][0-9]{0,8})$/.test(value))
        throw bad(
          `${name} must be a non-negative integer, got ${JSON.stringify(value.slice(0, 20))}`,
        );
      target[name] = Number(value);
    } else if (kind === 'timestamp') {
      if (!rfc3339.test(value) || Number.isNaN(Date.parse(value)))
        throw bad(`${name} must be an RFC 3339 timestamp`);
      target[name] = value;
    } else if (kind === 'string') {
      target[name] = value;
    } else {
      (extensions ??= {})[name] = value;
    }
  }
  if (extensions !== undefined) attributes.extensions = extensions;
  return attributes;
}
