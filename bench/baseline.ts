// The echo baseline and the shared load driver: `runLoad` forks the load-generator workers
// (at least 2, each its own process) against a target and merges their reports.
import type { LoadCommand, LoadReport, SessionGrant } from './loadgen.js';
import { forkSibling } from './procs.js';
import type { LatencySummary } from './stats.js';
import { Histogram } from './stats.js';
import type { BenchContext, BenchResult } from './types.js';

export const WORKERS = 2;
export const WINDOW = 32;
/** The size of a session REFRESH (49 B), so the echo baseline moves comparable datagrams. */
export const ECHO_BYTES = 49;

export interface LoadOutcome {
  perS: number;
  answered: number;
  lost: number;
  errors: Record<string, number>;
  latency: LatencySummary;
  workers: number;
  window: number;
  requestBytes: number;
  replyBytes: number;
}

export async function runLoad(o: {
  port: number;
  seconds: number;
  kind: LoadCommand['kind'];
  payloadBytes?: number;
  workers?: number;
  window?: number;
  /** One grant per worker (kind session). */
  grants?: SessionGrant[];
}): Promise<LoadOutcome> {
  const workers = Math.max(2, o.workers ?? WORKERS);
  const window = o.window ?? WINDOW;
  const children = Array.from({ length: workers }, () => forkSibling('loadgen'));
  try {
    const reports = await Promise.all(children.map((c, i) => {
      const cmd: LoadCommand = {
        target: { host: '127.0.0.1', port: o.port }, seconds: o.seconds, window, workerId: i + 1, kind: o.kind,
        payloadBytes: o.payloadBytes ?? ECHO_BYTES, ...(o.grants?.[i] ? { session: o.grants[i] } : {}),
      };
      return c.ask<LoadReport>(cmd);
    }));
    const hist = new Histogram();
    const errors: Record<string, number> = {};
    for (const r of reports) {
      hist.merge(Histogram.fromJSON(r.histogram));
      for (const [k, v] of Object.entries(r.errors)) errors[k] = (errors[k] ?? 0) + v;
    }
    const answered = reports.reduce((a, r) => a + r.answered, 0);
    const ms = Math.max(...reports.map((r) => r.ms));
    return {
      perS: (answered * 1000) / ms, answered, lost: reports.reduce((a, r) => a + r.lost, 0), errors, latency: hist.summary(), workers, window,
      requestBytes: reports.reduce((a, r) => a + r.requestBytes, 0), replyBytes: reports.reduce((a, r) => a + r.replyBytes, 0),
    };
  } finally {
    for (const c of children) c.kill();
  }
}

/** Requests/s of a bare node:dgram echo server in its own process, 2 workers flat out. */
export async function runBaseline(ctx: BenchContext): Promise<BenchResult[]> {
  const server = forkSibling('echo-server');
  try {
    const { port } = await server.next<{ port: number }>();
    ctx.log(`baseline: echo server on 127.0.0.1:${port}, ${WORKERS} workers x ${WINDOW} outstanding, ${ctx.seconds} s`);
    const r = await runLoad({ port, seconds: ctx.seconds, kind: 'echo' });
    return [{
      section: 'baseline', name: `udp echo (${ECHO_BYTES} B, ${r.workers} workers x ${r.window})`, value: r.perS, unit: 'req/s', latency: r.latency,
      extra: { answered: r.answered, lost: r.lost },
    }];
  } finally {
    server.kill();
  }
}
