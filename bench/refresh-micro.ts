// What the source-address check costs a REFRESH, in process, without sockets: the micro-benches'
// locatord (micro-locatord.ts: its send stubbed), `terminals` registered sessions (their tickets
// carry their addresses, so every address is validated without a round trip). Measured:
//   - usPerRefresh: locatord's JavaScript per REFRESH, DatagramServer.receive() of it (the path a
//     datagram takes from the socket: decode, MAC, replay window, address check, handler, answer);
//   - nsPerIsValidated: AddressValidation.isValidated(session, from) alone, as receive() calls it
//     once per session datagram (held session, IPv4 address validated);
//   - nsPerNormalisePack: the part of it a cache or a fast path could save, packIp(normaliseIp(ip))
//     on the dotted IPv4 text node:dgram gives;
//   - normalisePackShare: that part as a share of a REFRESH (the review asked for it to be worth
//     5% before adding a branch to the check).
// The loops over isValidated and packIp run `calls` times between two CPU readings, less the same
// loop with an empty body. `node build/bench/refresh-micro.js [refreshes] [rounds]`.
import { pathToFileURL } from 'node:url';
import type { ServerSession } from '../src/net/sessions.js';
import { normaliseIp, packIp } from '../src/wire/addr.js';
import { decodeDatagram } from '../src/wire/envelope.js';
import type { MicroTerminal } from './micro-locatord.js';
import { cpuUs, emptyPairUs, startMicroLocatord } from './micro-locatord.js';
import { median } from './stats.js';

export interface RefreshMicroResult {
  refreshes: number;
  /** Microseconds of locatord JavaScript per REFRESH, median of the rounds. */
  usPerRefresh: number;
  /** Nanoseconds per isValidated call, median of the rounds. */
  nsPerIsValidated: number;
  /** Nanoseconds per packIp(normaliseIp(ip)), median of the rounds. */
  nsPerNormalisePack: number;
  /** nsPerNormalisePack / usPerRefresh. */
  normalisePackShare: number;
  /** Each round's [usPerRefresh, nsPerIsValidated, nsPerNormalisePack]. */
  rounds: [number, number, number][];
}


export async function runRefreshMicro(refreshes = 20_000, rounds = 5, terminals = 1000, calls = 2_000_000): Promise<RefreshMicroResult> {
  const { loc, sent, terminal, rid, request, timedReceive, stop } = await startMicroLocatord();
  // Loopback addresses of several lengths (nothing is sent: the socket's send is stubbed).
  const terms: MicroTerminal[] = [];
  for (let i = 0; i < terminals; i++) terms.push(terminal({ ip: `127.${(i >> 8) & 255}.${i & 255}.${1 + (i % 200)}`, port: 20000 + i }));
  for (const t of terms) await request(t, 'REGISTER', { ticket: t.ticket, timeMs: Date.now() });
  const av = loc.server.routability!;
  const held: ServerSession[] = terms.map((t) => loc.sessions.get(t.session.sid.toString('hex'))!);
  const froms = terms.map((t) => t.from);
  if (!held.every((s, i) => s && av.isValidated(s, froms[i]!))) throw new Error('a session is not held, or its address not validated');

  // A loop of `calls` over the terminals with `body`, CPU microseconds; the sink keeps the body's
  // result alive (so the JIT cannot drop the call).
  let sink = 0;
  const loop = (body: (i: number) => number): number => {
    const t0 = cpuUs();
    for (let k = 0; k < calls; k++) sink += body(k % terminals);
    return cpuUs() - t0;
  };
  const empty = (i: number): number => froms[i]!.port;
  const check = (i: number): number => (av.isValidated(held[i]!, froms[i]!) ? 1 : 0);
  const pack = (i: number): number => {
    const p = packIp(normaliseIp(froms[i]!.ip));
    return typeof p === 'number' ? p : 0;
  };

  const perRound: [number, number, number][] = [];
  for (let r = 0; r < rounds; r++) {
    let us = 0;
    let emptyUs = 0;
    for (let k = 0; k < refreshes; k++) {
      const t = terms[k % terminals]!;
      const refresh = t.session.encode('REFRESH', rid(), {});
      us += await timedReceive(refresh, t.from);
      emptyUs += await emptyPairUs();
      if (k === 0) {
        const d = sent[0] && decodeDatagram(sent[0]);
        if (!d?.ok || d.msg.name !== 'REFRESH_ACK') throw new Error(`REFRESH: ${d?.ok ? `${d.msg.name} ${JSON.stringify(d.msg.body)}` : 'no answer'}`);
      }
    }
    const baseline = loop(empty);
    const checkNs = ((loop(check) - baseline) * 1000) / calls;
    const packNs = ((loop(pack) - baseline) * 1000) / calls;
    perRound.push([Math.round(((us - emptyUs) / refreshes) * 100) / 100, Math.round(checkNs * 10) / 10, Math.round(packNs * 10) / 10]);
  }
  await stop();
  if (sink === 0) throw new Error('nothing was computed');
  const usPerRefresh = median(perRound.map((x) => x[0]));
  const nsPerNormalisePack = median(perRound.map((x) => x[2]));
  return {
    refreshes, usPerRefresh, nsPerIsValidated: median(perRound.map((x) => x[1])), nsPerNormalisePack,
    normalisePackShare: Math.round((nsPerNormalisePack / (usPerRefresh * 1000)) * 10_000) / 10_000, rounds: perRound,
  };
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const [refreshes, rounds] = process.argv.slice(2).map(Number);
  console.log(JSON.stringify(await runRefreshMicro(refreshes || undefined, rounds || undefined)));
}
