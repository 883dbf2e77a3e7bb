export * from './client.ts';
export * from './producer.ts';
export * from './consumer.ts';
export * from './admin.ts';
export * from './partitioner.ts';
