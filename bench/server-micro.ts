// In-process cost of DatagramServer.receive() per datagram (per CPU second), without sockets: a stub socket
// counts what would be sent, and the requests are encoded (and MACed) before the clock starts,
// so only the server's side is timed. For profiling: `node --cpu-prof build/bench/server-micro.js`.
// Usage: node build/bench/server-micro.js [seconds per kind] [reflect|refresh]
import { randomBytes } from 'node:crypto';
import { EventEmitter } from 'node:events';
import type dgram from 'node:dgram';
import { Logger } from '../src/common/log.js';
import { Metrics } from '../src/common/metrics.js';
import { ClientSession } from '../src/net/clientsession.js';
import { DatagramServer } from '../src/net/server.js';
import { ServerSessions } from '../src/net/sessions.js';
import { encodeDatagram } from '../src/wire/envelope.js';
import { generatePair, privateKeyObject, publicKeyObject } from '../src/wire/keys.js';
import { issueTicket, TicketVerifier } from '../src/wire/ticket.js';

class StubSocket extends EventEmitter {
  sent = 0;
  send(_b: Uint8Array, _port: number, _host: string, cb?: (err: Error | null) => void): void {
    this.sent++;
    if (cb) queueMicrotask(() => cb(null));
  }
  close(cb?: () => void): void {
    cb?.();
  }
}

export interface ServerMicroResult {
  reflectPerS: number;
  refreshPerS: number;
}

export async function runServerMicro(seconds: number, only?: 'reflect' | 'refresh', batch = 20_000): Promise<ServerMicroResult> {
  const authd = generatePair('ed25519');
  const service = generatePair('x25519');
  const kid = Buffer.from('be7c0001', 'hex');
  const aud = 'locatord';
  const now = Math.floor(Date.now() / 1000);
  const cnf = generatePair('x25519');
  const ticket = issueTicket({ locatorId: randomBytes(16), aud, iat: now, exp: now + 3600, cti: randomBytes(16), cnf: cnf.public }, kid, privateKeyObject('Ed25519', authd));
  const verifier = new TicketVerifier({ keys: new Map([[kid.toString('hex'), publicKeyObject('Ed25519', authd.public)]]), audience: aud });
  const sessions = new ServerSessions({ verifier, serviceSecret: privateKeyObject('X25519', service) });
  const socket = new StubSocket();
  const ack = { ttlS: 90, refreshS: 25 };
  const server = new DatagramServer({
    service: 'bench', socket: socket as unknown as dgram.Socket, sessions,
    logger: new Logger({ service: 'bench', write: () => undefined }), metrics: new Metrics(),
    handlers: {
      REFLECT: (ctx) => ctx.reply('REFLECT_RESULT', { observed: ctx.from, from: ctx.from }),
      REGISTER: (ctx) => ctx.reply('REGISTER_ACK', { observed: ctx.from, ...ack, locatorId: ctx.session!.locatorId }),
      REFRESH: (ctx) => ctx.reply('REFRESH_ACK', { observed: ctx.from, ...ack, locatorId: ctx.session!.locatorId }),
    },
  });
  const client = ClientSession.fromGrant({ aud, ticket, serviceKey: service.public, exp: now + 3600 }, privateKeyObject('X25519', cnf))!;
  const from = { ip: '127.0.0.1', port: 40000 };
  let n = 0;
  const rid = (): Buffer => {
    const b = Buffer.alloc(8);
    b.writeUIntBE(++n, 2, 6);
    return b;
  };
  await server.receive(client.encode('REGISTER', rid(), { ticket, timeMs: Date.now() }), from);

  const time = async (make: () => Buffer): Promise<number> => {
    let done = 0;
    let spentMs = 0;
    const t0 = performance.now();
    const end = t0 + seconds * 1000;
    while (performance.now() < end) {
      const reqs = Array.from({ length: batch }, make);
      // CPU time, not wall time: the figure should not depend on what else the machine runs.
      // The building of requests is excluded.
      const c = process.cpuUsage();
      for (const r of reqs) void server.receive(r, from);
      await new Promise((r) => setImmediate(r));
      const used = process.cpuUsage(c);
      done += reqs.length;
      spentMs += (used.user + used.system) / 1000;
    }
    return done / (spentMs / 1000);
  };
  const padding = Buffer.alloc(48);
  await time(() => encodeDatagram('REFLECT', rid(), { padding })); // warm-up
  const reflectPerS = only === 'refresh' ? 0 : await time(() => encodeDatagram('REFLECT', rid(), { padding }));
  const refreshPerS = only === 'reflect' ? 0 : await time(() => client.encode('REFRESH', rid(), {}));
  await server.close();
  return { reflectPerS, refreshPerS };
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const seconds = Number(process.argv[2] ?? 2);
  const only = process.argv[3] === 'reflect' || process.argv[3] === 'refresh' ? process.argv[3] : undefined;
  runServerMicro(seconds, only).then((r) => {
    process.stdout.write(`receive() REFLECT ${Math.round(r.reflectPerS)}/s  REFRESH ${Math.round(r.refreshPerS)}/s\n`);
  }, (err: Error) => {
    process.stderr.write(`${err.stack ?? err.message}\n`);
    process.exit(1);
  });
}
