/**
 * DLQ triage: every dead letter is recorded, classified and remediated — re-dispatched through a
 * retry tier (with a truncation or stricter-output flag, or on the fallback model), escalated to a
 * human, or parked — and the retry tiers are drained back to each event's origin topic when due.
 *
 * Both consumers take raw records (a dead letter may be anything) and retry any error in place: a
 * dead letter is never dropped and never dead-lettered again.
 */
import { createHash } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import type { MeshConfig } from '@mesh/config';
import { deriveEvent, newEvent, type MeshEvent } from '@mesh/envelope';
import { isFailureClass, isMeshError, safeDetail, type FailureClass } from '@mesh/errors';
import {
  isRecordTooLarge,
  sendDeadLetter,
  type ConsumedRecord,
  type MeshRuntime,
  type RawContext,
} from '@mesh/runtime';
import { Counter, Gauge } from 'prom-client';
import { decide, type CompiledRule, type Decision } from './rules.ts';
import type { DeadLetter, DeadLetterStore } from './store.ts';

export const source = '/mesh/dlq-triage';

/** Headers describing a failure; removed when an event is sent back to its origin. */
const failureHeaders = [
  'ce_meshfailure',
  'ce_meshfailuredetail',
  'ce_meshfailedby',
  'ce_meshorigintopic',
  'ce_meshnotbefore',
];

export function headerText(record: ConsumedRecord, name: string): string | undefined {
  const value = record.headers[name];
  const one = Array.isArray(value) ? value[value.length - 1] : value;
  return one === undefined ? undefined : one.toString();
}

function headersOf(record: ConsumedRecord): Record<string, string> {
  const out: Record<string, string> = {};
  for (const name of Object.keys(record.headers)) {
    const text = headerText(record, name);
    if (text !== undefined) out[name] = text;
  }
  return out;
}

export interface TriageOptions {
  rules: CompiledRule[];
  maxRemediations: number;
  fallbackModel?: string;
}

export interface TriageMetrics {
  deadLetters: Counter<'failure'>;
  remediations: Counter<'action'>;
  parked: Gauge;
  replays: Counter<'outcome'>;
  redispatched: Counter<'tier'>;
}

export function createTriageMetrics(runtime: MeshRuntime): TriageMetrics {
  const registers = [runtime.metrics.registry];
  return {
    deadLetters: new Counter({
      name: 'mesh_triage_dead_letters_total',
      help: 'Dead letters triaged, by failure class.',
      labelNames: ['failure'],
      registers,
    }),
    remediations: new Counter({
      name: 'mesh_triage_remediations_total',
      help: 'Remediations applied, by action.',
      labelNames: ['action'],
      registers,
    }),
    parked: new Gauge({
      name: 'mesh_triage_parked',
      help: 'Dead letters parked or escalated and not yet replayed or discarded.',
      registers,
    }),
    replays: new Counter({
      name: 'mesh_triage_replays_total',
      help: 'Replays of dead letters, by outcome.',
      labelNames: ['outcome'],
      registers,
    }),
    redispatched: new Counter({
      name: 'mesh_triage_redispatched_total',
      help: 'Retried events sent back to their origin topic, by tier.',
      labelNames: ['tier'],
      registers,
    }),
  };
}

export class Triage {
  readonly #runtime: MeshRuntime;
  readonly #config: MeshConfig;
  readonly #store: DeadLetterStore;
  readonly #options: TriageOptions;
  readonly metrics: TriageMetrics;

  constructor(
    runtime: MeshRuntime,
    store: DeadLetterStore,
    options: TriageOptions,
    metrics: TriageMetrics,
  ) {
    this.#runtime = runtime;
    this.#config = runtime.config;
    this.#store = store;
    this.#options = options;
    this.metrics = metrics;
  }

  /** Only topics of this mesh that carry work may receive a re-dispatched event. */
  isDispatchTopic(topic: string | undefined): topic is string {
    if (topic === undefined) return false;
    const t = this.#runtime.topics;
    return (
      t.agentOf(topic) !== undefined || [t.requests, t.results, t.stages, t.control].includes(topic)
    );
  }

  async #decode(record: ConsumedRecord): Promise<MeshEvent | undefined> {
    try {
      return await this.#runtime.codec.decode(record, {
        intake: record.topic === this.#runtime.topics.requests,
      });
    } catch {
      return undefined;
    }
  }

  // ── mesh.dlq ──────────────────────────────────────────────────────────────────────────────────

  /** Records, classifies and remediates one dead letter. Idempotent per mesh.dlq offset. */
  onDeadLetter = async (record: ConsumedRecord, ctx: RawContext): Promise<void> => {
    const id = createHash('sha1')
      .update(`${record.topic}/${record.partition}/${record.offset}`)
      .digest('hex')
      .slice(0, 20);
    if ((await this.#store.get(id)) !== undefined) return;
    const headers = headersOf(record);
    const failureText = headers.ce_meshfailure ?? 'malformed_event';
    const failure: FailureClass = isFailureClass(failureText) ? failureText : 'handler_error';
    const originTopic = headers.ce_meshorigintopic;
    // Decode as it was on its origin topic (structured mode and plain JSON are accepted on intake).
    const event = await this.#decode({ ...record, topic: originTopic ?? record.topic });
    const eventId = headers.ce_id ?? event?.id ?? id;
    const letter: DeadLetter = {
      id,
      failure,
      detail: safeDetail(headers.ce_meshfailuredetail ?? ''),
      ...(headers.ce_meshfailedby === undefined ? {} : { failedBy: headers.ce_meshfailedby }),
      ...(originTopic === undefined ? {} : { originTopic }),
      ...(headers.ce_type === undefined ? {} : { type: headers.ce_type }),
      eventId,
      ...(event?.correlationid === undefined ? {} : { taskId: event.correlationid }),
      ...((event?.agent ??
        (originTopic === undefined ? undefined : this.#runtime.topics.agentOf(originTopic))) ===
      undefined
        ? {}
        : { agent: event?.agent ?? this.#runtime.topics.agentOf(originTopic ?? '') }),
      ...(event?.meshattempt === undefined ? {} : { attempt: event.meshattempt }),
      at: deadLetteredAt(record),
      status: 'parked',
      action: 'pending',
      reason: '',
      history: [],
      partition: record.partition,
      offset: record.offset,
      key: record.key?.toString() ?? null,
      value: (record.value ?? Buffer.alloc(0)).toString('base64'),
      headers,
    };
    this.metrics.deadLetters.inc({ failure });
    const decision = decide(
      {
        failure,
        detail: letter.detail,
        remediations: await this.#store.remediations(eventId),
        maxRemediations: this.#options.maxRemediations,
        ...(this.#options.fallbackModel === undefined
          ? {}
          : { fallbackModel: this.#options.fallbackModel }),
        onFallback:
          this.#options.fallbackModel !== undefined &&
          (event?.data as { model?: string } | undefined)?.model === this.#options.fallbackModel,
        retriable: event !== undefined && this.isDispatchTopic(originTopic),
      },
      this.#options.rules,
    );
    letter.action = decision.action;
    letter.reason = decision.reason;
    await this.#apply(letter, decision, record, event);
    await this.#store.add(letter);
    ctx.log.info(
      { deadLetter: id, failure, action: decision.action, reason: decision.reason, eventId },
      'dead letter triaged',
    );
  };

  async #apply(
    letter: DeadLetter,
    decision: Decision,
    record: ConsumedRecord,
    event: MeshEvent | undefined,
  ): Promise<void> {
    this.metrics.remediations.inc({ action: decision.action });
    const note = `${decision.action}: ${decision.reason}`;
    switch (decision.action) {
      case 'retry':
      case 'retry-truncated':
      case 'retry-strict':
      case 'fallback': {
        await this.#store.nextRemediation(letter.eventId ?? letter.id);
        await this.#sendToTier(
          record,
          letter,
          event,
          decision.action === 'fallback' ? this.#options.fallbackModel : undefined,
        );
        letter.status = 'retrying';
        break;
      }
      case 'escalate':
        await this.#escalate(letter, event, decision.reason);
        letter.status = 'escalated';
        this.metrics.parked.inc();
        break;
      case 'park':
        letter.status = 'parked';
        this.metrics.parked.inc();
        break;
    }
    letter.history.push({ at: new Date().toISOString(), status: letter.status, note });
  }

  /**
   * Sends a dead letter back through the first retry tier with a fresh attempt count: the retry
   * consumer re-dispatches it when due, setting the flag its failure class calls for.
   */
  async #sendToTier(
    record: ConsumedRecord,
    letter: DeadLetter,
    event: MeshEvent | undefined,
    model: string | undefined,
  ): Promise<void> {
    const tier = this.#config.retryTiers[0];
    if (tier === undefined) throw new Error('no retry tier configured');
    let value = record.value ?? Buffer.alloc(0);
    const headers = { ...letter.headers };
    if (model !== undefined && event !== undefined) {
      const changed: MeshEvent = { ...event, data: { ...(event.data as object), model } };
      const message = await this.#runtime.codec.encode(changed);
      value = message.value;
      Object.assign(headers, message.headers);
    }
    headers.ce_meshattempt = '1';
    headers.ce_meshnotbefore = new Date(Date.now() + tier.delayMs).toISOString();
    await this.#runtime.producer.send([
      { topic: this.#runtime.topics.retry(tier.name), key: letter.key, value, headers },
    ]);
    this.#runtime.metrics.retries.inc({ tier: tier.name });
  }

  async #escalate(letter: DeadLetter, event: MeshEvent | undefined, reason: string): Promise<void> {
    const data = {
      eventId: letter.eventId ?? letter.id,
      eventType: letter.type ?? 'unknown',
      failure: letter.failure as FailureClass,
      detail: letter.detail.slice(0, 2000),
      reason: reason.slice(0, 2000),
      attempts: letter.attempt ?? 0,
      ...(letter.taskId === undefined ? {} : { taskId: letter.taskId }),
      ...(letter.originTopic === undefined ? {} : { originTopic: letter.originTopic }),
      ...(letter.agent === undefined || !/^[a-z0-9][a-z0-9._-]{0,62}$/.test(letter.agent)
        ? {}
        : { agent: letter.agent }),
    };
    const escalation =
      event === undefined
        ? newEvent({
            type: 'io.mesh.escalation.opened',
            source,
            data,
            id: `escalation-${letter.id}`,
            ...(letter.key === null ? {} : { correlationid: letter.key }),
          })
        : deriveEvent(event, {
            type: 'io.mesh.escalation.opened',
            source,
            data,
            discriminator: `escalation:${letter.id}`,
          });
    await this.#runtime.publish([{ topic: this.#runtime.topics.escalations, event: escalation }]);
    await this.#store.addEscalation({
      id: escalation.id,
      at: new Date().toISOString(),
      deadLetterId: letter.id,
      ...data,
    });
  }

  // ── retry tiers ───────────────────────────────────────────────────────────────────────────────

  /**
   * Holds a retried event until its `meshnotbefore`, then sends it back to its origin topic. A tier
   * has one fixed delay, so its events come due in order: while the head waits, the partition's
   * later events wait behind it in the runtime's bounded buffer (the partition is paused when full),
   * and the consumer keeps heartbeating because holding is not done in the fetch loop.
   */
  onRetry = async (record: ConsumedRecord, ctx: RawContext): Promise<void> => {
    const headers = headersOf(record);
    const due = Date.parse(headers.ce_meshnotbefore ?? '');
    if (Number.isFinite(due) && due > Date.now())
      await sleep(due - Date.now(), undefined, { signal: ctx.signal });
    const origin = headers.ce_meshorigintopic;
    if (!this.isDispatchTopic(origin)) {
      await this.#undeliverable(
        record,
        `retry record without a valid meshorigintopic (${safeDetail(origin ?? 'none', 80)})`,
      );
      return;
    }
    let value = record.value ?? Buffer.alloc(0);
    const flag =
      headers.ce_meshfailure === 'context_overflow'
        ? 'truncateContext'
        : headers.ce_meshfailure === 'invalid_output'
          ? 'strictOutput'
          : undefined;
    if (flag !== undefined && headers.ce_type === 'io.mesh.subtask.assigned') {
      const event = await this.#decode({ ...record, topic: origin });
      if (event !== undefined) {
        const data = event.data as { flags?: Record<string, boolean> };
        const message = await this.#runtime.codec.encode({
          ...event,
          data: { ...data, flags: { ...data.flags, [flag]: true } },
        });
        value = message.value;
        headers.ce_dataschema = message.headers.ce_dataschema ?? headers.ce_dataschema ?? '';
      }
    }
    for (const name of failureHeaders) delete headers[name];
    try {
      await this.#runtime.producer.send([
        { topic: origin, key: record.key?.toString() ?? null, value, headers },
      ]);
    } catch (error) {
      // Retrying in place would hold the partition for ever: the event, with the flag it was given,
      // is too large for Kafka, or its agent's topic is gone (or never was).
      if (isRecordTooLarge(error)) {
        await this.#undeliverable(
          record,
          `too large to send back to ${origin}: ${safeDetail(error)}`,
          origin,
        );
        return;
      }
      if (!isMeshError(error) || error.code !== 'not_found') throw error;
      // Recorded with its origin, so that once the topic exists again an operator can replay it.
      await this.#undeliverable(record, `origin topic ${origin} does not exist`, origin);
      return;
    }
    const tier = record.topic.slice(`${this.#config.topicPrefix}retry.`.length);
    this.metrics.redispatched.inc({ tier });
  };

  /** A retry record that cannot go back to its origin becomes a dead letter, with the reason. */
  async #undeliverable(
    record: ConsumedRecord,
    detail: string,
    origin = record.topic,
  ): Promise<void> {
    await sendDeadLetter(this.#runtime.producer, record, {
      topic: this.#runtime.topics.dlq,
      key: record.key?.toString() ?? null,
      value: record.value ?? Buffer.alloc(0),
      headers: {
        ...headersOf(record),
        ce_meshfailure: 'malformed_event',
        ce_meshfailuredetail: detail,
        ce_meshfailedby: `dlq-triage/${this.#runtime.groupId('dlq-triage.retry')}`,
        ce_meshorigintopic: origin,
      },
    });
  }

  // ── operators ─────────────────────────────────────────────────────────────────────────────────

  /**
   * Sends a stored dead letter back to its origin topic (or `topic`) as it was, with a fresh attempt
   * count, after clearing the failed group's done marker so the event runs again.
   */
  async replay(letter: DeadLetter, topic?: string): Promise<{ topic: string }> {
    const target = topic ?? letter.originTopic;
    if (!this.isDispatchTopic(target))
      throw new Error(
        `${target ?? 'no origin topic'} is not a topic a dead letter can be replayed to`,
      );
    const headers = { ...letter.headers };
    for (const name of failureHeaders) delete headers[name];
    headers.ce_meshattempt = '1';
    const group = letter.failedBy?.split('/')[1];
    if (group !== undefined && letter.eventId !== undefined)
      await this.#store.forgetDone(this.#runtime.idempotency.key(group, letter.eventId));
    try {
      await this.#runtime.producer.send(
        [{ topic: target, key: letter.key, value: Buffer.from(letter.value, 'base64'), headers }],
        this.#runtime.httpWrite(),
      );
    } catch (error) {
      this.metrics.replays.inc({ outcome: 'failed' });
      throw error;
    }
    this.metrics.replays.inc({ outcome: 'replayed' });
    if (letter.status === 'parked' || letter.status === 'escalated') this.metrics.parked.dec();
    return { topic: target };
  }

  async discard(letter: DeadLetter): Promise<void> {
    if (letter.status === 'parked' || letter.status === 'escalated') this.metrics.parked.dec();
    this.metrics.replays.inc({ outcome: 'discarded' });
  }

  /** Sets the parked gauge from the store (at start, so it survives restarts). */
  async refreshParked(): Promise<void> {
    const counts = await this.#store.countByStatus();
    this.metrics.parked.set((counts.parked ?? 0) + (counts.escalated ?? 0));
  }
}

/**
 * When the event was dead-lettered: the time of its record on mesh.dlq, so that letters read late
 * (dlq-triage was down, or lagging) keep their order and their age; now, for a record without one.
 */
function deadLetteredAt(record: ConsumedRecord): string {
  const ms = Number(record.timestamp);
  return new Date(Number.isFinite(ms) && ms > 0 ? ms : Date.now()).toISOString();
}
