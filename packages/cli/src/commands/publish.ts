/**
 * `mesh publish`: a task request from a JSON file or stdin, published to mesh.requests the way the
 * services publish — binary mode, `ce_` headers, the data in the Confluent wire format, validated by
 * the registered contract — or, with `--raw`, a whole CloudEvent as it is, in structured mode (what
 * `kcat -P -H content-type=application/cloudevents+json` sends).
 */
import { randomUUID } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { eventTypes } from '@mesh/contracts';
import { fromKafka, newEvent, structuredContentType } from '@mesh/envelope';
import { isMeshError } from '@mesh/errors';
import { expandTopic, flag, stringOption, type ParsedCommand } from '../args.ts';
import type { CliContext } from '../context.ts';
import { CliError, UsageError } from '../errors.ts';

/** The `source` of events the CLI creates. */
export const cliSource = '/mesh/cli';

export interface Input {
  /** How the input is named in messages: the path, or `stdin`. */
  name: string;
  text: string;
}

/** Reads the file, `-` (stdin), or stdin when no argument is given and stdin is not a terminal. */
export async function readInput(arg: string | undefined): Promise<Input> {
  if (arg === undefined && process.stdin.isTTY)
    throw new UsageError('give a JSON file to publish, or - to read stdin');
  if (arg === undefined || arg === '-') {
    const chunks: Buffer[] = [];
    for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
    return { name: 'stdin', text: Buffer.concat(chunks).toString('utf8') };
  }
  try {
    return { name: arg, text: await readFile(arg, 'utf8') };
  } catch (error) {
    const code = (error as { code?: unknown }).code;
    throw new CliError(
      code === 'ENOENT'
        ? `${arg} does not exist`
        : code === 'EISDIR'
          ? `${arg} is a directory, not a JSON file`
          : `cannot read ${arg}: ${(error as Error).message}`,
    );
  }
}

/** The input as a JSON object. @throws CliError `<name> is not valid JSON: …`. */
export function parseJsonObject(input: Input, what: string): Record<string, unknown> {
  let value: unknown;
  try {
    value = JSON.parse(input.text);
  } catch (error) {
    throw new CliError(`${input.name} is not valid JSON: ${(error as Error).message}`);
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value))
    throw new CliError(`${input.name} must hold a JSON object (${what})`);
  return value as Record<string, unknown>;
}

/** The contract error of `data` as the one line a person needs: which file, which field. */
function contractError(error: unknown, input: Input, type: string, ctx: CliContext): never {
  if (isMeshError(error) && error.code === 'schema_violation') {
    if (error.message.startsWith('no contract is registered'))
      throw new CliError(
        `no contract for ${type} is registered at ${ctx.config.mesh.registry.url}; register them with \`mesh schemas register\``,
      );
    throw new CliError(
      `${input.name} is not a valid ${type}: ${error.message.replace(/^data of \S+ breaks its contract: /, '')}`,
    );
  }
  if (isMeshError(error) && error.code === 'malformed_event')
    throw new CliError(`${input.name} is not a valid CloudEvent: ${error.message}`);
  throw error;
}

export async function publish(ctx: CliContext, parsed: ParsedCommand): Promise<void> {
  const { values } = parsed;
  const raw = flag(values, 'raw');
  for (const option of raw ? ['template', 'key'] : ['topic', 'new-id']) {
    if (values[option] !== undefined)
      throw new UsageError(`--${option} ${raw ? 'does not go with' : 'goes only with'} --raw`);
  }
  const input = await readInput(parsed.positionals[0]);
  if (raw) return publishStructured(ctx, parsed, input);

  const data = parseJsonObject(input, `the data of an ${eventTypes.taskRequested}`);
  const template = stringOption(values, 'template');
  if (template !== undefined) data.template = template;
  const event = newEvent({ type: eventTypes.taskRequested, source: cliSource, data });
  const key = stringOption(values, 'key');
  if (key !== undefined) {
    if (key === '') throw new UsageError('--key must not be empty');
    event.partitionkey = key;
  }
  const codec = await ctx.codec();
  let message;
  try {
    message = await ctx.registryStep(codec.encode(event));
  } catch (error) {
    contractError(error, input, event.type, ctx);
  }
  const topic = ctx.topics.requests;
  await ctx.requireTopics([topic]);
  const producer = await ctx.producer();
  await ctx.kafkaStep(
    producer.send([{ topic, key: message.key, value: message.value, headers: message.headers }]),
    Math.max(15_000, ctx.config.timeoutMs),
  );
  const taskId = event.correlationid ?? event.id;
  if (ctx.json) {
    ctx.emit({
      taskId,
      id: event.id,
      type: event.type,
      topic,
      key: message.key,
      mode: 'binary',
      dataschema: event.dataschema,
    });
    return;
  }
  ctx.print(taskId);
  ctx.note(`published ${event.type} to ${topic}; follow it with: mesh task ${taskId}`);
}

async function publishStructured(
  ctx: CliContext,
  parsed: ParsedCommand,
  input: Input,
): Promise<void> {
  const event = parseJsonObject(input, 'a whole CloudEvent');
  let text = input.text;
  if (flag(parsed.values, 'new-id')) {
    // A fresh id is a fresh task: the correlation and key that named the old one go with it.
    event.id = randomUUID();
    delete event.correlationid;
    delete event.partitionkey;
    delete event.subject;
    text = JSON.stringify(event);
  }
  const value = Buffer.from(text, 'utf8');
  const headers = { 'content-type': structuredContentType };
  // The same checks a consumer of the intake topic makes: a CloudEvent, and data that keeps its contract.
  let attributes;
  try {
    attributes = fromKafka({ key: null, value, headers }).attributes;
  } catch (error) {
    contractError(error, input, 'CloudEvent', ctx);
  }
  const codec = await ctx.codec();
  if (codec.registry.types.includes(attributes.type)) {
    try {
      await ctx.registryStep(codec.decode({ key: null, value, headers }, { intake: true }));
    } catch (error) {
      contractError(error, input, attributes.type, ctx);
    }
  }
  const topic = expandTopic(
    ctx.config.mesh.topicPrefix,
    stringOption(parsed.values, 'topic') ?? 'requests',
  );
  const taskId = attributes.correlationid ?? attributes.id;
  const key = attributes.partitionkey ?? taskId;
  await ctx.requireTopics([topic]);
  const producer = await ctx.producer();
  await ctx.kafkaStep(
    producer.send([{ topic, key, value, headers }]),
    Math.max(15_000, ctx.config.timeoutMs),
  );
  if (ctx.json) {
    ctx.emit({ taskId, id: attributes.id, type: attributes.type, topic, key, mode: 'structured' });
    return;
  }
  ctx.print(taskId);
  ctx.note(`published ${attributes.type} to ${topic} (structured mode)`);
}
