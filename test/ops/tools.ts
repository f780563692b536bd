// Shared bits of the operations tests: the repository root, external tools that CI installs
// (.ci/run) and a developer may not have.
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');

export const DAEMONS = ['authd', 'locatord', 'matchd', 'agent'] as const;
export type Daemon = (typeof DAEMONS)[number];

/** Whether the program `cmd` can be started at all (its exit status does not matter). */
export function has(cmd: string): boolean {
  const r = spawnSync(cmd, ['--version'], { stdio: 'ignore', timeout: 30_000 });
  return r.error === undefined;
}

/**
 * tap `skip` option for a test that needs `tool`: skipped on a developer machine without it,
 * never in CI (CI=true), where the test runs and fails on the missing tool instead.
 */
export function needs(tool: string, present: boolean): { skip: string | false } {
  return { skip: !present && !process.env['CI'] ? `${tool} not installed (.ci/run installs it)` : false };
}
