/**
 * Validation of agent outputs against the `outputSchema` of their assignment. Schemas come with the
 * work, so validators are compiled on first use and cached by the schema's text (bounded, least
 * recently used first out). Draft-07 is the default; `$schema` picks 2019-09 or 2020-12.
 */
import { Ajv, type ValidateFunction } from 'ajv';
import { Ajv2019 } from 'ajv/dist/2019.js';
import { Ajv2020 } from 'ajv/dist/2020.js';
import addFormatsModule from 'ajv-formats';
import { retryable, terminal } from '@mesh/errors';

// ajv-formats is typed against its own copy of ajv; the instances are the same at run time.
const addFormats = addFormatsModule as unknown as <T>(ajv: T) => T;

const options = { strict: false, allErrors: true, validateSchema: true, logger: false } as const;

export class OutputValidator {
  readonly #cache = new Map<string, ValidateFunction>();
  readonly #max: number;
  #draft07: Ajv | undefined;
  #draft2019: Ajv2019 | undefined;
  #draft2020: Ajv2020 | undefined;

  constructor(maxCached = 500) {
    this.#max = maxCached;
  }

  #compile(schema: Record<string, unknown>): ValidateFunction {
    const dialect = typeof schema.$schema === 'string' ? schema.$schema : '';
    // $id would make ajv refuse a second schema with the same id (the cache key identifies it), and
    // the dialect is chosen here, so an older $schema falls back to draft-07 rather than failing.
    const { $id: _id, $schema: _dialect, ...anonymous } = schema;
    if (dialect.includes('2020-12'))
      return (this.#draft2020 ??= addFormats(new Ajv2020(options))).compile(anonymous);
    if (dialect.includes('2019-09'))
      return (this.#draft2019 ??= addFormats(new Ajv2019(options))).compile(anonymous);
    return (this.#draft07 ??= addFormats(new Ajv(options))).compile(anonymous);
  }

  /** The compiled validator of `schema`. @throws MeshError `schema_violation` (terminal) when it is not a schema. */
  validatorOf(schema: Record<string, unknown>): ValidateFunction {
    const key = JSON.stringify(schema);
    let validate = this.#cache.get(key);
    if (validate !== undefined) {
      this.#cache.delete(key);
      this.#cache.set(key, validate);
      return validate;
    }
    try {
      validate = this.#compile(schema);
    } catch (error) {
      throw terminal(
        'schema_violation',
        `outputSchema of the assignment is not a valid JSON Schema: ${(error as Error).message}`,
      );
    }
    this.#cache.set(key, validate);
    if (this.#cache.size > this.#max) {
      const oldest = this.#cache.keys().next().value;
      if (oldest !== undefined) this.#cache.delete(oldest);
    }
    return validate;
  }

  /**
   * Checks `output` against `schema`.
   * @throws MeshError `invalid_output` (retryable: a model may do better, with stricter instructions)
   *   naming the first few violations, never the output itself.
   */
  check(output: unknown, schema: Record<string, unknown>, details?: Record<string, unknown>): void {
    const validate = this.validatorOf(schema);
    if (validate(output)) return;
    const problems = (validate.errors ?? [])
      .slice(0, 5)
      .map(
        (e) => `${e.instancePath === '' ? '(root)' : e.instancePath} ${e.message ?? 'is invalid'}`,
      );
    throw retryable(
      'invalid_output',
      `output does not match its outputSchema: ${problems.join('; ')}`,
      {
        ...(details === undefined ? {} : { details }),
      },
    );
  }
}
