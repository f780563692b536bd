// CPU time of processes and of the whole machine, from /proc (Linux), to say where a bench step
// spent its CPU and which process was the bottleneck. Elsewhere every reading is null and the
// results say so rather than guess.
import { readdirSync, readFileSync } from 'node:fs';
import os from 'node:os';

/** Kernel clock ticks per second of /proc/<pid>/stat (USER_HZ: 100 on every Linux we run on). */
const TICKS_PER_S = 100;

/** User + system CPU seconds used so far by `pid`, or null when unknown. */
export function processCpuS(pid: number | undefined): number | null {
  if (!pid) return null;
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // Fields after the command name (which may contain spaces, inside parentheses).
    const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    const utime = Number(rest[11]);
    const stime = Number(rest[12]);
    return Number.isFinite(utime) && Number.isFinite(stime) ? (utime + stime) / TICKS_PER_S : null;
  } catch {
    return null;
  }
}

/** `pid` and every process below it (a daemon's --workers, a tsx wrapper's node), from /proc. */
export function processTree(pid: number): number[] {
  const parent = new Map<number, number>();
  try {
    for (const name of readdirSync('/proc')) {
      if (!/^[0-9]+$/.test(name)) continue;
      try {
        const stat = readFileSync(`/proc/${name}/stat`, 'utf8');
        parent.set(Number(name), Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]));
      } catch {
        // gone meanwhile
      }
    }
  } catch {
    return [pid];
  }
  const out = [pid];
  for (let i = 0; i < out.length; i++) for (const [p, pp] of parent) if (pp === out[i]) out.push(p);
  return out;
}

/** CPU seconds used so far by all of `pids` (null when any is unknown). */
export function treeCpuS(pids: number[]): number | null {
  let sum = 0;
  for (const p of pids) {
    const s = processCpuS(p);
    if (s === null) return null;
    sum += s;
  }
  return sum;
}

export interface MachineCpu {
  busyS: number;
  totalS: number;
}

/** Busy and total CPU seconds of the machine so far (all cores), or null. */
export function machineCpu(): MachineCpu | null {
  try {
    const line = readFileSync('/proc/stat', 'utf8').split('\n')[0]!;
    const v = line.trim().split(/\s+/).slice(1).map(Number);
    const idle = (v[3] ?? 0) + (v[4] ?? 0);
    const total = v.slice(0, 8).reduce((a, x) => a + x, 0);
    return { busyS: (total - idle) / TICKS_PER_S, totalS: total / TICKS_PER_S };
  } catch {
    return null;
  }
}

export const cores = (): number => os.availableParallelism?.() ?? os.cpus().length;

/** Snapshot of named processes and the machine; `since` gives cores used in between. */
export class CpuMeter {
  private readonly t0 = performance.now();
  private readonly procs: Map<string, number | null>;
  private readonly machine0 = machineCpu();

  constructor(private readonly pids: Record<string, number | undefined>) {
    this.procs = new Map(Object.entries(pids).map(([k, pid]) => [k, processCpuS(pid)]));
  }

  /** Cores used by each process since the snapshot (1 = one core busy the whole time), and the machine's busy share. */
  read(): { processes: Record<string, number | null>; machineBusy: number | null; seconds: number } {
    const seconds = (performance.now() - this.t0) / 1000;
    const processes: Record<string, number | null> = {};
    for (const [k, pid] of Object.entries(this.pids)) {
      const a = this.procs.get(k);
      const b = processCpuS(pid);
      processes[k] = a === null || a === undefined || b === null || seconds <= 0 ? null : round2((b - a) / seconds);
    }
    const m1 = machineCpu();
    const machineBusy = this.machine0 && m1 && m1.totalS > this.machine0.totalS
      ? round2((m1.busyS - this.machine0.busyS) / (m1.totalS - this.machine0.totalS))
      : null;
    return { processes, machineBusy, seconds };
  }
}

const round2 = (x: number): number => Math.round(x * 100) / 100;
