// Load-generator worker (a child process of the bench): keeps `window` requests outstanding
// against a UDP target for a fixed time, flat out, and reports answered requests, losses and a
// latency histogram. Kinds of request:
//   echo     a datagram of `payloadBytes` (an 8-byte counter first) to a bare echo server;
//   reflect  an unauthenticated REFLECT (padded to `payloadBytes`) to a DatagramServer;
//   session  session-MACed REFRESHes after one REGISTER opening the session from a ticket and one
//            untimed REFRESH, their ADDR_CHALLENGE answered first, as a terminal does
//            (devloc-protocol(7), ADDRESS VALIDATION).
// A request unanswered after LOSS_MS counts as lost and is replaced, so the window never shrinks.
import dgram from 'node:dgram';
import { UdpClient } from '../src/net/client.js';
import { ClientSession } from '../src/net/clientsession.js';
import { peekEnvelope } from '../src/net/server.js';
import { decodeDatagram, encodeDatagram } from '../src/wire/envelope.js';
import { privateKeyObject } from '../src/wire/keys.js';
import type { HistogramJSON } from './stats.js';
import { Histogram } from './stats.js';
import { toParent } from './procs.js';

export interface SessionGrant {
  aud: string;
  ticketHex: string;
  serviceKeyHex: string;
  exp: number;
  cnfSecretHex: string;
  cnfPublicHex: string;
}

export interface LoadCommand {
  target: { host: string; port: number };
  seconds: number;
  window: number;
  workerId: number;
  kind: 'echo' | 'reflect' | 'session';
  payloadBytes: number;
  session?: SessionGrant;
}

export interface LoadReport {
  answered: number;
  lost: number;
  /** Answers that were refusals, by error code. */
  errors: Record<string, number>;
  /** Measured duration, ms. */
  ms: number;
  histogram: HistogramJSON;
  requestBytes: number;
  replyBytes: number;
}

const LOSS_MS = 500;

function x25519Secret(secretHex: string, publicHex: string) {
  return privateKeyObject('X25519', { secret: Buffer.from(secretHex, 'hex'), public: Buffer.from(publicHex, 'hex') });
}

async function run(c: LoadCommand): Promise<LoadReport> {
  const socket = dgram.createSocket('udp4');
  await new Promise<void>((r) => socket.bind(0, '127.0.0.1', () => r()));
  try {
    socket.setRecvBufferSize(4 << 20);
  } catch {
    /* the system maximum applies */
  }
  const hist = new Histogram();
  const outstanding = new Map<number, number>();
  const errors: Record<string, number> = {};
  let counter = 0;
  let answered = 0;
  let lost = 0;
  let running = false;
  let requestBytes = 0;
  let replyBytes = 0;
  const rid = (n: number): Buffer => {
    const b = Buffer.alloc(8);
    b.writeUInt16BE(c.workerId, 0);
    b.writeUIntBE(n, 2, 6);
    return b;
  };
  const idOf = (raw: Buffer): number | undefined => {
    if (c.kind === 'echo') return raw.length >= 8 ? raw.readUIntBE(2, 6) : undefined;
    const r = peekEnvelope(raw).rid;
    return r ? Buffer.from(r).readUIntBE(2, 6) : undefined;
  };
  let session: ClientSession | null = null;
  if (c.kind === 'session') {
    const g = c.session!;
    session = ClientSession.fromGrant(
      { aud: g.aud, ticket: Buffer.from(g.ticketHex, 'hex'), serviceKey: Buffer.from(g.serviceKeyHex, 'hex'), exp: g.exp },
      x25519Secret(g.cnfSecretHex, g.cnfPublicHex),
    );
    if (!session) throw new Error('unusable grant');
  }
  const build = (n: number): Buffer => {
    switch (c.kind) {
      case 'echo': {
        const b = Buffer.alloc(c.payloadBytes);
        b.writeUInt16BE(c.workerId, 0);
        b.writeUIntBE(n, 2, 6);
        return b;
      }
      case 'reflect':
        return encodeDatagram('REFLECT', rid(n), { padding: Buffer.alloc(Math.max(0, c.payloadBytes - 16)) });
      case 'session':
        return session!.encode('REFRESH', rid(n), {});
    }
  };
  const sendNext = (): void => {
    const n = ++counter;
    const d = build(n);
    requestBytes += d.length;
    outstanding.set(n, performance.now());
    socket.send(d, c.target.port, c.target.host);
  };
  if (session) {
    // Open the session (REGISTER with the ticket), then one untimed REFRESH, through the client
    // every terminal uses (src/net/client.ts: retransmission, and an ADDR_CHALLENGE checked by
    // the session MAC and answered with its proof). A REFRESH_ACK is larger than its REFRESH, so
    // the server sends it only to an address proven for the session: it challenges the REGISTER
    // when it wants to, else the first REFRESH (devloc-protocol(7), ADDRESS VALIDATION). The
    // measured REFRESHes then find the address proven; before, the load was all challenges,
    // counted as lost. The client then gives the socket back: the measured load is read below
    // without a second decode of every datagram.
    const client = await UdpClient.open({ socket, policy: { initialTimeoutMs: 200, maxRetransmit: 5, deadlineMs: 10_000 } });
    const to = { ip: c.target.host, port: c.target.port };
    const ask = async (name: 'REGISTER' | 'REFRESH', datagram: Buffer, n: number): Promise<void> => {
      const r = await client.request(to, datagram, rid(n), { accept: (reply) => session!.accept(reply) });
      if (r.msg.name === 'ERROR') throw new Error(`${name} refused: ${r.msg.body.code}`);
      if (r.msg.name !== `${name}_ACK`) throw new Error(`${name} answered ${r.msg.name}`);
    };
    try {
      let n = ++counter;
      await ask('REGISTER', session.encode('REGISTER', rid(n), { ticket: Buffer.from(c.session!.ticketHex, 'hex'), timeMs: Date.now() }), n);
      n = ++counter;
      await ask('REFRESH', session.encode('REFRESH', rid(n), {}), n);
    } finally {
      client.detach();
    }
  }
  socket.on('message', (raw) => {
    const n = idOf(raw);
    if (n === undefined) return;
    const at = outstanding.get(n);
    if (at === undefined) return;
    outstanding.delete(n);
    if (!running) return;
    hist.record(performance.now() - at);
    answered++;
    replyBytes += raw.length;
    if (c.kind !== 'echo' && raw[2] === 0x18 && raw[3] === 0x7f) {
      const d = decodeDatagram(raw);
      const code = d.ok && d.msg.name === 'ERROR' ? String(d.msg.body.code) : 'undecodable';
      errors[code] = (errors[code] ?? 0) + 1;
    }
    sendNext();
  });
  running = true;
  const started = performance.now();
  for (let i = 0; i < c.window; i++) sendNext();
  const sweeper = setInterval(() => {
    const now = performance.now();
    for (const [n, at] of outstanding) {
      if (now - at > LOSS_MS) {
        outstanding.delete(n);
        lost++;
        if (running) sendNext();
      }
    }
  }, 50);
  await new Promise((r) => setTimeout(r, c.seconds * 1000));
  running = false;
  const ms = performance.now() - started;
  clearInterval(sweeper);
  socket.close();
  return { answered, lost, errors, ms, histogram: hist.toJSON(), requestBytes, replyBytes };
}

process.on('message', (m: LoadCommand) => {
  run(m).then(toParent, (err: Error) => toParent({ error: err.stack ?? err.message }));
});
process.on('disconnect', () => process.exit(0));
