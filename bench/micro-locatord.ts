// The in-process locatord of the micro-benchmarks (presence-micro.ts, refresh-micro.ts): a whole
// embedded locatord (startLocatord) on 127.0.0.1 whose socket's send is stubbed, so datagrams are
// handed to DatagramServer.receive() and its answers collected, no loopback in the figures; and
// terminals whose tickets carry their address (validated without an ADDR_CHALLENGE round trip).
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Logger } from '../src/common/log.js';
import { Metrics } from '../src/common/metrics.js';
import { ClientSession } from '../src/net/clientsession.js';
import type { Locatord } from '../src/locatord/main.js';
import { defaultLimits, startLocatord, withDefaults } from '../src/locatord/main.js';
import type { Address } from '../src/wire/addr.js';
import type { Bodies, MessageName } from '../src/wire/catalog.js';
import { decodeDatagram } from '../src/wire/envelope.js';
import { generatePair, newKid, privateKeyObject, publicKeyObject } from '../src/wire/keys.js';
import { issueTicket } from '../src/wire/ticket.js';

export interface MicroTerminal {
  session: ClientSession;
  from: Address;
  locatorId: Buffer;
  ticket: Buffer;
}

export interface MicroLocatord {
  loc: Locatord;
  /** What locatord sent, in order (empty it before a request to see that request's answers). */
  sent: Buffer[];
  /** A terminal sending from `from`, with a ticket for an hour that names that address. */
  terminal(from: Address): MicroTerminal;
  /** A request ID not used before. */
  rid(): Buffer;
  /** Send `t`'s request through receive() (untimed set-up); throws unless its first answer is not an ERROR. */
  request<N extends MessageName>(t: MicroTerminal, name: N, body: Bodies[N]): Promise<void>;
  /**
   * Hand `bytes` from `from` to receive(), `sent` emptied first: the CPU microseconds (cpuUs) it
   * took, of which about one is the readings' own (emptyPairUs).
   */
  timedReceive(bytes: Buffer, from: Address): Promise<number>;
  /** Stop locatord (no snapshot) and remove its state directory. */
  stop(): Promise<void>;
}

export async function startMicroLocatord(): Promise<MicroLocatord> {
  const dir = mkdtempSync(path.join(tmpdir(), 'micro-locatord-'));
  const sign = generatePair('ed25519');
  const service = generatePair('x25519');
  const kid = newKid();
  const aud = 'locator';
  const loc = await startLocatord(
    withDefaults({
      listen: '127.0.0.1', port: 0, serviceSecret: privateKeyObject('X25519', service), audience: aud,
      trustedKeys: new Map([[kid, publicKeyObject('Ed25519', sign.public)]]), stateDir: dir, reflector: null, snapshot: false,
      limits: { ...defaultLimits, ratePerS: 0, queryRatePerS: 0, querySourceRatePerS: 0, reflectorRatePerS: 0 },
    }),
    new Logger({ service: 'locatord', write: () => undefined }),
    new Metrics(),
  );
  const sent: Buffer[] = [];
  (loc.server.socket as unknown as { send: (b: Buffer) => void }).send = (b: Buffer) => {
    sent.push(b);
  };
  const nowS = Math.floor(Date.now() / 1000);
  let ridN = 0;
  const rid = (): Buffer => {
    const b = Buffer.alloc(8);
    b.writeUInt32BE(++ridN, 4);
    return b;
  };
  return {
    loc,
    sent,
    rid,
    request: async (t, name, body) => {
      sent.length = 0;
      await loc.server.receive(t.session.encode(name, rid(), body), t.from);
      const d = sent[0] && decodeDatagram(sent[0]);
      if (!d?.ok || d.msg.name === 'ERROR') throw new Error(`${name}: ${d?.ok ? JSON.stringify(d.msg.body) : 'no answer'}`);
    },
    terminal: (from) => {
      const cnf = generatePair('x25519');
      const locatorId = randomBytes(16);
      const ticket = issueTicket({ locatorId, aud, iat: nowS, exp: nowS + 3600, cti: randomBytes(16), cnf: cnf.public, addr: from }, Buffer.from(kid, 'hex'), privateKeyObject('Ed25519', sign));
      const session = ClientSession.fromGrant({ aud, ticket, serviceKey: service.public, exp: nowS + 3600 }, privateKeyObject('X25519', cnf))!;
      return { session, from, locatorId, ticket };
    },
    timedReceive: async (bytes, from) => {
      sent.length = 0;
      const t0 = cpuUs();
      await loc.server.receive(bytes, from);
      return cpuUs() - t0;
    },
    stop: async () => {
      await loc.stop({ snapshot: false });
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/**
 * CPU microseconds this process has used (getrusage: every thread, the GC's included), not wall
 * time: on a shared machine a preemption inside a timed call would be counted. A reading costs
 * about a microsecond: the benches take an empty pair of readings off (emptyPairUs).
 */
export function cpuUs(): number {
  const u = process.cpuUsage();
  return u.user + u.system;
}

/** What a pair of readings around an await costs by itself, to take off each timedReceive. */
export async function emptyPairUs(): Promise<number> {
  const t0 = cpuUs();
  await undefined;
  return cpuUs() - t0;
}
