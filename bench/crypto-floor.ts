// Child process of the authd bench (forkSibling('crypto-floor')): the crypto floor of an
// authentication server on this machine (issue 16 item 3). A node:dgram server whose cluster
// workers share one port, as `devloc-authd --workers N` does, and do per datagram exactly the
// ceiling's three operations (crypto-ceiling.ts: Ed25519 verify, X25519 with the peer key's
// import, Ed25519 sign), then answer with a prebuilt AUTH_RESPONSE carrying the request's ID. No
// CBOR, no seal, no database, no gate: what authd would reach if everything but the ceiling's
// crypto cost nothing, driven by the same load generator as authd. The ceiling is a tight loop;
// this is the same work behind a UDP socket and an event loop.
//
// IPC: the parent sends { workers, request, rid } (an example AUTH_REQUEST and its request ID,
// to find where a request carries its ID) and gets { port }; then { op: 'count' } answers
// { verified }: how many datagrams were answered with a proof that verified. A worker that dies
// ends the floor with { error }, so the bench fails instead of waiting.
import cluster from 'node:cluster';
import dgram from 'node:dgram';
import { encodeDatagram } from '../src/wire/envelope.js';
import { ceilingOperations } from './crypto-ceiling.js';
import { toParent } from './procs.js';

interface Start {
  workers: number;
  /** An AUTH_REQUEST datagram and its request ID (hex). */
  request: string;
  rid: string;
}

/** Where `rid` sits in `datagram` (the envelope's third item); throws when it is not there once. */
function ridOffset(datagram: Buffer, rid: Buffer): number {
  const at = datagram.indexOf(rid);
  if (at < 0 || datagram.indexOf(rid, at + 1) >= 0) throw new Error('request ID not found once in the example datagram');
  return at;
}

if (cluster.isPrimary) {
  process.once('message', (m: Start) => {
    const counts = new Map<number, (n: number) => void>();
    let ready = 0;
    for (let i = 0; i < m.workers; i++) {
      const w = cluster.fork({ DEVLOC_FLOOR_START: JSON.stringify(m) });
      w.on('message', (x: { port?: number; verified?: number }) => {
        if (x.port !== undefined && ++ready === m.workers) toParent({ port: x.port });
        if (x.verified !== undefined) counts.get(w.id)?.(x.verified);
      });
    }
    process.on('message', (q: { op?: string }) => {
      if (q.op !== 'count') return;
      const workers = Object.values(cluster.workers ?? {}).filter((w) => w !== undefined);
      void Promise.all(workers.map((w) => new Promise<number>((resolve) => {
        counts.set(w.id, resolve);
        w.send({ op: 'count' });
      }))).then((ns) => toParent({ verified: ns.reduce((a, b) => a + b, 0) }));
    });
  });
  cluster.on('exit', (w, code, signal) => {
    toParent({ error: `crypto floor worker ${w.process.pid} exited (${code ?? signal})` });
    process.exit(1);
  });
  // The workers exit by themselves when their channel to this process closes.
  process.on('disconnect', () => process.exit(0));
} else {
  const start = JSON.parse(process.env['DEVLOC_FLOOR_START']!) as Start;
  const example = Buffer.from(start.request, 'hex');
  const rid = Buffer.from(start.rid, 'hex');
  const inAt = ridOffset(example, rid);
  // Sealed grants are ~300-900 B; 400 is one ticket's.
  const reply = encodeDatagram('AUTH_RESPONSE', rid, { sealed: Buffer.alloc(400) });
  const outAt = ridOffset(reply, rid);
  const ops = ceilingOperations();
  let verified = 0;
  const socket = dgram.createSocket('udp4');
  socket.on('message', (m, from) => {
    if (m.length < inAt + rid.length) return;
    if (ops.verify()) verified++;
    ops.x25519();
    ops.sign();
    m.copy(reply, outAt, inAt, inAt + rid.length);
    // A copy: a send the kernel cannot take at once is queued with its buffer, which the next
    // datagram's ID would overwrite.
    socket.send(Buffer.from(reply), from.port, from.address);
  });
  process.on('message', (q: { op?: string }) => {
    if (q.op === 'count') process.send!({ verified });
  });
  socket.bind(0, '127.0.0.1', () => {
    try {
      socket.setRecvBufferSize(4 << 20);
    } catch {
      /* the system maximum applies */
    }
    process.send!({ port: socket.address().port });
  });
}
