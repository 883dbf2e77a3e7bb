export * from './schemas.ts';
export * from './registry.ts';
export * from './codec.ts';
