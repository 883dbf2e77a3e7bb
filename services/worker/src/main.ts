/**
 * `node services/worker/src/main.ts`: the worker process. A bad variable — of the core ones or the
 * worker's own, including the rules that tie them together — ends it with status 78 and one stderr
 * line per variable, before anything connects.
 */
import { loadConfigOrExit } from '@mesh/config';
import { MeshError } from '@mesh/errors';
import { main } from '@mesh/service';
import { workerService, workerSettings } from './index.ts';

const config = loadConfigOrExit({
  service: workerService.name,
  defaultHttpPort: workerService.defaultHttpPort,
  ...workerService.config,
});
try {
  workerSettings(config);
} catch (error) {
  if (!(error instanceof MeshError) || error.code !== 'config_invalid') throw error;
  for (const line of error.message.split('\n'))
    process.stderr.write(`${workerService.name}: config: ${line}\n`);
  process.exit(78);
}
main(workerService);
