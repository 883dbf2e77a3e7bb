export {
  readStackEnv,
  stackDown,
  stackStatus,
  stackUp,
  startComponent,
  stopComponent,
  StackError,
  type ComponentState,
  type ComponentStatus,
  type StackDownOptions,
  type StackUpOptions,
  type StopComponentOptions,
} from './stack.ts';
export {
  secureStackEnvKeys,
  stackEnvKeys,
  type SecureStackEnv,
  type StackEnv,
} from './env-file.ts';
export {
  componentNames,
  isComponentName,
  resolveStackSettings,
  type ComponentName,
  type StackPorts,
  type StackSettings,
} from './settings.ts';
export { startAuthRegistry, type AuthRegistry } from './registry.ts';
export type { Reporter } from './tools.ts';
