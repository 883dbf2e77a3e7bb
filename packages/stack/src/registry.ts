import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, rename, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Component } from './component.ts';
import { ccompatPath } from './env-file.ts';
import { lastLines } from './processes.ts';
import { componentPaths, resolveStackSettings, type StackSettings } from './settings.ts';
import { ensureStackTls, stackTlsFiles } from './tls.ts';
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
  tls?: { port: number; certFile: string; keyFile: string },
): Record<string, string> {
  return {
    'quarkus.http.host': host,
    'quarkus.http.port': String(port),
    // HTTPS beside HTTP, with a certificate of the stack's CA, as a registry behind TLS is reached.
    ...(tls === undefined
      ? {}
      : {
          'quarkus.http.ssl-port': String(tls.port),
          'quarkus.http.ssl.certificate.files': tls.certFile,
          'quarkus.http.ssl.certificate.key-files': tls.keyFile,
          'quarkus.http.insecure-requests': 'enabled',
        }),
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
  const tls = stackTlsFiles(settings);
  let java = 'java';

  return {
    name: 'registry',
    address: `${baseUrl} (https on :${ports.registryTls})`,
    ports: [ports.registry, ports.registryTls],
    stopTimeoutMs: 20_000,

    async prepare(report) {
      java = await requireJava();
      await ensureApicurio(cacheDir, appDir, report);
      await ensureStackTls(settings, report);
      await mkdir(paths.dataDir, { recursive: true });
    },

    async command() {
      return {
        file: java,
        args: apicurioArgs(
          appDir,
          registrySystemProperties(host, ports.registry, paths.dataDir, {
            port: ports.registryTls,
            certFile: tls.certFile,
            keyFile: tls.keyFile,
          }),
        ),
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

/** The java arguments of an Apicurio Registry with these system properties. */
function apicurioArgs(appDir: string, properties: Record<string, string>): string[] {
  return [
    '-Xms64m',
    '-Xmx512m',
    // Clients cache schemas, so the registry is never hot: C1 only and the serial GC halve its start-up CPU,
    // which Kafka, starting at the same moment, needs more.
    '-XX:TieredStopAtLevel=1',
    '-XX:+UseSerialGC',
    '-XX:+ExitOnOutOfMemoryError',
    '-Djava.awt.headless=true',
    ...Object.entries(properties).map(([key, value]) => `-D${key}=${value}`),
    '-jar',
    join(appDir, runnerJar),
  ];
}

/**
 * System properties that make Apicurio ask for HTTP basic auth, with one user allowed everything
 * (Quarkus's embedded users; Apicurio 3's own authorization then sees the role `sr-admin`).
 */
export function basicAuthProperties(username: string, password: string): Record<string, string> {
  return {
    'apicurio.authn.enabled': 'true',
    'quarkus.http.auth.basic': 'true',
    'quarkus.security.users.embedded.enabled': 'true',
    'quarkus.security.users.embedded.plain-text': 'true',
    [`quarkus.security.users.embedded.users.${username}`]: password,
    [`quarkus.security.users.embedded.roles.${username}`]: 'sr-admin',
  };
}

export interface AuthRegistry {
  /** Its Confluent-compatible API. */
  url: string;
  stop(): Promise<void>;
}

/**
 * A registry of its own, beside the stack's, that asks for basic auth (as Confluent Cloud's does):
 * for the tests of registry credentials, since the stack's registry takes anonymous clients. Runs
 * the stack's Apicurio on `port` with its schemas in `dataDir`; resolves once it answers `username`.
 * @throws Error when Java or the cached Apicurio is missing, or it does not answer in `timeoutMs`.
 */
export async function startAuthRegistry(options: {
  port: number;
  dataDir: string;
  username: string;
  password: string;
  timeoutMs?: number;
}): Promise<AuthRegistry> {
  const settings = resolveStackSettings();
  const appDir = join(settings.cacheDir, 'apicurio', `apicurio-registry-app-${apicurioVersion}`);
  if (!existsSync(join(appDir, runnerJar)))
    throw new Error(`no Apicurio Registry in ${appDir}: run \`npm run stack -- up\` once`);
  const java = await requireJava();
  const { host } = settings;
  const child = spawn(
    java,
    apicurioArgs(appDir, {
      ...registrySystemProperties(host, options.port, options.dataDir),
      ...basicAuthProperties(options.username, options.password),
    }),
    { cwd: options.dataDir, stdio: ['ignore', 'ignore', 'pipe'] },
  );
  let stderr = '';
  child.stderr.on('data', (chunk: Buffer) => (stderr = (stderr + chunk.toString()).slice(-2_000)));
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const stop = async (): Promise<void> => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
    await exited;
  };
  const url = `http://${host}:${options.port}${ccompatPath}`;
  const authorization = `Basic ${Buffer.from(`${options.username}:${options.password}`).toString('base64')}`;
  const deadline = Date.now() + (options.timeoutMs ?? 90_000);
  for (;;) {
    if (child.exitCode !== null)
      throw new Error(`the registry exited with ${child.exitCode}: ${lastLines(stderr, 10)}`);
    const status = await fetch(`${url}/subjects`, {
      headers: { authorization },
      signal: AbortSignal.timeout(2_000),
    }).then(
      (response) => response.arrayBuffer().then(() => response.status),
      () => 0,
    );
    if (status === 200) return { url, stop };
    if (Date.now() > deadline) {
      await stop();
      throw new Error(`the registry on :${options.port} did not answer within the time allowed`);
    }
    await sleep(250);
  }
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
