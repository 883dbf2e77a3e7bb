/**
 * The contract's metrics (docs/contract.md, "Metrics"), with the same names in every service.
 * Each service owns one prom-client registry, so tests can run several services in one process.
 */
import {
  Counter,
  Gauge,
  Histogram,
  Registry,
  collectDefaultMetrics,
  type LabelValues,
} from 'prom-client';

interface Cell<L extends string> {
  labels: LabelValues<L>;
  n: number;
}

/**
 * Counts of one metric kept per label set in plain numbers and handed to prom-client when it is
 * collected (each scrape): prom-client builds a key of the whole label set on every `inc`, which
 * the consumer runtime would pay several times per event. Here a label set of two or three labels
 * costs as many map lookups, and nothing is allocated once it was seen.
 */
class Tally<L extends string> {
  readonly #names: readonly L[];
  readonly #cells = new Map<string, Map<string, Map<string, Cell<L>>>>();

  constructor(...names: [L, L] | [L, L, L]) {
    this.#names = names;
  }

  add(n: number, a: string, b: string, c = ''): void {
    let byB = this.#cells.get(a);
    if (byB === undefined) this.#cells.set(a, (byB = new Map<string, Map<string, Cell<L>>>()));
    let byC = byB.get(b);
    if (byC === undefined) byB.set(b, (byC = new Map<string, Cell<L>>()));
    const cell = byC.get(c);
    if (cell !== undefined) {
      cell.n += n;
      return;
    }
    const values = [a, b, c];
    const labels: Record<string, string> = {};
    for (let i = 0; i < this.#names.length; i += 1)
      labels[this.#names[i] as string] = values[i] as string;
    byC.set(c, { labels: labels as LabelValues<L>, n });
  }

  /** Each label set and its count; `reset` zeroes them (a counter takes deltas, a gauge totals). */
  *cells(reset: boolean): Generator<Cell<L>> {
    for (const byB of this.#cells.values())
      for (const byC of byB.values())
        for (const cell of byC.values()) {
          yield { labels: cell.labels, n: cell.n };
          if (reset) cell.n = 0;
        }
  }
}

export interface MeshMetrics {
  registry: Registry;
  /**
   * The hot path's `consumed.inc`, `produced.inc` and `inflight.inc/dec`: gathered in plain numbers
   * and added to those metrics when they are collected, so that a scrape sees every one of them.
   */
  countConsumed(service: string, topic: string, type: string): void;
  countProduced(service: string, topic: string, type: string): void;
  addInflight(service: string, agent: string, delta: number): void;
  consumed: Counter<'service' | 'topic' | 'type'>;
  produced: Counter<'service' | 'topic' | 'type'>;
  handlerDuration: Histogram<'service' | 'agent'>;
  dlq: Counter<'service' | 'failure'>;
  retries: Counter<'tier'>;
  idempotentSkips: Counter<'service'>;
  inflight: Gauge<'service' | 'agent'>;
  consumerLag: Gauge<'group' | 'topic' | 'partition'>;
  consumerLagSeconds: Gauge<'group' | 'topic' | 'partition'>;
  loopGuards: Counter<'service' | 'failure'>;
  /** 1 or 0 per readiness check (kafka, redis, registry, consumers) at the service's last look. */
  ready: Gauge<'service' | 'check'>;
}

export function createMetrics(options: { defaultMetrics?: boolean } = {}): MeshMetrics {
  const registry = new Registry();
  if (options.defaultMetrics ?? true) collectDefaultMetrics({ register: registry });
  const registers = [registry];
  const consumed = new Tally('service', 'topic', 'type');
  const produced = new Tally('service', 'topic', 'type');
  const inflight = new Tally('service', 'agent');
  return {
    registry,
    countConsumed: (service, topic, type) => consumed.add(1, service, topic, type),
    countProduced: (service, topic, type) => produced.add(1, service, topic, type),
    addInflight: (service, agent, delta) => inflight.add(delta, service, agent),
    consumed: new Counter({
      name: 'mesh_events_consumed_total',
      help: 'Events consumed, by topic and type.',
      labelNames: ['service', 'topic', 'type'],
      registers,
      collect() {
        for (const { labels, n } of consumed.cells(true)) if (n > 0) this.inc(labels, n);
      },
    }),
    produced: new Counter({
      name: 'mesh_events_produced_total',
      help: 'Events produced and acknowledged by Kafka.',
      labelNames: ['service', 'topic', 'type'],
      registers,
      collect() {
        for (const { labels, n } of produced.cells(true)) if (n > 0) this.inc(labels, n);
      },
    }),
    handlerDuration: new Histogram({
      name: 'mesh_handler_duration_seconds',
      help: 'Time a handler took, by agent.',
      labelNames: ['service', 'agent'],
      buckets: [0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300],
      registers,
    }),
    dlq: new Counter({
      name: 'mesh_dlq_total',
      help: 'Events sent to mesh.dlq, by failure class.',
      labelNames: ['service', 'failure'],
      registers,
    }),
    retries: new Counter({
      name: 'mesh_retries_total',
      help: 'Events sent to a retry tier.',
      labelNames: ['tier'],
      registers,
    }),
    idempotentSkips: new Counter({
      name: 'mesh_idempotent_skips_total',
      help: 'Redelivered events skipped because their group already completed them.',
      labelNames: ['service'],
      registers,
    }),
    inflight: new Gauge({
      name: 'mesh_inflight',
      help: 'Events taken by the runtime and not yet finished.',
      labelNames: ['service', 'agent'],
      registers,
      collect() {
        for (const { labels, n } of inflight.cells(false)) this.set(labels, n);
      },
    }),
    consumerLag: new Gauge({
      name: 'mesh_consumer_lag',
      help: 'End offset minus committed offset, from the broker.',
      labelNames: ['group', 'topic', 'partition'],
      registers,
    }),
    consumerLagSeconds: new Gauge({
      name: 'mesh_consumer_lag_seconds',
      help: 'Estimated age of the oldest unconsumed event (interpolated from offset/time samples).',
      labelNames: ['group', 'topic', 'partition'],
      registers,
    }),
    loopGuards: new Counter({
      name: 'mesh_loop_guard_total',
      help: 'Events stopped by a loop guard.',
      labelNames: ['service', 'failure'],
      registers,
    }),
    ready: new Gauge({
      name: 'mesh_ready',
      help: 'Whether each readiness check (kafka, redis, registry, consumers) passed at the last look: 1 or 0.',
      labelNames: ['service', 'check'],
      registers,
    }),
  };
}
