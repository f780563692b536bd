// Spawn a devloc daemon as a real process (through tsx, so tests need no build), wait until it
// logs "listening", and stop it at teardown: src/common/spawn.ts, with the daemon's output piped
// to the test (every JSON log line kept in `lines`, stderr in `stderr`).
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { RunningDaemon } from '../../src/common/spawn.js';
import { startDaemon as start } from '../../src/common/spawn.js';

export type { RunningDaemon } from '../../src/common/spawn.js';

export const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');

/** Start `src/<entry>` (e.g. "authd/main.ts") with args; 30 s to listen (tsx compiles it first, on a busy CI machine). */
/**
 * How long a test waits for a daemon it started to say "listening". A guard, not a measurement:
 * the daemons start from the sources through tsx, which takes seconds on a machine whose cores
 * are busy (seen: over 20 s), and a test that gives up early fails for nothing.
 */
export const DAEMON_START_TIMEOUT_MS = 90_000;

export function startDaemon(entry: string, args: string[], env: NodeJS.ProcessEnv = {}, timeoutMs = DAEMON_START_TIMEOUT_MS): Promise<RunningDaemon> {
  return start({ entry: entry.replace(/\.ts$/, ''), name: entry, args, env, cwd: root, timeoutMs });
}
