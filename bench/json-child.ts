// The child side of the agent bench's instrumented processes (agent-child.ts, agent-day.ts: CPU,
// wire bytes, heap; their RSS is not the footprint figure, see measured-process.ts): read
// one JSON line of settings on stdin, run, print one JSON line of results and exit 0; on a
// failure print it on stderr and exit 1. The parent is runJsonChild() in agent.ts.
import { readFileSync } from 'node:fs';

export function serveOneJsonRequest<S, R>(name: string, run: (settings: S) => Promise<R>): void {
  // Read synchronously from fd 0, not through process.stdin: a pipe on process.stdin is a
  // net.Socket (0.75 MiB of RSS), and the heap these children report should not hold it either.
  const input = readFileSync(0, 'utf8');
  const i = input.indexOf('\n');
  run(JSON.parse(i < 0 ? input : input.slice(0, i)) as S).then(
    (r) => {
      process.stdout.write(JSON.stringify(r) + '\n');
      process.exit(0);
    },
    (err: Error) => {
      process.stderr.write(`${name}: ${err.stack ?? err.message}\n`);
      process.exit(1);
    },
  );
}
