// In-process cost of one presence change to locatord's JavaScript, without sockets: a whole
// embedded locatord (startLocatord) whose socket's send is stubbed, `terminals` changers each
// watched by one watcher; per change its PRESENCE_SET and then the watcher's PRESENCE_ACK of the
// push go through DatagramServer.receive(), the path a datagram takes from the socket. Only the
// two receive() calls are timed (the terminals' encodings are not), so the figure is locatord's
// JavaScript per change (the PRESENCE_SET answered, one PRESENCE made, the ack taken), what the
// sends and receives of the datagrams add is the bench's ceiling (presence.ts).
// For profiling: `node --cpu-prof build/bench/presence-micro.js [changes] [rounds]`.
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { Logger } from '../src/common/log.js';
import { Metrics } from '../src/common/metrics.js';
import { ClientSession } from '../src/net/clientsession.js';
import { defaultLimits, startLocatord, withDefaults } from '../src/locatord/main.js';
import type { Address } from '../src/wire/addr.js';
import type { Bodies } from '../src/wire/catalog.js';
import { decodeDatagram } from '../src/wire/envelope.js';
import { generatePair, newKid, privateKeyObject, publicKeyObject } from '../src/wire/keys.js';
import { issueTicket } from '../src/wire/ticket.js';

export interface PresenceMicroResult {
  changes: number;
  /** Microseconds of locatord JavaScript per change (PRESENCE_SET in, its answer and one PRESENCE out, the ack in), median of the rounds. */
  usPerChange: number;
  /** Each round's figure. */
  rounds: number[];
}

interface Terminal {
  session: ClientSession;
  from: Address;
  locatorId: Buffer;
  ticket: Buffer;
}

export async function runPresenceMicro(changes = 20_000, rounds = 5, terminals = 1000): Promise<PresenceMicroResult> {
  const dir = mkdtempSync(path.join(tmpdir(), 'presence-micro-'));
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
  const open = (i: number): Terminal => {
    const cnf = generatePair('x25519');
    const from = { ip: '127.0.0.1', port: 20000 + i };
    const locatorId = randomBytes(16);
    const ticket = issueTicket({ locatorId, aud, iat: nowS, exp: nowS + 3600, cti: randomBytes(16), cnf: cnf.public, addr: from }, Buffer.from(kid, 'hex'), privateKeyObject('Ed25519', sign));
    const session = ClientSession.fromGrant({ aud, ticket, serviceKey: service.public, exp: nowS + 3600 }, privateKeyObject('X25519', cnf))!;
    return { session, from, locatorId, ticket };
  };
  let ridN = 0;
  const rid = (): Buffer => {
    const b = Buffer.alloc(8);
    b.writeUInt32BE(++ridN, 4);
    return b;
  };
  const request = async <N extends 'REGISTER' | 'WATCH'>(t: Terminal, name: N, body: Bodies[N]): Promise<void> => {
    sent.length = 0;
    await loc.server.receive(t.session.encode(name, rid(), body as never), t.from);
    const d = sent[0] && decodeDatagram(sent[0]);
    if (!d?.ok || d.msg.name === 'ERROR') throw new Error(`${name}: ${d?.ok ? JSON.stringify(d.msg.body) : 'no answer'}`);
  };
  const changers: Terminal[] = [];
  const watchers: Terminal[] = [];
  for (let i = 0; i < terminals; i++) {
    changers.push(open(i));
    watchers.push(open(terminals + i));
  }
  for (const t of [...changers, ...watchers]) await request(t, 'REGISTER', { ticket: t.ticket, timeMs: Date.now() });
  for (let i = 0; i < terminals; i++) await request(watchers[i]!, 'WATCH', { ids: [changers[i]!.locatorId] });

  // CPU time (getrusage: every thread of the process, the GC's included), not wall time: on a
  // shared machine a preemption inside a receive() would be counted. Each reading costs about a
  // microsecond: an empty pair of readings, measured alongside, is taken off.
  const cpuUs = (): number => {
    const u = process.cpuUsage();
    return u.user + u.system;
  };
  const perRound: number[] = [];
  for (let r = 0; r < rounds; r++) {
    let us = 0;
    let emptyUs = 0;
    for (let k = 0; k < changes; k++) {
      const i = k % terminals;
      const set = changers[i]!.session.encode('PRESENCE_SET', rid(), { presence: { status: `${r}.${k}` } });
      sent.length = 0;
      const t0 = cpuUs();
      await loc.server.receive(set, changers[i]!.from);
      us += cpuUs() - t0;
      // sent: the PRESENCE (made inside the handler) and the PRESENCE_SET_ACK.
      const push = sent.map((b) => decodeDatagram(b)).find((d) => d.ok && d.msg.name === 'PRESENCE');
      if (!push?.ok) throw new Error(`change ${k}: no PRESENCE pushed`);
      const w = watchers[i]!;
      const ack = w.session.encode('PRESENCE_ACK', push.msg.rid, { id: (push.msg.body as Bodies['PRESENCE']).id });
      const t2 = cpuUs();
      await loc.server.receive(ack, w.from);
      us += cpuUs() - t2;
      const t4 = cpuUs();
      await undefined;
      emptyUs += cpuUs() - t4;
    }
    if (loc.presencePushes.size !== 0) throw new Error(`${loc.presencePushes.size} pushes left unacknowledged`);
    perRound.push(Math.round(((us - 2 * emptyUs) / changes) * 100) / 100);
  }
  await loc.stop({ snapshot: false });
  rmSync(dir, { recursive: true, force: true });
  const sorted = [...perRound].sort((a, b) => a - b);
  return { changes, usPerChange: sorted[Math.floor(sorted.length / 2)]!, rounds: perRound };
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const [changes, rounds] = process.argv.slice(2).map(Number);
  console.log(JSON.stringify(await runPresenceMicro(changes || undefined, rounds || undefined)));
}
