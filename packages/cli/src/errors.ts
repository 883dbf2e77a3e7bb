/**
 * What the CLI tells a person when something goes wrong: one line on stderr, `mesh: <what>`, and exit
 * status 1. Errors from the mesh's packages are turned into that line where the CLI knows the
 * context (which broker, which file); anything else is shown through `safeDetail`, so a credential
 * in a URL or a token is never printed.
 */
import { isMeshError, safeDetail } from '@mesh/errors';

/** A failure the CLI reports as it is: its message is the line the user sees. */
export class CliError extends Error {
  readonly exitCode: number;

  constructor(message: string, options: { exitCode?: number; cause?: unknown } = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'CliError';
    this.exitCode = options.exitCode ?? 1;
  }
}

/** Bad arguments: the message says what is wrong and where the help is. */
export class UsageError extends CliError {
  constructor(message: string) {
    super(message);
    this.name = 'UsageError';
  }
}

/** The reason inside an error, without the wrappers kafkajs and fetch put around it. */
export function reasonOf(error: unknown): string {
  if (error instanceof Error) {
    const cause = error.cause;
    // fetch() rejects with "fetch failed" and the useful part (ECONNREFUSED …) in `cause`, and the
    // mesh's errors wrap that once more.
    if (/fetch failed$/.test(error.message) && cause instanceof Error) return reasonOf(cause);
    if (error.name === 'TimeoutError' || error.name === 'AbortError') return 'no answer in time';
    const message = isMeshError(error) ? error.message : error.message || error.name;
    return oneLine(
      safeDetail(
        message
          .replace(/^(admin|producer) could not connect: /, '')
          .replace(/^Connection error: /, ''),
      ),
    );
  }
  return oneLine(safeDetail(error));
}

/** The single line printed for `error`. */
export function errorLine(error: unknown): string {
  if (error instanceof CliError) return oneLine(error.message);
  // A setting only the broker could judge (a refused login, an untrusted CA) reads like a bad
  // variable caught on parsing.
  if (isMeshError(error) && error.code === 'config_invalid')
    return oneLine(`config: ${safeDetail(error.message)}`);
  if (isMeshError(error)) return oneLine(safeDetail(error));
  return oneLine(reasonOf(error));
}

/** Folds newlines so that an error is always exactly one line. */
export function oneLine(text: string): string {
  return text.replace(/\s*\n\s*/g, '; ').trim();
}
