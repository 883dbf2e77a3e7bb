import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Component } from './component.ts';
import { redisPing } from './resp.ts';
import { componentPaths, type StackSettings } from './settings.ts';
import { ensureStackTls } from './tls.ts';
import { errorMessage, findOnPath, persistedSecret, runCommand, type Reporter } from './tools.ts';

export interface RedisServerConfig {
  host: string;
  port: number;
  password: string;
  dir: string;
  /** A TLS port beside the plaintext one, with a certificate of the stack's CA. */
  tls?: { port: number; certFile: string; keyFile: string; caFile: string };
}

/**
 * redis.conf: loopback only, password required, logs to stdout (appended to logs/redis.log). The
 * append-only file is on (fsync every second), as a production idempotency store would have it: a
 * Redis stopped and restarted by the chaos suite keeps its leases, done markers and task state.
 */
export function renderRedisConf(config: RedisServerConfig): string {
  return [
    '# Written by @mesh/stack on every start; edits are overwritten.',
    `bind ${config.host}`,
    `port ${config.port}`,
    'protected-mode yes',
    `requirepass ${config.password}`,
    'daemonize no',
    'supervised no',
    'save ""',
    'appendonly yes',
    'appendfsync everysec',
    `dir ${config.dir}`,
    'logfile ""',
    'databases 16',
    ...(config.tls === undefined
      ? []
      : [
          `tls-port ${config.tls.port}`,
          `tls-cert-file ${config.tls.certFile}`,
          `tls-key-file ${config.tls.keyFile}`,
          `tls-ca-cert-file ${config.tls.caFile}`,
          // Clients authenticate with the password, as on managed Redis, not with certificates.
          'tls-auth-clients no',
        ]),
    '',
  ].join('\n');
}

/** The Redis password of this checkout: generated once, kept in the state dir so `.env.mesh` stays valid. */
export function redisPassword(settings: StackSettings): Promise<string> {
  return persistedSecret(join(componentPaths(settings, 'redis').configDir, 'password'));
}

export function createRedisComponent(settings: StackSettings): Component {
  const { host, ports } = settings;
  const paths = componentPaths(settings, 'redis');
  const confFile = join(paths.configDir, 'redis.conf');
  let server = 'redis-server';

  return {
    name: 'redis',
    address: `${host}:${ports.redis} (TLS ${host}:${ports.redisTls})`,
    ports: [ports.redis, ports.redisTls],
    stopTimeoutMs: 10_000,

    async prepare(report) {
      server = await ensureRedisServer(report);
      const password = await redisPassword(settings);
      const tls = await ensureStackTls(settings, report);
      await mkdir(paths.dataDir, { recursive: true });
      await writeFile(
        confFile,
        renderRedisConf({
          host,
          port: ports.redis,
          password,
          dir: paths.dataDir,
          tls: {
            port: ports.redisTls,
            certFile: tls.certFile,
            keyFile: tls.keyFile,
            caFile: tls.caFile,
          },
        }),
        { mode: 0o600 },
      );
    },

    async command() {
      return { file: server, args: [confFile], cwd: paths.dataDir };
    },

    async probe({ timeoutMs }) {
      await redisPing(host, ports.redis, await redisPassword(settings), timeoutMs);
    },
  };
}

/** The redis-server executable, installed with apt-get when missing. Rejects when it cannot be installed. */
async function ensureRedisServer(report: Reporter): Promise<string> {
  const found = await findOnPath('redis-server');
  if (found !== undefined) return found;
  const aptGet = await findOnPath('apt-get');
  if (aptGet === undefined)
    throw new Error(
      'redis-server is not on PATH and there is no apt-get to install it: install Redis 7',
    );
  report('redis: redis-server is missing; running `apt-get install -y redis-server`');
  try {
    await runCommand(aptGet, ['install', '-y', 'redis-server'], {
      cwd: '/',
      env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' },
    });
  } catch (error) {
    throw new Error(
      `redis: installing redis-server failed (run it as root, or install Redis 7 yourself): ${errorMessage(error)}`,
      { cause: error },
    );
  }
  const installed = await findOnPath('redis-server');
  if (installed === undefined)
    throw new Error('redis: apt-get installed redis-server but it is not on PATH');
  return installed;
}
