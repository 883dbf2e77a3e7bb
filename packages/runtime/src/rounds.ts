/**
 * A service's own timer work (deadline rounds): one round at a time, the next `everyMs` after the
 * last one ended, its failures told once per fault and window, and a stop that waits for a round
 * under way only so long.
 */
import { safeDetail } from '@mesh/errors';
import { resultWithin } from '@mesh/kafka';
import { RepeatedLines, type Logger } from '@mesh/telemetry';

export interface RoundsOptions {
  /** From the end of one round to the start of the next (and to the first). */
  everyMs: number;
  round: () => Promise<void>;
  log: Logger;
  /** What a round is called in its warning: "`what` failed; will retry". */
  what: string;
}

export interface Rounds {
  /**
   * Stops the timer and waits up to `waitMs` for a round under way: true when none was left
   * running. A round waiting on Kafka or Redis then fails on its own, and is tried again by the next
   * process, instead of holding the service's stop (its consumers' drain comes after it) past a
   * deployment's grace period.
   */
  stop(waitMs?: number): Promise<boolean>;
}

/** Runs `options.round` every `options.everyMs` until stopped. */
export function everyRound(options: RoundsOptions): Rounds {
  // A round fails every time while a dependency is away: logged once per fault and window.
  const failures = new RepeatedLines();
  let stopped = false;
  let timer: NodeJS.Timeout | undefined;
  let running: Promise<void> | undefined;
  const loop = (): void => {
    if (stopped) return;
    running = options
      .round()
      .catch((error: unknown) => {
        const err = safeDetail(error);
        failures.warn(options.log, err, { err }, `${options.what} failed; will retry`);
      })
      .finally(() => {
        running = undefined;
        if (!stopped) timer = setTimeout(loop, options.everyMs).unref();
      });
  };
  timer = setTimeout(loop, options.everyMs).unref();
  return {
    async stop(waitMs = 2_000) {
      stopped = true;
      clearTimeout(timer);
      if (running === undefined) return true;
      return resultWithin(
        running.then(() => true),
        waitMs,
        false,
      );
    },
  };
}
