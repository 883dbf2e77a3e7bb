import { existsSync } from 'node:fs';
import { mkdir, rename, rm } from 'node:fs/promises';
import { join } from 'node:path';
import type { Component } from './component.ts';
import { ccompatPath } from './env-file.ts';
import { componentPaths, type StackSettings } from './settings.ts';
import {
  errorMessage,
  findOnPath,
  formatSeconds,
  requireJava,
  runCommand,
  withTimeout,
  type Reporter,
} from './tools.ts';

export const apicurioVersion = '3.0.9';
const artifact = `io.apicurio:apicurio-registry-app:${apicurioVersion}:tar.gz:all`;
const tarball = `apicurio-registry-app-${apicurioVersion}-all.tar.gz`;
const runnerJar = `apicurio-registry-app-${apicurioVersion}-runner.jar`;

/**
 * JVM system properties for Apicurio Registry 3 serving the Confluent-compatible API.
 *
 * - Storage is SQL on an H2 database in a file under `dataDir`, so a restart of the registry keeps
 *   every schema and its id, as Confluent's `_schemas` topic does. Records already on Kafka carry
 *   schema ids: a registry that forgot them on restart would make a service that starts afresh
 *   dead-letter every such record (`unknown schema id`, or a schema of another subject under a
 *   reused id). `stack down` deletes the file with the rest of the stack's data.
 * - `apicurio.ccompat.legacy-id-mode.enabled` stays false: ccompat ids are then content ids, so one schema
 *   registered under two subjects gets one id, as in Confluent. (Legacy mode answers global ids: one per version.)
 * - Deletion through the core v3 API is enabled too, so test clean-up can use either API.
 */
export function registrySystemProperties(
  host: string,
  port: number,
  dataDir: string,
): Record<string, string> {
  return {
    'quarkus.http.host': host,
    'quarkus.http.port': String(port),
    'apicurio.storage.kind': 'sql',
    'apicurio.storage.sql.kind': 'h2',
    'apicurio.datasource.url': `jdbc:h2:file:${join(dataDir, 'registry')}`,
    'apicurio.ccompat.legacy-id-mode.enabled': 'false',
    'apicurio.rest.deletion.group.enabled': 'true',
    'apicurio.rest.deletion.artifact.enabled': 'true',
    'apicurio.rest.deletion.artifact-version.enabled': 'true',
  };
}

export function createRegistryComponent(settings: StackSettings): Component {
  const { host, ports } = settings;
  const paths = componentPaths(settings, 'registry');
  const cacheDir = join(settings.cacheDir, 'apicurio');
  const appDir = join(cacheDir, `apicurio-registry-app-${apicurioVersion}`);
  const baseUrl = `http://${host}:${ports.registry}${ccompatPath}`;
  let java = 'java';

  return {
    name: 'registry',
    address: baseUrl,
    ports: [ports.registry],
    stopTimeoutMs: 20_000,

    async prepare(report) {
      java = await requireJava();
      await ensureApicurio(cacheDir, appDir, report);
      await mkdir(paths.dataDir, { recursive: true });
    },

    async command() {
      const properties = Object.entries(
        registrySystemProperties(host, ports.registry, paths.dataDir),
      ).map(([key, value]) => `-D${key}=${value}`);
      return {
        file: java,
        args: [
          '-Xms64m',
          '-Xmx512m',
          // Clients cache schemas, so the registry is never hot: C1 only and the serial GC halve its start-up CPU,
          // which Kafka, starting at the same moment, needs more.
          '-XX:TieredStopAtLevel=1',
          '-XX:+UseSerialGC',
          '-XX:+ExitOnOutOfMemoryError',
          '-Djava.awt.headless=true',
          ...properties,
          '-jar',
          join(appDir, runnerJar),
        ],
        cwd: paths.dataDir,
      };
    },

    async probe({ timeoutMs }) {
      const response = await withTimeout(
        fetch(`${baseUrl}/subjects`, { signal: AbortSignal.timeout(timeoutMs) }),
        timeoutMs,
        'registry probe',
      );
      await response.arrayBuffer();
      if (response.status !== 200)
        throw new Error(`GET ${baseUrl}/subjects answered ${response.status}`);
    },
  };
}

/**
 * Makes `<cache>/apicurio/apicurio-registry-app-<v>/` hold the unpacked Quarkus application, downloading the
 * tarball from Maven Central with `mvn dependency:copy` when it is not cached.
 */
async function ensureApicurio(cacheDir: string, appDir: string, report: Reporter): Promise<void> {
  if (existsSync(join(appDir, runnerJar))) return;
  await mkdir(cacheDir, { recursive: true });
  const archive = join(cacheDir, tarball);
  if (!existsSync(archive)) {
    const mvn = await findOnPath('mvn');
    if (mvn === undefined)
      throw new Error(
        'mvn is not on PATH: it downloads Apicurio Registry from Maven Central (e.g. `apt-get install -y maven`)',
      );
    report(`registry: downloading ${artifact} from Maven Central`);
    const started = Date.now();
    try {
      await runCommand(
        mvn,
        ['-q', '-B', 'dependency:copy', `-Dartifact=${artifact}`, '-DoutputDirectory=.'],
        { cwd: cacheDir },
      );
    } catch (error) {
      throw new Error(`registry: download failed: ${errorMessage(error)}`, { cause: error });
    }
    report(`registry: downloaded in ${formatSeconds(Date.now() - started)}`);
  }
  const staging = `${appDir}.tmp`;
  await rm(staging, { recursive: true, force: true });
  await mkdir(staging, { recursive: true });
  await runCommand('tar', ['-xzf', archive, '-C', staging], { cwd: cacheDir });
  if (!existsSync(join(staging, runnerJar)))
    throw new Error(`registry: ${archive} holds no ${runnerJar}`);
  await rm(appDir, { recursive: true, force: true });
  await rename(staging, appDir);
  report(`registry: unpacked Apicurio Registry ${apicurioVersion} into ${appDir}`);
}
