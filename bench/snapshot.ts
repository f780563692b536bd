// The restart of a locatord holding `entries` terminals (issue 16 item 4): a bench worker builds
// them (locatord-worker.ts buildTerminals: no ticket operations) and writes their snapshot as the
// daemon's stop does, timed with the event loop's longest delay meanwhile; a real locatord child
// then starts on it (restore time from its "snapshot restored" line, peak RSS from VmHWM) and
// stops with SIGTERM (its own write: "snapshot written" durationMs and maxSliceMs). CPU times
// are given beside the wall times: on a loaded machine the wall times measure the load.
import { readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import { forkWorker, startBenchLocatord } from './locatord.js';

export interface SnapshotBenchResult {
  entries: number;
  bytes: number;
  /** The worker's write (same function as the daemon's). */
  writeMs: number;
  writeCpuMs: number;
  /** Longest stretch between two yields of the write (wall, CPU), and the event loop's longest delay then. */
  maxSliceMs: number;
  maxSliceCpuMs: number;
  loopDelayMaxMs: number;
  /** The daemon: restore (read, check, build), ms. */
  restoreMs: number;
  restoreCpuMs: number;
  /** The daemon's peak RSS (VmHWM) once restored, MiB. */
  peakRssMiB: number;
  /** The daemon's own write at SIGTERM. */
  daemonWriteMs: number;
  daemonWriteCpuMs: number;
  daemonMaxSliceMs: number;
  daemonMaxSliceCpuMs: number;
  /** 1-minute load average at the end (2 cores: above 2, the wall times include waiting for a core). */
  loadAverage: number;
}

function peakRssMiB(pid: number): number {
  const m = /VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Math.round(Number(m[1]) / 1024) : 0;
}

export async function benchSnapshot(entries = 1_000_000): Promise<SnapshotBenchResult> {
  const worker = forkWorker(['--expose-gc', '--max-old-space-size=8192']);
  let written: Record<string, number> = {};
  // Generous: at 1M on a loaded 2-core machine the build and the restore take minutes.
  const { dir, loc } = await startBenchLocatord(['--max-entries', String(entries + 1000)], {
    timeoutMs: 1_800_000,
    beforeStart: async (stateDir) => {
      try {
        written = await worker.ask<Record<string, number>>({ cmd: 'snapshot', entries, stateDir });
      } finally {
        worker.proc.kill('SIGKILL');
      }
    },
  });
  try {
    const restored = await loc.waitFor((l) => l['msg'] === 'snapshot restored');
    // The daemon takes SIGTERM (the snapshot) once its control socket is up: runDaemon installs
    // its signal handlers after that line; a SIGTERM before it kills the process unsaved. The
    // default socket path may be unavailable (another daemon's): then a warning is that line.
    await loc.waitFor((l) => l['msg'] === 'control socket' || l['msg'] === 'cannot open the control socket' || String(l['msg']).startsWith('control socket not available'));
    if (restored['records'] !== entries) throw new Error(`restored ${String(restored['records'])} of ${entries}`);
    const pid = loc.proc.pid!;
    const peak = peakRssMiB(pid);
    const wrote = loc.waitFor((l) => l['msg'] === 'snapshot written');
    await loc.stop('SIGTERM');
    const w = await wrote;
    return {
      entries, bytes: written['bytes']!, writeMs: written['writeMs']!, writeCpuMs: written['writeCpuMs']!,
      maxSliceMs: written['maxSliceMs']!, maxSliceCpuMs: written['maxSliceCpuMs']!, loopDelayMaxMs: written['loopDelayMaxMs']!,
      restoreMs: Number(restored['durationMs']), restoreCpuMs: Number(restored['cpuMs']), peakRssMiB: peak,
      daemonWriteMs: Number(w['durationMs']), daemonWriteCpuMs: Number(w['cpuMs']), daemonMaxSliceMs: Number(w['maxSliceMs']), daemonMaxSliceCpuMs: Number(w['maxSliceCpuMs']),
      loadAverage: Math.round(os.loadavg()[0]! * 10) / 10,
    };
  } finally {
    loc.proc.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  }
}

if (process.argv[1] && import.meta.url.endsWith(process.argv[1].split('/').pop()!)) {
  benchSnapshot(Number(process.env['ENTRIES'] ?? 1_000_000)).then((r) => process.stdout.write(`${JSON.stringify(r, null, 2)}\n`), (e: Error) => {
    process.stderr.write(`${e.stack}\n`);
    process.exit(1);
  });
}
