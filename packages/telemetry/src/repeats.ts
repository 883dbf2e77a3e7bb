import type { Logger } from 'pino';

/**
 * Holds back log lines that repeat. While Kafka, Redis or the registry is away every retry fails the
 * same way: kafkajs logs each refused connection, a timer each failed round, a consumer each event
 * it tries again, several lines a second for as long as the outage lasts. The first line of a kind
 * is logged; the same kind again within the window is only counted; the first one after the window
 * is logged with that count (`suppressed`). How long the outage lasted is said once by the
 * readiness log ("not ready: …", "ready again after …").
 */
export class RepeatedLines {
  readonly #windowMs: number;
  readonly #now: () => number;
  /** When each kind was last logged, and how many of it were held back since. */
  readonly #kinds = new Map<string, { loggedAt: number; held: number }>();

  /** Kinds remembered at once; more, and a new kind is logged without being counted. */
  static readonly maxKinds = 1_000;

  constructor(windowMs = 30_000, now: () => number = Date.now) {
    this.#windowMs = windowMs;
    this.#now = now;
  }

  /**
   * Whether to log a line of `kind` now: undefined to hold it back, otherwise the fields to add to
   * it (`{ suppressed: n }` when n lines of its kind were held back since the last one logged).
   */
  admit(kind: string): { suppressed?: number } | undefined {
    const now = this.#now();
    const seen = this.#kinds.get(kind);
    if (seen !== undefined && now - seen.loggedAt < this.#windowMs) {
      seen.held += 1;
      return undefined;
    }
    if (seen !== undefined) {
      const held = seen.held;
      seen.loggedAt = now;
      seen.held = 0;
      return held > 0 ? { suppressed: held } : {};
    }
    if (this.#kinds.size >= RepeatedLines.maxKinds) this.#forgetQuiet(now);
    if (this.#kinds.size < RepeatedLines.maxKinds)
      this.#kinds.set(kind, { loggedAt: now, held: 0 });
    return {};
  }

  /** Logs `message` at warn with `fields`, unless a line of `kind` was logged within the window. */
  warn(log: Logger, kind: string, fields: Record<string, unknown>, message: string): void {
    const admitted = this.admit(kind);
    if (admitted !== undefined) log.warn({ ...fields, ...admitted }, message);
  }

  /** The same at error: for a fault that needs someone, and repeats until it gets them. */
  error(log: Logger, kind: string, fields: Record<string, unknown>, message: string): void {
    const admitted = this.admit(kind);
    if (admitted !== undefined) log.error({ ...fields, ...admitted }, message);
  }

  /** Forgets the kinds whose window has passed: what they held back is then never reported. */
  #forgetQuiet(now: number): void {
    for (const [kind, seen] of this.#kinds)
      if (now - seen.loggedAt >= this.#windowMs) this.#kinds.delete(kind);
  }
}
