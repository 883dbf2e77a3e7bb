/**
 * The contracts: one JSON Schema per event type's `data`, in `schemas/<type>.json` at the repository
 * root. The same files drive the registry, the HTTP route schemas and local validation.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { join } from 'node:path';

export interface Contract {
  type: string;
  schema: Record<string, unknown>;
}

/** `schemas/` at the repository root (or MESH_SCHEMAS_DIR in an image that moves it). */
export const defaultSchemasDir: string =
  process.env.MESH_SCHEMAS_DIR ?? fileURLToPath(new URL('../../../schemas/', import.meta.url));

/** Reads every `<type>.json` in `dir`. @throws Error naming the file when one is not valid JSON. */
export function loadContracts(dir: string = defaultSchemasDir): Map<string, Contract> {
  const contracts = new Map<string, Contract>();
  for (const file of readdirSync(dir)
    .filter((name) => name.endsWith('.json'))
    .sort()) {
    const type = file.slice(0, -'.json'.length);
    let schema: unknown;
    try {
      schema = JSON.parse(readFileSync(join(dir, file), 'utf8'));
    } catch (error) {
      throw new Error(`contract ${file} is not valid JSON: ${(error as Error).message}`);
    }
    if (
      typeof schema !== 'object' ||
      schema === null ||
      (schema as { title?: unknown }).title !== type
    ) {
      throw new Error(`contract ${file} must be a JSON Schema object whose title is ${type}`);
    }
    contracts.set(type, { type, schema: schema as Record<string, unknown> });
  }
  return contracts;
}

/** The event types of the contract, in the order of docs/contract.md's topic table. */
export const eventTypes = {
  taskRequested: 'io.mesh.task.requested',
  subtaskAssigned: 'io.mesh.subtask.assigned',
  subtaskCompleted: 'io.mesh.subtask.completed',
  subtaskFailed: 'io.mesh.subtask.failed',
  stageCompleted: 'io.mesh.stage.completed',
  taskCompleted: 'io.mesh.task.completed',
  taskFailed: 'io.mesh.task.failed',
  taskCancelled: 'io.mesh.task.cancelled',
  taskCancel: 'io.mesh.task.cancel',
  approvalGranted: 'io.mesh.approval.granted',
  approvalDenied: 'io.mesh.approval.denied',
  escalationOpened: 'io.mesh.escalation.opened',
  approvalRequested: 'io.mesh.approval.requested',
} as const;
export type EventType = (typeof eventTypes)[keyof typeof eventTypes];
