/**
 * A mesh runtime owned by one test (`@mesh/testkit/runtime`): a separate entry point, so that only
 * the tests that use a runtime load and type-check `@mesh/runtime` through the harness.
 */
import type { MeshConfig } from '@mesh/config';
import { MeshRuntime, topicSpecs, type RuntimeOptions } from '@mesh/runtime';
import { onCleanup, type CleanupContext } from './index.ts';

/**
 * A runtime on `config` for a test's own publishing, reading and consuming, not started (a test may
 * create topics or set state up first). When the test ends it is closed, the topics it would create
 * (`topicSpecs` of `config` and `options.agents`) are deleted, and its admin is disconnected.
 * Cleanups registered after this one run before it, so they can still use the runtime.
 */
export function testRuntime(
  t: CleanupContext,
  config: MeshConfig,
  options: RuntimeOptions = {},
): MeshRuntime {
  const runtime = new MeshRuntime(config, options);
  onCleanup(t, async () => {
    await runtime.close();
    await runtime.admin
      .deleteTopics(topicSpecs(config, options.agents ?? []).map((s) => s.topic))
      .catch(() => undefined);
    await runtime.admin.disconnect().catch(() => undefined);
  });
  return runtime;
}
