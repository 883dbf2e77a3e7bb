/**
 * The contract's metrics (docs/contract.md, "Metrics"), with the same names in every service.
 * Each service owns one prom-client registry, so tests can run several services in one process.
 */
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

export interface MeshMetrics {
  registry: Registry;
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
}

export function createMetrics(options: { defaultMetrics?: boolean } = {}): MeshMetrics {
  const registry = new Registry();
  if (options.defaultMetrics ?? true) collectDefaultMetrics({ register: registry });
  const registers = [registry];
  return {
    registry,
    consumed: new Counter({
      name: 'mesh_events_consumed_total',
      help: 'Events consumed, by topic and type.',
      labelNames: ['service', 'topic', 'type'],
      registers,
    }),
    produced: new Counter({
      name: 'mesh_events_produced_total',
      help: 'Events produced and acknowledged by Kafka.',
      labelNames: ['service', 'topic', 'type'],
      registers,
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
  };
}
