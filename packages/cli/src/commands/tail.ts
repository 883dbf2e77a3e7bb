/**
 * `mesh tail <topic>`: the events of a topic, decoded — type, id, key, hop count, agent, failure
 * headers and a summary of the data. A record that is not a mesh event, or breaks its contract, is
 * shown raw with the reason instead of stopping the tail.
 *
 * It reads with a throw-away consumer group (under the prefix, `cli.tail.<uuid>`, which `mesh lag`
 * leaves out) that never commits. Such a group starts at the earliest offset, so "the last n events"
 * and "only new events" are chosen by comparing offsets with the end offsets read at the start.
 */
import { randomUUID } from 'node:crypto';
import type { EventCodec } from '@mesh/contracts';
import { fromKafka, type MeshEventAttributes } from '@mesh/envelope';
import { isMeshError, safeDetail } from '@mesh/errors';
import { GroupConsumer, type ConsumedRecord } from '@mesh/kafka';
import { expandTopic, flag, parsePositiveInt, stringOption, type ParsedCommand } from '../args.ts';
import type { CliContext } from '../context.ts';
import { clock, summarize, truncate } from '../format.ts';

/** The group id prefix of tail's throw-away groups, under the topic prefix. */
export const tailGroupPrefix = 'cli.tail.';

export interface TailLine {
  topic: string;
  partition: number;
  offset: string;
  timestamp: string;
  key: string | null;
  mode?: 'binary' | 'structured';
  /** The schema id of a wire-format value. */
  schemaId?: number;
  event?: MeshEventAttributes & { data?: unknown };
  /** Why the record is shown raw or not fully validated. */
  error?: { code: string; message: string };
  headers?: Record<string, string>;
  value?: string;
}

function headerMap(headers: ConsumedRecord['headers']): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [name, value] of Object.entries(headers)) {
    if (value === undefined) continue;
    const one = Array.isArray(value) ? value[value.length - 1] : value;
    if (one !== undefined) out[name] = one.toString();
  }
  return out;
}

/** The value as text when it is printable UTF-8 (after a wire-format header), else base64. */
function valueText(value: Buffer | null): string | undefined {
  if (value === null) return undefined;
  const body = value[0] === 0 && value.length > 5 ? value.subarray(5) : value;
  try {
    const text = new TextDecoder('utf-8', { fatal: true }).decode(body);
    // eslint-disable-next-line no-control-regex
    if (!/[\u0000-\u0008\u000e-\u001f]/.test(text)) return text;
  } catch {
    // not UTF-8: fall through to base64
  }
  return `base64:${value.toString('base64')}`;
}

/** The data of a record read without the registry: wire header skipped, JSON parsed if it is. */
function looseData(value: Buffer | undefined, structured: unknown): unknown {
  if (structured !== undefined) return structured;
  if (value === undefined) return undefined;
  const text = valueText(value);
  if (text === undefined) return undefined;
  try {
    return JSON.parse(text) as unknown;
  } catch {
    return text;
  }
}

function errorOf(error: unknown): { code: string; message: string } {
  return isMeshError(error)
    ? { code: error.code, message: error.message }
    : { code: 'error', message: safeDetail(error) };
}

/**
 * Decodes one record for display. Never throws: what cannot be decoded is returned raw, with the
 * reason. `codec` is undefined when the registry cannot be reached; data is then shown unvalidated.
 */
export async function decodeRecord(
  record: ConsumedRecord,
  codec: EventCodec | undefined,
  options: { intake: boolean; maxBytes?: number },
): Promise<TailLine> {
  const base: TailLine = {
    topic: record.topic,
    partition: record.partition,
    offset: record.offset,
    timestamp: new Date(Number(record.timestamp)).toISOString(),
    key: record.key === null ? null : record.key.toString('utf8'),
  };
  const message = { key: record.key, value: record.value, headers: record.headers };
  let decoded;
  try {
    decoded = fromKafka(
      message,
      options.maxBytes === undefined ? {} : { maxBytes: options.maxBytes },
    );
  } catch (error) {
    const value = valueText(record.value);
    return {
      ...base,
      error: errorOf(error),
      headers: headerMap(record.headers),
      ...(value === undefined ? {} : { value }),
    };
  }
  const line: TailLine = { ...base, mode: decoded.mode };
  if (decoded.value !== undefined && decoded.value[0] === 0 && decoded.value.length >= 5)
    line.schemaId = decoded.value.readUInt32BE(1);
  if (codec === undefined) {
    line.event = { ...decoded.attributes, data: looseData(decoded.value, decoded.data) };
    line.error = { code: 'unvalidated', message: 'the schema registry is unreachable' };
    return line;
  }
  try {
    const event = await codec.decode(message, { intake: options.intake });
    line.event = event;
  } catch (error) {
    line.event = { ...decoded.attributes, data: looseData(decoded.value, decoded.data) };
    line.error = errorOf(error);
  }
  return line;
}

/** One line of text for a decoded record. */
export function renderLine(line: TailLine): string {
  const where = `p${line.partition}@${line.offset} ${clock(line.timestamp)}`;
  const key = `key=${line.key ?? '∅'}`;
  const event = line.event;
  if (event === undefined) {
    const headers =
      Object.keys(line.headers ?? {}).length > 0 ? ` headers=${summarize(line.headers, 80)}` : '';
    return `${where} RAW ${key} (${line.error?.code}: ${line.error?.message})${headers} value=${truncate((line.value ?? '∅').replace(/\s+/g, ' ').trim(), 100)}`;
  }
  const parts = [where, event.type, `id=${event.id}`, key];
  if (event.hopcount !== undefined) parts.push(`hop=${event.hopcount}`);
  if (event.agent !== undefined) parts.push(`agent=${event.agent}`);
  if (event.meshattempt !== undefined) parts.push(`attempt=${event.meshattempt}`);
  if (event.meshfailure !== undefined)
    parts.push(
      `FAILURE ${event.meshfailure}${event.meshfailuredetail === undefined ? '' : ` "${truncate(event.meshfailuredetail, 80)}"`}`,
    );
  if (event.meshfailedby !== undefined) parts.push(`by=${event.meshfailedby}`);
  if (event.meshorigintopic !== undefined) parts.push(`origin=${event.meshorigintopic}`);
  if (event.meshnotbefore !== undefined) parts.push(`notbefore=${event.meshnotbefore}`);
  if (line.mode === 'structured') parts.push('(structured)');
  if (line.error !== undefined) parts.push(`(${line.error.code}: ${line.error.message})`);
  parts.push(`data=${summarize(event.data, 120)}`);
  return parts.join(' ');
}

interface PartitionWindow {
  /** First offset to show. */
  from: number;
  /** End offset when the tail started: history is below it, new events at or above. */
  end: number;
}

export async function tail(ctx: CliContext, parsed: ParsedCommand): Promise<void> {
  const { values } = parsed;
  const prefix = ctx.config.mesh.topicPrefix;
  const topic = expandTopic(prefix, parsed.positionals[0] ?? '');
  const follow = flag(values, 'follow');
  const fromBeginning = flag(values, 'from-beginning');
  const limitText = stringOption(values, 'limit');
  const limit =
    limitText === undefined
      ? follow || fromBeginning
        ? undefined
        : 10
      : parsePositiveInt(limitText, '--limit');

  await ctx.requireTopics([topic]);
  const admin = await ctx.admin();
  const ends = await ctx.kafkaStep(admin.endOffsets(topic));
  const windows = new Map<number, PartitionWindow>();
  for (const { partition, low, high } of ends) {
    const from = fromBeginning ? low : follow ? high : Math.max(low, high - (limit ?? 0));
    windows.set(partition, { from, end: high });
  }
  let codec: EventCodec | undefined;
  try {
    codec = await ctx.codec();
  } catch (error) {
    ctx.note(`mesh: ${(error as Error).message}; data is shown without validation`);
  }
  const intake = topic === ctx.topics.requests;
  const maxBytes = ctx.config.mesh.maxEventBytes;

  // History not shown yet, per partition: done when every partition has reached its start end offset.
  const pending = new Set(
    [...windows].filter(([, w]) => !follow && w.end > w.from).map(([p]) => p),
  );
  if (!follow && pending.size === 0) {
    if (!ctx.json) ctx.note(`mesh: ${topic} has no events${fromBeginning ? '' : ' to show'}`);
    return;
  }

  let shown = 0;
  const lastN: TailLine[] = [];
  const collectLast = !follow && !fromBeginning;
  const show = (line: TailLine): void => {
    shown += 1;
    if (ctx.json) ctx.emit(line);
    else ctx.print(renderLine(line));
  };

  let finish: () => void = () => undefined;
  const finished = new Promise<void>((resolve) => {
    finish = resolve;
  });
  const queue: ConsumedRecord[] = [];
  let draining = false;
  let done = false;
  let lastProgress = Date.now();
  const drain = async (): Promise<void> => {
    if (draining) return;
    draining = true;
    try {
      while (!done && queue.length > 0) {
        const record = queue.shift() as ConsumedRecord;
        const offset = Number(record.offset);
        const window = windows.get(record.partition) ?? { from: 0, end: 0 };
        const isHistory = offset < window.end;
        if (offset >= window.from && (follow ? !isHistory || fromBeginning : isHistory)) {
          const line = await decodeRecord(record, codec, { intake, maxBytes });
          if (collectLast) lastN.push(line);
          else show(line);
          if (limit !== undefined && !collectLast && shown >= limit) {
            done = true;
            break;
          }
        }
        if (!follow && offset >= window.end - 1) pending.delete(record.partition);
        if (!follow && pending.size === 0) {
          done = true;
          break;
        }
        lastProgress = Date.now();
      }
    } finally {
      draining = false;
    }
    if (done) finish();
  };

  const consumer = new GroupConsumer(ctx.kafka, {
    groupId: `${prefix}${tailGroupPrefix}${randomUUID()}`,
    sessionTimeoutMs: 10_000,
    heartbeatIntervalMs: 1_000,
    maxWaitTimeMs: 250,
  });
  ctx.onClose(() => consumer.stop());
  const onSignal = (): void => {
    done = true;
    finish();
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  let failure: Error | undefined;
  await ctx.kafkaStep(
    consumer.start([topic], {
      take: (_topic, _partition, records) => {
        if (done) return records.length;
        queue.push(...records);
        drain().catch((error: unknown) => {
          failure = error instanceof Error ? error : new Error(String(error));
          done = true;
          finish();
        });
        return records.length;
      },
      assigned: () => undefined,
    }),
    Math.max(30_000, ctx.config.timeoutMs),
  );
  // A history read that stops making progress (a partition whose last offsets never arrive) ends
  // with a note instead of hanging.
  const idleMs = Math.max(30_000, ctx.config.timeoutMs * 3);
  const watchdog = follow
    ? undefined
    : setInterval(() => {
        if (Date.now() - lastProgress > idleMs) {
          ctx.note(
            `mesh: no progress for ${Math.round(idleMs / 1000)}s; partitions ${[...pending].join(', ')} did not reach their end offset`,
          );
          done = true;
          finish();
        }
      }, 1_000);
  await finished;
  clearInterval(watchdog);
  process.off('SIGINT', onSignal);
  process.off('SIGTERM', onSignal);
  if (failure !== undefined) throw failure;
  if (collectLast) {
    lastN.sort(
      (a, b) => Date.parse(a.timestamp) - Date.parse(b.timestamp) || a.partition - b.partition,
    );
    for (const line of lastN.slice(-(limit ?? lastN.length))) show(line);
  }
}
