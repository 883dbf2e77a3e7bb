/**
 * pino JSON logs. Child loggers carry the event id and correlationid so that one task's lines can be
 * found across services. Secrets are redacted by path.
 */
import { pino, type Logger } from 'pino';

export type { Logger };

export function createLogger(service: string, level = 'info'): Logger {
  return pino({
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
  });
}

/** A logger for tests and tools that should print nothing. */
export function silentLogger(): Logger {
  return pino({ level: 'silent' });
}
