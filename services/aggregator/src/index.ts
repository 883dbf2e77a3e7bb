export { aggregatorService, deadlinesKey } from './service.ts';
export { Aggregator, outcomeEventId, stageEventId, type AggregatorOptions } from './aggregator.ts';
export * from './join.ts';
export * from './outcome.ts';
export * from './store.ts';
