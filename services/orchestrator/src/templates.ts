/**
 * Workflow templates: JSON files validated at start-up (a bad template stops the service naming the
 * file and the fault), and plans — the stages of one task, from its template or from a planner
 * agent, validated by the same rules before anything is dispatched.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Ajv } from 'ajv';
import { MeshError, terminal } from '@mesh/errors';

const name = { type: 'string', pattern: '^[a-z0-9][a-z0-9._-]{0,62}$' };

const stageSchema = {
  type: 'object',
  additionalProperties: false,
  required: ['id'],
  properties: {
    id: name,
    dependsOn: { type: 'array', items: name, uniqueItems: true },
    join: { type: 'string', enum: ['all', 'quorum', 'first'] },
    quorum: { type: 'integer', minimum: 1 },
    timeoutMs: { type: 'integer', minimum: 1 },
    onTimeout: { type: 'string', enum: ['partial', 'fail'] },
    nodes: {
      type: 'array',
      minItems: 1,
      maxItems: 100,
      items: {
        type: 'object',
        additionalProperties: false,
        required: ['id', 'agent'],
        properties: {
          id: name,
          agent: name,
          input: { type: 'object' },
          outputSchema: { type: 'object' },
          timeoutMs: { type: 'integer', minimum: 1 },
          model: { type: 'string', maxLength: 200 },
        },
      },
    },
    gate: {
      type: 'object',
      additionalProperties: false,
      required: ['id'],
      properties: { id: name, prompt: { type: 'string', maxLength: 2000 } },
    },
  },
} as const;

const budgetSchema = {
  type: 'object',
  additionalProperties: false,
  properties: {
    maxSteps: { type: 'integer', minimum: 1 },
    maxTokens: { type: 'integer', minimum: 1 },
    maxCostUsd: { type: 'number', minimum: 0 },
  },
} as const;

/** The template file format; also what a planner agent's output must be (`{ stages: [...] }`). */
export const templateSchema = {
  type: 'object',
  additionalProperties: false,
  required: ['name'],
  properties: {
    $schema: { type: 'string' },
    name,
    description: { type: 'string', maxLength: 2000 },
    default: { type: 'boolean' },
    planner: {
      type: 'object',
      additionalProperties: false,
      required: ['agent'],
      properties: { agent: name },
    },
    budget: budgetSchema,
    timeoutMs: { type: 'integer', minimum: 1 },
    synthesis: { type: 'string', enum: ['merge', 'concat'] },
    stages: { type: 'array', minItems: 1, maxItems: 100, items: stageSchema },
  },
} as const;

export const planSchema = {
  type: 'object',
  required: ['stages'],
  properties: { stages: templateSchema.properties.stages },
} as const;

export interface NodeSpec {
  id: string;
  agent: string;
  input?: Record<string, unknown>;
  outputSchema?: Record<string, unknown>;
  timeoutMs?: number;
  model?: string;
}

export interface StageSpec {
  id: string;
  dependsOn?: string[];
  join?: 'all' | 'quorum' | 'first';
  quorum?: number;
  timeoutMs?: number;
  onTimeout?: 'partial' | 'fail';
  nodes?: NodeSpec[];
  gate?: { id: string; prompt?: string };
}

export interface Budget {
  maxSteps?: number;
  maxTokens?: number;
  maxCostUsd?: number;
}

export interface Template {
  name: string;
  description?: string;
  default?: boolean;
  planner?: { agent: string };
  budget?: Budget;
  timeoutMs?: number;
  synthesis?: 'merge' | 'concat';
  stages?: StageSpec[];
}

/** A validated plan: stages with their dependencies resolved and the one final stage marked. */
export interface PlannedStage extends StageSpec {
  dependsOn: string[];
  final: boolean;
}

const ajv = new Ajv({ allErrors: false, strict: true });
const validateTemplateShape = ajv.compile(templateSchema);
const validatePlanShape = ajv.compile<{ stages: StageSpec[] }>(planSchema);

function describeAjv(errors: typeof validateTemplateShape.errors): string {
  const error = errors?.[0];
  if (error === undefined) return 'invalid';
  const extra =
    'additionalProperty' in error.params ? ` (${String(error.params.additionalProperty)})` : '';
  return `${error.instancePath || '/'} ${error.message ?? 'is invalid'}${extra}`;
}

/**
 * Resolves `dependsOn` (default: the previous stage), checks the stages form a DAG with one final
 * stage, node ids are unique, quorums are reachable and gates are not last.
 *
 * @throws Error describing the first fault.
 */
export function planStages(stages: readonly StageSpec[]): PlannedStage[] {
  const ids = new Set<string>();
  const planned: PlannedStage[] = [];
  for (const [index, stage] of stages.entries()) {
    if (ids.has(stage.id)) throw new Error(`stage ${stage.id} appears twice`);
    if ((stage.nodes === undefined) === (stage.gate === undefined))
      throw new Error(`stage ${stage.id} must have either nodes or a gate`);
    const nodeIds = new Set<string>();
    for (const node of stage.nodes ?? []) {
      if (nodeIds.has(node.id))
        throw new Error(`node ${node.id} appears twice in stage ${stage.id}`);
      nodeIds.add(node.id);
    }
    if (
      stage.join === 'quorum' &&
      (stage.quorum === undefined || stage.quorum > (stage.nodes?.length ?? 0))
    ) {
      throw new Error(
        `stage ${stage.id}: a quorum join needs a quorum between 1 and its ${stage.nodes?.length ?? 0} nodes`,
      );
    }
    const previous = stages[index - 1];
    const dependsOn = stage.dependsOn ?? (previous === undefined ? [] : [previous.id]);
    for (const dependency of dependsOn) {
      // Only earlier stages may be depended on: that makes the graph acyclic by construction.
      if (!ids.has(dependency))
        throw new Error(
          `stage ${stage.id} depends on ${dependency}, which is not an earlier stage`,
        );
    }
    ids.add(stage.id);
    planned.push({ ...stage, dependsOn, final: false });
  }
  const dependedOn = new Set(planned.flatMap((s) => s.dependsOn));
  const sinks = planned.filter((s) => !dependedOn.has(s.id));
  if (sinks.length !== 1)
    throw new Error(
      `the plan must end in exactly one stage, it ends in ${sinks.map((s) => s.id).join(', ')}`,
    );
  const sink = sinks[0] as PlannedStage;
  if (sink.gate !== undefined)
    throw new Error(`the last stage ${sink.id} must run agents, not be an approval gate`);
  sink.final = true;
  return planned;
}

/**
 * Validates a planner agent's output as a plan.
 * @throws MeshError `invalid_output`-free: a terminal error whose message says what is wrong; the
 *   task then fails with `invalid_plan`.
 */
export function validatePlan(output: unknown): PlannedStage[] {
  if (!validatePlanShape(output))
    throw terminal(
      'bad_request',
      `the planner's plan is invalid: ${describeAjv(validatePlanShape.errors)}`,
    );
  try {
    return planStages(output.stages);
  } catch (error) {
    throw terminal('bad_request', `the planner's plan is invalid: ${(error as Error).message}`);
  }
}

export const defaultTemplatesDir = fileURLToPath(new URL('../templates/', import.meta.url));

export interface TemplateSet {
  templates: Map<string, Template>;
  defaultName: string;
}

/**
 * Loads and validates every `*.json` in `dir`.
 * @throws MeshError `config_invalid` naming the file and the fault — the service must not start.
 */
export function loadTemplates(dir: string, defaultName?: string): TemplateSet {
  const templates = new Map<string, Template>();
  let files: string[];
  try {
    files = readdirSync(dir)
      .filter((f) => f.endsWith('.json'))
      .sort();
  } catch (error) {
    throw new MeshError(
      'config_invalid',
      `templates directory ${dir} cannot be read: ${(error as Error).message}`,
    );
  }
  for (const file of files) {
    const fail = (why: string): never => {
      throw new MeshError('config_invalid', `template ${join(dir, file)}: ${why}`);
    };
    let parsed: unknown;
    try {
      parsed = JSON.parse(readFileSync(join(dir, file), 'utf8'));
    } catch (error) {
      fail(`not valid JSON: ${(error as Error).message}`);
    }
    if (!validateTemplateShape(parsed)) fail(describeAjv(validateTemplateShape.errors));
    const template = parsed as Template;
    if (templates.has(template.name)) fail(`a template named ${template.name} is already defined`);
    if (template.stages === undefined && template.planner === undefined)
      fail('needs stages or a planner');
    if (template.stages !== undefined) {
      try {
        planStages(template.stages);
      } catch (error) {
        fail((error as Error).message);
      }
    }
    templates.set(template.name, template);
  }
  if (templates.size === 0) throw new MeshError('config_invalid', `no templates in ${dir}`);
  const marked = [...templates.values()].filter((t) => t.default === true).map((t) => t.name);
  const chosen = defaultName ?? marked[0] ?? (templates.has('default') ? 'default' : undefined);
  if (chosen === undefined || !templates.has(chosen)) {
    throw new MeshError(
      'config_invalid',
      `default template ${chosen ?? '(none)'} is not among the templates in ${dir}`,
    );
  }
  return { templates, defaultName: chosen };
}
