// Child process of bench.ts (child_process.fork), driven over IPC:
//   - load generator: opens N sessions of its own (tickets made here), then sends MACed
//     REGISTER / REFRESH / QUERY_ADDR flat out with a window of outstanding requests, to locatord
//     or to the echo baseline, and reports how many were answered (tickets name the socket's
//     address, as authd's do, so locatord validates it when the session opens; an ADDR_CHALLENGE,
//     from an instance that did not open the session, is answered and the request sent again);
//   - echo: a bare node:dgram echo server (the baseline: same sockets, same datagrams, no work);
//   - table: the in-process table at 1M entries, for memory per terminal and sweep time
//     (run with --expose-gc).
import dgram from 'node:dgram';
import { randomBytes } from 'node:crypto';
import { addrProof } from '../src/net/client.js';
import { ClientSession } from '../src/net/clientsession.js';
import type { Address } from '../src/wire/addr.js';
import type { Bodies, MessageName } from '../src/wire/catalog.js';
import { decodeDatagram } from '../src/wire/envelope.js';
import { generatePair, privateKeyObject } from '../src/wire/keys.js';
import { issueTicket } from '../src/wire/ticket.js';
import { Registration, RegistrationTable, TICK_MS } from '../src/locatord/table.js';

export type WorkerCommand =
  | { cmd: 'setup'; target: Address; kid: string; authdSign: { public: string; secret: string }; servicePublic: string; audience: string; sessions: number }
  | { cmd: 'register'; window: number }
  | { cmd: 'run'; kind: 'REFRESH' | 'QUERY_ADDR'; target?: Address; seconds: number; window: number; idsPerQuery: number }
  | { cmd: 'echo' }
  | { cmd: 'table'; entries: number; nickname: boolean }
  | { cmd: 'exit' };

export interface RunResult {
  answered: number;
  lost: number;
  ms: number;
}

interface Terminal {
  locatorId: Buffer;
  ticket: Buffer;
  session: ClientSession;
}

const send = (m: unknown): void => {
  process.send!(m);
};

/** Where the request ID sits in an envelope: after 0x84/0x85, version 1, the type (1 or 2 bytes), 0x48. */
function ridCounter(b: Buffer): number {
  const off = b[2] === 0x18 ? 4 : 3;
  return b.length >= off + 9 ? b.readUInt32BE(off + 5) : -1;
}

class LoadGenerator {
  readonly terminals: Terminal[] = [];
  private readonly socket = dgram.createSocket('udp4');
  private readonly prefix = randomBytes(4);
  private counter = 0;
  private target: Address = { ip: '127.0.0.1', port: 0 };

  async setup(c: Extract<WorkerCommand, { cmd: 'setup' }>): Promise<void> {
    this.target = c.target;
    await new Promise<void>((r) => this.socket.bind(0, '127.0.0.1', r));
    this.socket.setRecvBufferSize(8 << 20);
    this.socket.setSendBufferSize(8 << 20);
    const signer = privateKeyObject('Ed25519', { public: Buffer.from(c.authdSign.public, 'base64url'), secret: Buffer.from(c.authdSign.secret, 'base64url') });
    const now = Math.floor(Date.now() / 1000);
    const addr = { ip: '127.0.0.1', port: this.socket.address().port };
    for (let i = 0; i < c.sessions; i++) {
      const cnf = generatePair('x25519');
      const locatorId = randomBytes(16);
      const ticket = issueTicket({ locatorId, aud: c.audience, iat: now, exp: now + 3600, cti: randomBytes(16), cnf: cnf.public, addr }, Buffer.from(c.kid, 'hex'), signer);
      const session = ClientSession.fromGrant({ aud: c.audience, ticket, serviceKey: Buffer.from(c.servicePublic, 'base64url'), exp: now + 3600 }, privateKeyObject('X25519', cnf))!;
      this.terminals.push({ locatorId, ticket, session });
    }
  }

  private rid(): { rid: Buffer; n: number } {
    const n = (this.counter = (this.counter + 1) >>> 0);
    const rid = Buffer.allocUnsafe(8);
    this.prefix.copy(rid, 0);
    rid.writeUInt32BE(n, 4);
    return { rid, n };
  }

  /**
   * Keep `window` requests outstanding until `next` returns null (or `seconds` pass); a request
   * unanswered for a second is counted lost and replaced.
   */
  private drive(to: Address, window: number, seconds: number, next: () => { name: MessageName; body: Bodies[MessageName]; session: ClientSession } | null): Promise<RunResult> {
    return new Promise((resolve) => {
      const inflight = new Map<number, number>();
      /** What each request sent (sent again after an ADDR_CHALLENGE). */
      const sent = new Map<number, { bytes: Buffer; session: ClientSession }>();
      let answered = 0;
      let lost = 0;
      let done = false;
      const started = Date.now();
      const fire = (): void => {
        if (done) return;
        const req = next();
        if (!req) {
          if (inflight.size === 0) finish();
          return;
        }
        const { rid, n } = this.rid();
        inflight.set(n, Date.now());
        const bytes = req.session.encode(req.name, rid, req.body as never);
        sent.set(n, { bytes, session: req.session });
        this.socket.send(bytes, to.port, to.ip);
      };
      const onMessage = (b: Buffer): void => {
        const n = ridCounter(b);
        const s = sent.get(n);
        if (s && b[2] === 0x0a) {
          const d = decodeDatagram(b);
          if (d.ok && d.msg.name === 'ADDR_CHALLENGE' && s.session.accept({ msg: d.msg, raw: b, from: to })) {
            this.socket.send(addrProof(d.msg), to.port, to.ip);
            this.socket.send(s.bytes, to.port, to.ip);
            return;
          }
        }
        sent.delete(n);
        if (!inflight.delete(n)) return;
        answered++;
        fire();
      };
      const sweep = setInterval(() => {
        const now = Date.now();
        for (const [n, at] of inflight) {
          if (now - at < 1000) continue;
          inflight.delete(n);
          sent.delete(n);
          lost++;
          fire();
        }
      }, 100);
      const stop = seconds > 0 ? setTimeout(() => finish(), seconds * 1000) : undefined;
      const finish = (): void => {
        if (done) return;
        done = true;
        clearInterval(sweep);
        if (stop) clearTimeout(stop);
        this.socket.off('message', onMessage);
        resolve({ answered, lost, ms: Date.now() - started });
      };
      this.socket.on('message', onMessage);
      for (let i = 0; i < window; i++) fire();
    });
  }

  /** REGISTER every terminal once (each opens a session: signature check + X25519 at locatord). */
  async register(window: number): Promise<RunResult> {
    let i = 0;
    const pending = [...this.terminals];
    return this.drive(this.target, window, 0, () => {
      const t = pending[i++];
      return t ? { name: 'REGISTER', body: { ticket: t.ticket, timeMs: Date.now() }, session: t.session } : null;
    });
  }

  async run(c: Extract<WorkerCommand, { cmd: 'run' }>): Promise<RunResult> {
    let i = 0;
    const ts = this.terminals;
    return this.drive(c.target ?? this.target, c.window, c.seconds, () => {
      const t = ts[i++ % ts.length]!;
      if (c.kind === 'REFRESH') return { name: 'REFRESH', body: {}, session: t.session };
      const ids: Buffer[] = [];
      for (let k = 1; k <= c.idsPerQuery; k++) ids.push(ts[(i * 7 + k) % ts.length]!.locatorId);
      return { name: 'QUERY_ADDR', body: { ids }, session: t.session };
    });
  }
}

async function echo(): Promise<void> {
  const s = dgram.createSocket('udp4');
  await new Promise<void>((r) => s.bind(0, '127.0.0.1', r));
  s.setRecvBufferSize(8 << 20);
  s.on('message', (m, r) => s.send(m, r.port, r.address));
  send({ port: s.address().port });
}

const gc = (): void => {
  const g = (globalThis as { gc?: () => void }).gc;
  for (let i = 0; i < 4; i++) g?.();
};

/** Memory per registered terminal and sweep times, at `entries` records. */
function table(entries: number, nickname: boolean): Record<string, number> {
  let clock = Date.now();
  const t = new RegistrationTable({ maxEntries: entries, now: () => clock });
  gc();
  const before = process.memoryUsage();
  for (let i = 0; i < entries; i++) {
    // Locator ID in hex (in the daemon the same string as the session's), IPv4 source, port.
    const key = randomBytes(16).toString('hex');
    const rec = new Registration({ ip: `${10 + (i >>> 24)}.${(i >>> 16) & 255}.${(i >>> 8) & 255}.${i & 255}`, port: 1024 + (i % 60000) }, undefined, 1, 0, 0);
    rec.netMode = 4;
    if (nickname) rec.nickname = `player-${i}`;
    // Half the table on a 90 s TTL, half on 1200 s: the sweep at 91 s frees the first half.
    t.renew(rec, (i % 2 ? 90 : 1200) * 1000);
    t.set(key, rec);
  }
  gc();
  const after = process.memoryUsage();
  const time = (f: () => unknown): number => {
    const started = process.hrtime.bigint();
    f();
    return Number(process.hrtime.bigint() - started) / 1e6;
  };
  clock += 1000 + TICK_MS;
  const idleMs = time(() => t.sweep(1000, Infinity));
  clock += 90_000;
  let expired = 0;
  const expireMs = time(() => (expired = t.sweep(1000, Infinity).expired));
  const perExpiredUs = (expireMs * 1000) / Math.max(1, expired);
  return {
    entries,
    heapBytesPerEntry: Math.round((after.heapUsed - before.heapUsed) / entries),
    rssBytesPerEntry: Math.round((after.rss - before.rss) / entries),
    sweepIdleMs: Math.round(idleMs * 100) / 100,
    sweepExpireHalfMs: Math.round(expireMs),
    expired,
    sweepUsPerExpired: Math.round(perExpiredUs * 100) / 100,
    // Steady state: a full table of 90 s registrations turns over entries/90 per second.
    steadySweepMsPerS: Math.round(((entries / 90) * perExpiredUs) / 10) / 100,
  };
}

let gen: LoadGenerator | undefined;
process.on('message', (m: WorkerCommand) => {
  void (async () => {
    switch (m.cmd) {
      case 'setup':
        gen = new LoadGenerator();
        await gen.setup(m);
        send({ ready: gen.terminals.length });
        break;
      case 'register':
        send(await gen!.register(m.window));
        break;
      case 'run':
        send(await gen!.run(m));
        break;
      case 'echo':
        await echo();
        break;
      case 'table':
        send(table(m.entries, m.nickname));
        break;
      case 'exit':
        process.exit(0);
    }
  })().catch((err: Error) => {
    send({ error: err.message });
  });
});
