/**
 * pino JSON logs. Child loggers carry the event id and correlationid so that one task's lines can be
 * found across services. Secrets are redacted by path.
 */
import { pino, type Logger } from 'pino';

export type { Logger };

/**
 * A service's logger, writing to stdout; `fd` 2 writes to stderr instead, for a tool whose stdout
 * is its output (a benchmark's JSON).
 */
export function createLogger(service: string, level = 'info', fd: 1 | 2 = 1): Logger {
  return pino(
    {
      name: service,
      level,
      base: { service },
      redact: {
        paths: [
          'password',
          '*.password',
          'token',
          '*.token',
          'authorization',
          '*.authorization',
          'apiKey',
          '*.apiKey',
        ],
        censor: '***',
      },
      timestamp: pino.stdTimeFunctions.isoTime,
    },
    fd === 2 ? pino.destination(2) : undefined,
  );
}

/** A logger for tests and tools that should print nothing. */
export function silentLogger(): Logger {
  return pino({ level: 'silent' });
}
