export * from './metrics.ts';
export * from './logger.ts';
export * from './lag.ts';
export * from './repeats.ts';
