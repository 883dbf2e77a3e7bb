#!/usr/bin/env node
/**
 * The `mesh` executable (`npx mesh …`, `npm start`). The exit is explicit: the Kafka clients keep
 * retrying in the background after a failure, and nothing must keep the process alive then.
 */
import { run } from './cli.ts';

const status = await run(process.argv.slice(2));
process.exit(status);
