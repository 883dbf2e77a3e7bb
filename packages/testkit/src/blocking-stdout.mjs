/**
 * Loaded with `--import` by `npm test` into `node --test` and, through it, into every test file's
 * process: makes standard output blocking when it is a pipe.
 *
 * Why: under `--test-force-exit` a test file's process reports its results to the runner over a
 * pipe and then calls `process.exit()`. When the runner is slow to read, the pipe fills, the last
 * results wait in libuv's write queue, and exit drops them: the run reports fewer tests than ran,
 * at exit code 0 (nodejs/node#64833; reproduced here on Node 22.23 with 401 tests reported as 294
 * to 401). With blocking writes nothing is left queued at exit.
 */
const handle = /** @type {{ setBlocking?: (blocking: boolean) => number } | undefined} */ (
  /** @type {{ _handle?: unknown }} */ (process.stdout)._handle
);
handle?.setBlocking?.(true);
