/**
 * A Python interpreter with pinned PyPI packages, for tests that run a client of the mesh written in
 * another language (`examples/python-agent/agent.py`). The virtual environment is made once under
 * `~/.cache/mesh-python/<digest of the requirements>` (MESH_TEST_PYTHON_DIR overrides the parent
 * directory) with `python3 -m venv` and pip, built aside and renamed into place, so a half-made one
 * is never used; later runs reuse it.
 */
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, renameSync, rmSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';

/**
 * The path of a `python` that imports `requirements` (pip specifiers, e.g. `confluent-kafka==2.16.1`).
 * @throws Error naming what failed (no python3, no venv module, pip could not install): a test that
 *   needs it fails, it is never skipped.
 */
export function pythonWith(requirements: string[]): string {
  const parent = process.env.MESH_TEST_PYTHON_DIR ?? join(homedir(), '.cache', 'mesh-python');
  const digest = createHash('sha256').update(requirements.join('\n')).digest('hex').slice(0, 16);
  const dir = join(parent, digest);
  const python = join(dir, 'bin', 'python');
  if (existsSync(python)) return python;
  mkdirSync(parent, { recursive: true });
  const building = `${dir}.${process.pid}`;
  rmSync(building, { recursive: true, force: true });
  const run = (command: string, args: string[], what: string): void => {
    const result = spawnSync(command, args, { encoding: 'utf8', timeout: 300_000 });
    if (result.status !== 0)
      throw new Error(
        `${what} failed (${result.error?.message ?? `exit ${result.status}`}): ${(result.stderr || result.stdout || '').trim().split('\n').slice(-3).join(' | ')}`,
      );
  };
  run(
    'python3',
    ['-m', 'venv', building],
    'python3 -m venv (Debian: apt-get install python3-venv)',
  );
  run(
    join(building, 'bin', 'pip'),
    ['install', '--quiet', '--disable-pip-version-check', ...requirements],
    `pip install ${requirements.join(' ')}`,
  );
  try {
    renameSync(building, dir);
  } catch (error) {
    // Another process made it first: use theirs.
    rmSync(building, { recursive: true, force: true });
    if (!existsSync(python)) throw error;
  }
  return python;
}
