export * from './consumer.ts';
export * from './runtime.ts';
export * from './topics.ts';
export * from './tracker.ts';
export type { ConsumedRecord } from '@mesh/kafka';
