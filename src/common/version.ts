// The devloc version, from package.json, read once. The same code runs from src/ (tsx) and from
// dist/ (built): both are two directories below the package root, but we look upwards for the
// package.json named "devloc" rather than count levels, so a moved file still finds it.
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

let cached: string | undefined;

/** Set by the agent distribution's bundler (packages/agent/build.mjs): a bundle has no package.json beside it. */
declare const __DEVLOC_VERSION__: string | undefined;

/** The version in devloc's package.json ("unknown" if it cannot be found). */
export function version(): string {
  if (cached !== undefined) return cached;
  if (typeof __DEVLOC_VERSION__ === 'string') return (cached = __DEVLOC_VERSION__);
  cached = 'unknown';
  let dir = dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 6; i++) {
    try {
      const pkg = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8')) as { name?: unknown; version?: unknown };
      if (pkg.name === 'devloc' && typeof pkg.version === 'string') {
        cached = pkg.version;
        break;
      }
    } catch {
      // no package.json here: look one level up
    }
    const up = dirname(dir);
    if (up === dir) break;
    dir = up;
  }
  return cached;
}

/** The `--version` line: `devloc-<prog> <version>` (or `devloc <version>` for the CLI). */
export function versionLine(program: string): string {
  return `${program} ${version()}`;
}
