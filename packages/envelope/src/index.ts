export * from './event.ts';
export * from './kafka-binding.ts';
export * from './lineage.ts';
export * from './trace.ts';
