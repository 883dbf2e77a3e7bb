export * from './consumer.ts';
export type { Emit } from './publish.ts';
export * from './rounds.ts';
export * from './runtime.ts';
export * from './topics.ts';
export * from './tracker.ts';
export type { ConsumedRecord } from '@mesh/kafka';
// Services that send through `runtime.producer` recognise its refusal of a record too large for Kafka.
export { isRecordTooLarge } from '@mesh/kafka';
// Services bound what their own stop waits for on Kafka the way the consumers do.
export { resultWithin } from '@mesh/kafka';
export * from './size.ts';
