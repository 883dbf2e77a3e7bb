/**
 * How a subtask becomes a chat-completion request, and how the answer becomes an output: a system
 * prompt naming the agent and the expected JSON, the input as JSON in the user message (cut to
 * size when the subtask asks for truncated context), and the reply parsed as one JSON object.
 */
import { retryable } from '@mesh/errors';

export interface ChatMessage {
  role: 'system' | 'user';
  content: string;
}

export interface PromptOptions {
  agent: string;
  outputSchema?: Record<string, unknown>;
  strictOutput: boolean;
  /** When set, the input JSON is cut to at most this many characters. */
  maxInputChars?: number;
}

export interface Prompt {
  messages: ChatMessage[];
  /** `response_format` of the request, only with `strictOutput` (not every provider has it). */
  responseFormat?: Record<string, unknown>;
  /** True when the input had to be cut. */
  truncated: boolean;
}

/** Marks the output schema in the system prompt; the fake LLM looks for it to answer in shape. */
export const schemaMarker = 'The JSON object must satisfy this JSON Schema:';

const truncationMark = '…[truncated]';

/**
 * `value` as JSON of at most `maxChars` characters, still valid JSON where it can be: the longest
 * strings are shortened first, then the longest arrays lose their tail items; only if that is not
 * enough is the text itself cut (and marked).
 */
export function truncateJson(
  value: unknown,
  maxChars: number,
): { text: string; truncated: boolean } {
  let text = JSON.stringify(value) ?? 'null';
  if (text.length <= maxChars) return { text, truncated: false };
  const current: unknown = structuredClone(value);
  for (let round = 0; round < 500 && text.length > maxChars; round += 1) {
    const leaf = longestLeaf(current);
    if (leaf === undefined) break;
    const excess = text.length - maxChars;
    if (leaf.kind === 'string') {
      const s = leaf.holder[leaf.key] as string;
      leaf.holder[leaf.key] =
        `${s.slice(0, Math.max(0, s.length - excess - truncationMark.length))}${truncationMark}`;
    } else {
      const a = leaf.holder[leaf.key] as unknown[];
      a.splice(Math.floor(a.length / 2));
      a.push(truncationMark);
    }
    text = JSON.stringify(current) ?? 'null';
  }
  if (text.length > maxChars)
    text = `${text.slice(0, Math.max(0, maxChars - truncationMark.length))}${truncationMark}`;
  return { text, truncated: true };
}

interface Leaf {
  holder: Record<string | number, unknown>;
  key: string | number;
  size: number;
  kind: 'string' | 'array';
}

/**
 * The longest string over 64 characters inside `value`, else its longest array of three or more
 * items (cutting either always shrinks the JSON).
 */
function longestLeaf(value: unknown): Leaf | undefined {
  let best: Leaf | undefined;
  let bestArray: Leaf | undefined;
  const visit = (holder: Record<string | number, unknown>, key: string | number): void => {
    const item = holder[key];
    if (typeof item === 'string') {
      if (item.length > (best?.size ?? 64))
        best = { holder, key, size: item.length, kind: 'string' };
    } else if (Array.isArray(item)) {
      const size = (JSON.stringify(item) ?? '').length;
      if (item.length > 2 && size > (bestArray?.size ?? 0))
        bestArray = { holder, key, size, kind: 'array' };
      item.forEach((_, i) => visit(item as unknown as Record<number, unknown>, i));
    } else if (typeof item === 'object' && item !== null) {
      for (const k of Object.keys(item)) visit(item as Record<string, unknown>, k);
    }
  };
  visit({ root: value }, 'root');
  return best ?? bestArray;
}

/** The chat messages (and response format) for one subtask. */
export function buildPrompt(input: Record<string, unknown>, options: PromptOptions): Prompt {
  const lines = [
    `You are "${options.agent}", one agent of a multi-agent workflow.`,
    'The user message is the JSON input of your subtask: "task" is the original request, "previous" holds the outputs of earlier stages by stage and node, and any other field is specific to your step.',
    'Do the subtask and answer with one JSON object.',
  ];
  if (options.strictOutput)
    lines.push(
      'Your whole reply must be a single JSON object: no prose, no Markdown, no code fences, nothing before or after it.',
      'Every required property must be present, with the type the schema gives it; add no property the schema does not allow.',
    );
  const { text, truncated } =
    options.maxInputChars === undefined
      ? { text: JSON.stringify(input), truncated: false }
      : truncateJson(input, options.maxInputChars);
  if (truncated)
    lines.push(
      `The input was too long and has been shortened; parts marked ${truncationMark} are cut.`,
    );
  if (options.outputSchema !== undefined)
    lines.push(`${schemaMarker}\n${JSON.stringify(options.outputSchema)}`);
  const prompt: Prompt = {
    messages: [
      { role: 'system', content: lines.join('\n') },
      { role: 'user', content: text },
    ],
    truncated,
  };
  if (options.strictOutput)
    prompt.responseFormat =
      options.outputSchema === undefined
        ? { type: 'json_object' }
        : {
            type: 'json_schema',
            json_schema: { name: 'output', schema: options.outputSchema, strict: false },
          };
  return prompt;
}

/**
 * The JSON object in a model's reply. A reply wrapped in one Markdown code fence is accepted.
 * @throws MeshError `invalid_output` (retryable) when it is not JSON or not an object.
 */
export function parseOutput(content: unknown): Record<string, unknown> {
  if (typeof content !== 'string' || content.trim() === '')
    throw retryable('invalid_output', 'the model returned no content');
  let text = content.trim();
  const fenced = /^```[a-zA-Z]*\s*\n([\s\S]*?)\n?```$/.exec(text);
  if (fenced?.[1] !== undefined) text = fenced[1].trim();
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (error) {
    throw retryable(
      'invalid_output',
      `the model's reply is not JSON (${(error as Error).message})`,
    );
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value))
    throw retryable(
      'invalid_output',
      `the model's reply is JSON but not an object (${Array.isArray(value) ? 'an array' : typeof value})`,
    );
  return value as Record<string, unknown>;
}

/** A rough token count (4 characters a token), for rate-limit reservations and missing usage. */
export function estimateTokens(text: string): number {
  return Math.ceil(text.length / 4);
}
