import type { DetachedCommand } from './processes.ts';
import type { ComponentName } from './settings.ts';
import type { Reporter } from './tools.ts';

/** How `stack.ts` drives one process of the stack; one implementation per component. */
export interface Component {
  name: ComponentName;
  /** What clients connect to, for `status`. */
  address: string;
  /** Every port the process binds; checked free before it starts. */
  ports: number[];
  /** How long SIGTERM may take before SIGKILL. */
  stopTimeoutMs: number;
  /**
   * Makes everything the process needs exist: downloads into the cache, config files, formatted storage.
   * Idempotent and cheap when done before. Rejects with a message saying what to install or fix.
   */
  prepare(report: Reporter): Promise<void>;
  /** The command line to start; `prepare` has run. */
  command(): Promise<Omit<DetachedCommand, 'logFile'>>;
  /**
   * Resolves when the component serves clients. `thorough` probes what tests rely on (for Kafka: a consumer group
   * can commit); otherwise a cheap liveness check. Rejects with the reason it is not ready.
   */
  probe(options: { thorough: boolean; timeoutMs: number }): Promise<void>;
}
