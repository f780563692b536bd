// A module that is both a program and a library (daemons, benches, tools) starts itself only
// when node was started with it, not when a test or another module imports it.
import { realpathSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

/** True when `moduleUrl` (the caller's import.meta.url) is the program node was started with. */
export function isMainModule(moduleUrl: string): boolean {
  const argv1 = process.argv[1];
  if (!argv1) return false;
  try {
    return realpathSync(fileURLToPath(moduleUrl)) === realpathSync(argv1);
  } catch {
    return false;
  }
}
