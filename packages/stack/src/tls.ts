import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { StackSettings } from './settings.ts';
import { findOnPath, runCommand, type Reporter } from './tools.ts';

/**
 * The stack's own CA and one server certificate it signed for the loopback address, shared by
 * Kafka's SASL_SSL listener and Redis's TLS port: clients verify them as they would a managed
 * service's, host name included.
 */
export interface TlsFiles {
  dir: string;
  /** The CA certificate: what clients trust. */
  caFile: string;
  certFile: string;
  /** Unencrypted PKCS#8. */
  keyFile: string;
  /** Key and certificate in one PEM file (Kafka's `ssl.keystore.type=PEM`). */
  keystoreFile: string;
}

export function stackTlsFiles(settings: StackSettings): TlsFiles {
  const dir = join(settings.stateDir, 'config', 'tls');
  return {
    dir,
    caFile: join(dir, 'ca.pem'),
    certFile: join(dir, 'server-cert.pem'),
    keyFile: join(dir, 'server-key.pem'),
    keystoreFile: join(dir, 'server.pem'),
  };
}

const making = new Map<string, Promise<TlsFiles>>();

/**
 * Makes the CA and the server certificate with openssl, once per checkout (Kafka and Redis prepare
 * side by side: both wait for the one run). Rejects with what to install when openssl is missing.
 */
export function ensureStackTls(settings: StackSettings, report: Reporter): Promise<TlsFiles> {
  const files = stackTlsFiles(settings);
  let made = making.get(files.dir);
  if (made === undefined) {
    made = makeTls(files, settings.host, report);
    making.set(files.dir, made);
    made.catch(() => making.delete(files.dir));
  }
  return made;
}

async function makeTls(files: TlsFiles, host: string, report: Reporter): Promise<TlsFiles> {
  if ([files.caFile, files.certFile, files.keyFile, files.keystoreFile].every(existsSync))
    return files;
  const openssl = await findOnPath('openssl');
  if (openssl === undefined)
    throw new Error(
      'openssl is not on PATH: it makes the TLS certificates of Kafka and Redis (e.g. `apt-get install -y openssl`)',
    );
  const work = `${files.dir}.tmp`;
  await rm(work, { recursive: true, force: true });
  await mkdir(work, { recursive: true });
  const run = (args: string[]) => runCommand(openssl, args, { cwd: work });
  const key = ['-newkey', 'rsa:2048', '-noenc'];
  await run(
    ['req', '-x509', ...key, '-keyout', 'ca-key.pem', '-out', 'ca.pem', '-days', '3650'].concat([
      '-subj',
      '/CN=mesh local stack CA',
    ]),
  );
  await run(
    ['req', ...key, '-keyout', 'server-key.pem', '-out', 'server.csr'].concat([
      '-subj',
      `/CN=${host}`,
      '-addext',
      `subjectAltName=IP:${host},DNS:localhost`,
    ]),
  );
  await run(
    ['x509', '-req', '-in', 'server.csr', '-CA', 'ca.pem', '-CAkey', 'ca-key.pem']
      .concat(['-set_serial', `0x${randomBytes(8).toString('hex')}`, '-days', '3650'])
      .concat(['-copy_extensions', 'copy', '-out', 'server-cert.pem']),
  );
  const keystore = Buffer.concat([
    await readFile(join(work, 'server-key.pem')),
    await readFile(join(work, 'server-cert.pem')),
  ]);
  await writeFile(join(work, 'server.pem'), keystore, { mode: 0o600 });
  await rm(join(work, 'server.csr'));
  await rm(files.dir, { recursive: true, force: true });
  await rename(work, files.dir);
  report(`TLS certificates of Kafka and Redis made in ${files.dir}`);
  return files;
}
