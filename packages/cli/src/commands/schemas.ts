/** `mesh schemas register` and `mesh schemas check`: the contracts of `schemas/` in the registry. */
import { isMeshError } from '@mesh/errors';
import type { ParsedCommand } from '../args.ts';
import type { CliContext } from '../context.ts';
import { CliError } from '../errors.ts';
import { table, truncate } from '../format.ts';

/**
 * Registers every contract (compatibility BACKWARD). Returns the schema id of each type.
 * @throws CliError when the registry refuses a schema as incompatible, naming the type.
 */
export async function registerSchemas(ctx: CliContext): Promise<Map<string, number>> {
  const registry = await ctx.registry();
  const ids = new Map<string, number>();
  for (const type of registry.types) {
    try {
      ids.set(type, await ctx.registryStep(registry.register(type)));
    } catch (error) {
      if (isMeshError(error) && error.code === 'schema_incompatible')
        throw new CliError(error.message, { cause: error });
      throw error;
    }
  }
  return ids;
}

export async function schemasRegister(ctx: CliContext, _parsed: ParsedCommand): Promise<void> {
  const ids = await registerSchemas(ctx);
  if (ctx.json) {
    ctx.emit({
      registry: ctx.config.mesh.registry.url,
      registered: [...ids].map(([type, id]) => ({ type, id })),
    });
    return;
  }
  for (const line of table(
    ['TYPE', 'SCHEMA ID'],
    [...ids].map(([type, id]) => [type, String(id)]),
  ))
    ctx.print(line);
  ctx.print(`${ids.size} contracts registered (BACKWARD) at ${ctx.config.mesh.registry.url}`);
}

export async function schemasCheck(ctx: CliContext, _parsed: ParsedCommand): Promise<number> {
  const registry = await ctx.registry();
  const reports = await ctx.registryStep(registry.check());
  const incompatible = reports.filter((r) => !r.compatible);
  if (ctx.json) {
    ctx.emit({
      registry: ctx.config.mesh.registry.url,
      compatible: incompatible.length === 0,
      schemas: reports,
    });
  } else {
    const rows = reports.map((r) => [
      r.type,
      r.compatible ? (r.isNew ? 'new' : 'compatible') : 'INCOMPATIBLE',
      truncate(r.messages.join('; '), 100),
    ]);
    for (const line of table(['TYPE', 'STATUS', 'DETAIL'], rows)) ctx.print(line);
    ctx.print(
      incompatible.length === 0
        ? `all ${reports.length} contracts are compatible with the registry (BACKWARD)`
        : `${incompatible.length} of ${reports.length} contracts are incompatible`,
    );
  }
  if (incompatible.length > 0) {
    ctx.note(
      `mesh: incompatible with the registered versions (BACKWARD): ${incompatible.map((r) => r.type).join(', ')}`,
    );
    return 1;
  }
  return 0;
}
