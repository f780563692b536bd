// The child side of the agent bench's measured processes (agent-child.ts, agent-day.ts): read
// one JSON line of settings on stdin, run, print one JSON line of results and exit 0; on a
// failure print it on stderr and exit 1. The parent is runJsonChild() in agent.ts.
export function serveOneJsonRequest<S, R>(name: string, run: (settings: S) => Promise<R>): void {
  let input = '';
  process.stdin.setEncoding('utf8');
  process.stdin.on('data', (d: string) => {
    input += d;
    const i = input.indexOf('\n');
    if (i < 0) return;
    process.stdin.pause();
    run(JSON.parse(input.slice(0, i)) as S).then(
      (r) => {
        process.stdout.write(JSON.stringify(r) + '\n');
        process.exit(0);
      },
      (err: Error) => {
        process.stderr.write(`${name}: ${err.stack ?? err.message}\n`);
        process.exit(1);
      },
    );
  });
}
