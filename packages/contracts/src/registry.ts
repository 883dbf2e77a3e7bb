/**
 * Contracts in a Confluent-compatible schema registry.
 *
 * Subjects are named after the event type (record-name strategy: a type's contract is the same on
 * every topic) with compatibility BACKWARD. Registration and compatibility checks go through the
 * plain Confluent REST API, because `@kafkajs/confluent-schema-registry`'s `register()` insists on
 * reading `/config/{subject}` in Confluent's exact shape, which Apicurio's ccompat API answers
 * differently (Apicurio issue #1097). Ids, schema fetches and encoding use the library. The same code
 * runs unchanged against the Confluent Schema Registry and Apicurio's `/apis/ccompat/v7`.
 */
import { SchemaRegistry, SchemaType } from '@kafkajs/confluent-schema-registry';
import { Ajv, type ValidateFunction } from 'ajv';
import addFormatsModule from 'ajv-formats';
import { Agent as HttpsAgent } from 'node:https';
import { certificateFault, MeshError, retryable, terminal } from '@mesh/errors';
import { exchange } from './http.ts';
import { loadContracts, type Contract } from './schemas.ts';
import { Memo } from './memo.ts';

export interface RegistryConnection {
  url: string;
  username?: string;
  password?: string;
  /** PEM certificates of the CA that signed an https registry's certificate (else the public CAs). */
  ca?: string[];
}

const addFormats = addFormatsModule as unknown as (ajv: Ajv) => Ajv;

/** The magic byte and 4-byte big-endian schema id of the Confluent wire format. */
export const wireHeaderBytes = 5;

/** What `encodeCached` and `decodeCached` answer when the registry must be asked first. */
export const notCached: unique symbol = Symbol('notCached');

/** An event's data in the Confluent wire format, and the schema id it was validated against. */
export interface WireValue {
  value: Buffer;
  schemaId: number;
}

/** The answer of a cached step right after its loads, which fill the caches before they resolve. */
function settledOrBug<T>(answer: T | typeof notCached): T {
  if (answer === notCached) throw new Error('the schema registry cache was not filled by its load');
  return answer;
}

/** The library's compiled JSON schema exposes the ajv validator it compiled. */
interface ValidatingSchema {
  validate: ValidateFunction;
}

export interface DecodeOptions {
  /** Accept a value that is plain JSON (no magic byte), validated against the latest schema of the subject. */
  acceptPlainJson?: boolean;
}

export interface CompatibilityReport {
  type: string;
  compatible: boolean;
  /** True when the subject does not exist yet (first registration). */
  isNew: boolean;
  messages: string[];
}

function statusOf(error: unknown): number | undefined {
  if (typeof error === 'object' && error !== null && 'status' in error) {
    const status = error.status;
    return typeof status === 'number' ? status : undefined;
  }
  return undefined;
}

// What `ping` asks the registry for (Confluent 5.5+, Apicurio's ccompat API).
const PING_PATH = '/schemas/types';

const strictUtf8 = new TextDecoder('utf-8', { fatal: true });

export class ContractRegistry {
  readonly url: string;
  readonly #contracts: Map<string, Contract>;
  readonly #authHeader: string | undefined;
  /** Trusts `connection.ca`; undefined: Node's global agent and public CAs. */
  readonly #agent: HttpsAgent | undefined;
  readonly #registry: SchemaRegistry;
  /** The latest schema id of each type, the subjects of each schema id, compiled schemas by id. */
  readonly #ids = new Memo<string, number>();
  readonly #subjects = new Memo<number, string[]>();
  readonly #schemas = new Memo<number, ValidatingSchema>();

  constructor(connection: RegistryConnection, contracts: Map<string, Contract> = loadContracts()) {
    this.url = connection.url.replace(/\/+$/, '');
    this.#contracts = contracts;
    this.#authHeader =
      connection.username === undefined
        ? undefined
        : `Basic ${Buffer.from(`${connection.username}:${connection.password ?? ''}`).toString('base64')}`;
    this.#agent = connection.ca === undefined ? undefined : new HttpsAgent({ ca: connection.ca });
    const ajv = addFormats(new Ajv({ strict: false, allErrors: false }));
    this.#registry = new SchemaRegistry(
      {
        host: this.url,
        ...(this.#agent === undefined ? {} : { agent: this.#agent }),
        ...(connection.username === undefined
          ? {}
          : { auth: { username: connection.username, password: connection.password ?? '' } }),
        retry: { retries: 2 },
      },
      { [SchemaType.JSON]: { ajvInstance: ajv } },
    );
  }

  get types(): string[] {
    return [...this.#contracts.keys()];
  }

  async #request(
    method: string,
    path: string,
    body?: unknown,
  ): Promise<{ status: number; json: unknown }> {
    let response: { status: number; text: string };
    try {
      response = await exchange(new URL(`${this.url}${path}`), {
        method,
        headers: {
          accept: 'application/vnd.schemaregistry.v1+json, application/json',
          ...(body === undefined
            ? {}
            : { 'content-type': 'application/vnd.schemaregistry.v1+json' }),
          ...(this.#authHeader === undefined ? {} : { authorization: this.#authHeader }),
        },
        ...(body === undefined ? {} : { body: JSON.stringify(body) }),
        agent: this.#agent,
        timeoutMs: 10_000,
      });
    } catch (error) {
      const certificate = certificateFault(error, `the schema registry at ${this.url}`, {
        ca: 'MESH_SCHEMA_REGISTRY_CA_FILE',
        address: 'MESH_SCHEMA_REGISTRY_URL',
      });
      if (certificate !== undefined)
        throw new MeshError('config_invalid', certificate, { cause: error });
      throw retryable(
        'registry_unavailable',
        `schema registry at ${this.url} is unreachable: ${(error as Error).message}`,
        { cause: error },
      );
    }
    const { text } = response;
    let json: unknown = undefined;
    try {
      json = text.length > 0 ? JSON.parse(text) : undefined;
    } catch {
      json = { message: text.slice(0, 300) };
    }
    if (response.status === 401 || response.status === 403) {
      // Settings, not an outage: a service stops on it at start; a consumer retries in place.
      throw new MeshError(
        'config_invalid',
        `MESH_SCHEMA_REGISTRY_USERNAME or MESH_SCHEMA_REGISTRY_PASSWORD is refused by the schema registry at ${this.url} (${response.status})`,
      );
    }
    if (response.status >= 500) {
      throw retryable(
        'registry_unavailable',
        `schema registry answered ${response.status} to ${method} ${path}`,
      );
    }
    return { status: response.status, json };
  }

  /**
   * Answers when the registry serves its API to these credentials. It asks for the schema types, a
   * fixed answer of a few bytes: readiness probes every few seconds from each replica would fetch a
   * shared registry's whole subject list. @throws MeshError `registry_unavailable`.
   */
  async ping(): Promise<void> {
    const { status } = await this.#request('GET', PING_PATH);
    if (status !== 200)
      throw retryable(
        'registry_unavailable',
        `schema registry answered ${status} to GET ${PING_PATH}`,
      );
  }

  /**
   * Registers every contract (or the given types): sets the subject's compatibility to BACKWARD and
   * registers the schema, which is a no-op when that exact schema is already registered.
   *
   * @returns the schema id of each type.
   * @throws MeshError `schema_incompatible` (terminal) when the registry refuses a schema as
   *   incompatible with the subject's history: the caller must stop, not fall back.
   */
  async registerAll(types: string[] = this.types): Promise<Map<string, number>> {
    const ids = new Map<string, number>();
    for (const type of types) ids.set(type, await this.register(type));
    return ids;
  }

  async register(type: string, schema: object = this.#contract(type).schema): Promise<number> {
    const subject = encodeURIComponent(type);
    const config = await this.#request('PUT', `/config/${subject}`, { compatibility: 'BACKWARD' });
    if (config.status !== 200) {
      throw terminal(
        'schema_incompatible',
        `registry refused compatibility BACKWARD for ${type}: ${describeBody(config.json)}`,
      );
    }
    const result = await this.#request('POST', `/subjects/${subject}/versions`, {
      schemaType: 'JSON',
      schema: JSON.stringify(schema),
    });
    if (result.status === 409) {
      throw terminal(
        'schema_incompatible',
        `registry refused the schema of ${type} as incompatible with its registered versions (BACKWARD): ${describeBody(result.json)}`,
      );
    }
    if (
      result.status !== 200 ||
      typeof (result.json as { id?: unknown } | undefined)?.id !== 'number'
    ) {
      throw terminal(
        'schema_incompatible',
        `registry refused the schema of ${type} (${result.status}): ${describeBody(result.json)}`,
      );
    }
    const id = (result.json as { id: number }).id;
    this.#ids.set(type, id);
    return id;
  }

  /** Tests each contract against the registered versions without registering anything. */
  async check(types: string[] = this.types): Promise<CompatibilityReport[]> {
    const reports: CompatibilityReport[] = [];
    for (const type of types) {
      const subject = encodeURIComponent(type);
      // Whether the subject exists is asked first, on its own: Confluent answers the compatibility
      // check of an unknown subject with 404, Apicurio with 200 and is_compatible. A new subject
      // has nothing to be compatible with, so it needs no check.
      const versions = await this.#request('GET', `/subjects/${subject}/versions`);
      if (versions.status === 404) {
        reports.push({ type, compatible: true, isNew: true, messages: [] });
        continue;
      }
      const result = await this.#request(
        'POST',
        `/compatibility/subjects/${subject}/versions/latest?verbose=true`,
        {
          schemaType: 'JSON',
          schema: JSON.stringify(this.#contract(type).schema),
        },
      );
      const body = result.json as { is_compatible?: boolean; messages?: string[] } | undefined;
      reports.push({
        type,
        compatible: result.status === 200 && body?.is_compatible === true,
        isNew: false,
        messages: body?.messages ?? (result.status === 200 ? [] : [describeBody(result.json)]),
      });
    }
    return reports;
  }

  /** The id of the latest registered schema of `type`, cached. @throws MeshError. */
  idOf(type: string): Promise<number> {
    return this.#ids.get(type, () =>
      this.#registry.getLatestSchemaId(type).catch((error: unknown) => {
        if (statusOf(error) === 404)
          throw terminal('schema_violation', `no contract is registered for event type ${type}`);
        throw retryable(
          'registry_unavailable',
          `could not read the latest schema of ${type}: ${(error as Error).message}`,
          { cause: error },
        );
      }),
    );
  }

  /** The `dataschema` attribute for a schema id: its URI in the registry. */
  dataschema(id: number): string {
    return `${this.url}/schemas/ids/${id}`;
  }

  /**
   * Validates `data` against the latest contract of `type` and encodes it in the Confluent wire format.
   *
   * @throws MeshError `schema_violation` (terminal) when the data breaks the contract; that is a bug
   *   in the producing service and the event must not be published.
   */
  async encode(type: string, data: unknown): Promise<WireValue> {
    const cached = this.encodeCached(type, data);
    if (cached !== notCached) return cached;
    await this.#schemaOf(await this.idOf(type));
    return settledOrBug(this.encodeCached(type, data));
  }

  /**
   * `encode` without an await, for the hot path: every event but the first of its type. Answers
   * `notCached` when the type's latest schema id or its compiled schema is not known yet (`encode`
   * fetches them). @throws MeshError `schema_violation`, as `encode`.
   */
  encodeCached(type: string, data: unknown): WireValue | typeof notCached {
    const schemaId = this.#ids.settled(type);
    const schema = schemaId === undefined ? undefined : this.#schemas.settled(schemaId);
    if (schemaId === undefined || schema === undefined) return notCached;
    this.#check(schema, type, schemaId, data);
    const json = JSON.stringify(data);
    const value = Buffer.allocUnsafe(wireHeaderBytes + Buffer.byteLength(json));
    value[0] = 0;
    value.writeUInt32BE(schemaId, 1);
    value.write(json, wireHeaderBytes);
    return { value, schemaId };
  }

  #check({ validate }: ValidatingSchema, type: string, schemaId: number, data: unknown): void {
    if (typeof data === 'object' && data !== null && validate(data)) return;
    const faults = (validate.errors ?? []).slice(0, 5).map((e) => {
      const extra =
        'additionalProperty' in e.params ? ` (${String(e.params.additionalProperty)})` : '';
      return `${e.instancePath || '/'} ${e.message ?? 'is invalid'}${extra}`;
    });
    throw terminal(
      'schema_violation',
      `data of ${type} breaks its contract: ${faults.join('; ') || 'not an object'}`,
      { details: { schemaId } },
    );
  }

  /**
   * The compiled schema of an id, fetched and compiled once: concurrent first uses share one request
   * (the library caches only after its request returns). A failed fetch is forgotten and retried.
   */
  #schemaOf(id: number): Promise<ValidatingSchema> {
    return this.#schemas.get(id, () =>
      (this.#registry.getSchema(id) as unknown as Promise<ValidatingSchema>).catch(
        (error: unknown) => {
          if (statusOf(error) === 404) throw terminal('malformed_event', `unknown schema id ${id}`);
          throw retryable(
            'registry_unavailable',
            `could not fetch schema ${id}: ${(error as Error).message}`,
            { cause: error },
          );
        },
      ),
    );
  }

  /** Fetches and compiles the latest schema of each type ahead of the first event. */
  async warm(types: string[] = this.types): Promise<void> {
    await Promise.all(types.map(async (type) => this.#schemaOf(await this.idOf(type))));
  }

  #subjectsOf(id: number): Promise<string[]> {
    return this.#subjects.get(id, () =>
      this.#request('GET', `/schemas/ids/${id}/versions`).then(({ status, json }) => {
        if (status === 404) throw terminal('malformed_event', `unknown schema id ${id}`);
        if (status !== 200 || !Array.isArray(json))
          throw retryable(
            'registry_unavailable',
            `registry answered ${status} for the versions of schema ${id}`,
          );
        return (json as { subject?: unknown }[]).map((entry) => String(entry.subject));
      }),
    );
  }

  /**
   * Decodes and validates the data of an event of `type` from its Kafka value.
   *
   * @throws MeshError `malformed_event` (bad magic byte, unknown schema id, invalid UTF-8 or JSON,
   *   plain JSON where not accepted), `schema_violation` (data breaks the contract, or the schema id
   *   is not a version of the type's subject) — both terminal — or a retryable `registry_unavailable`
   *   when the registry cannot be reached, which must not dead-letter the event.
   */
  async decode(type: string, value: Buffer, options: DecodeOptions = {}): Promise<unknown> {
    const cached = this.decodeCached(type, value, options);
    if (cached !== notCached) return cached;
    // What the value needs from the registry, in the order the checks use it; then the same checks.
    if (value.length > wireHeaderBytes && value[0] === 0) {
      const schemaId = value.readUInt32BE(1);
      if ((await this.#subjectsOf(schemaId)).includes(type)) await this.#schemaOf(schemaId);
    } else {
      await this.#schemaOf(await this.idOf(type));
    }
    return settledOrBug(this.decodeCached(type, value, options));
  }

  /**
   * `decode` without an await, for the hot path: every event but the first of its schema. Answers
   * `notCached` when the subjects of its schema id, the type's latest schema id (plain JSON) or the
   * compiled schema is not known yet (`decode` fetches them). @throws MeshError, as `decode`,
   * except `registry_unavailable`.
   */
  decodeCached(type: string, value: Buffer, options: DecodeOptions = {}): unknown {
    let schemaId: number | undefined;
    let json: Buffer;
    if (value.length > 0 && value[0] === 0) {
      if (value.length <= wireHeaderBytes)
        throw terminal('malformed_event', 'wire-format value is shorter than its header');
      schemaId = value.readUInt32BE(1);
      const subjects = this.#subjects.settled(schemaId);
      if (subjects === undefined) return notCached;
      if (!subjects.includes(type)) {
        throw terminal(
          'schema_violation',
          `schema id ${schemaId} is not a version of the contract of ${type}`,
        );
      }
      json = value.subarray(wireHeaderBytes);
    } else if (options.acceptPlainJson === true && value.length > 0) {
      schemaId = this.#ids.settled(type);
      if (schemaId === undefined) return notCached;
      json = value;
    } else if (value.length > 0 && (value[0] === 0x7b || value[0] === 0x5b)) {
      throw terminal(
        'malformed_event',
        'plain JSON value where the Confluent wire format is required',
      );
    } else {
      throw terminal(
        'malformed_event',
        `bad wire format: magic byte ${value[0] ?? 'missing'}, expected 0`,
      );
    }
    const schema = this.#schemas.settled(schemaId);
    if (schema === undefined) return notCached;
    let data: unknown;
    try {
      data = JSON.parse(strictUtf8.decode(json));
    } catch (error) {
      throw terminal(
        'malformed_event',
        error instanceof TypeError
          ? 'event data is not valid UTF-8'
          : 'event data is not valid JSON',
      );
    }
    this.#check(schema, type, schemaId, data);
    return data;
  }

  #contract(type: string): Contract {
    const contract = this.#contracts.get(type);
    if (contract === undefined)
      throw new MeshError('not_found', `no contract file for event type ${type}`);
    return contract;
  }
}

function describeBody(json: unknown): string {
  if (typeof json === 'object' && json !== null) {
    const body = json as { message?: unknown; error_code?: unknown };
    if (typeof body.message === 'string') return body.message.slice(0, 300);
  }
  return JSON.stringify(json ?? null).slice(0, 300);
}
