// In-process cost of one presence change to locatord's JavaScript, without sockets: a whole
// embedded locatord (startLocatord) whose socket's send is stubbed, `terminals` changers each
// watched by one watcher; per change its PRESENCE_SET and then the watcher's PRESENCE_ACK of the
// push go through DatagramServer.receive(), the path a datagram takes from the socket. Only the
// two receive() calls are timed (the terminals' encodings are not), so the figure is locatord's
// JavaScript per change (the PRESENCE_SET answered, one PRESENCE made, the ack taken), what the
// sends and receives of the datagrams add is the bench's ceiling (presence.ts).
// For profiling: `node --cpu-prof build/bench/presence-micro.js [changes] [rounds]`.
import { pathToFileURL } from 'node:url';
import type { Bodies } from '../src/wire/catalog.js';
import { decodeDatagram } from '../src/wire/envelope.js';
import type { MicroTerminal as Terminal } from './micro-locatord.js';
import { emptyPairUs, startMicroLocatord } from './micro-locatord.js';

export interface PresenceMicroResult {
  changes: number;
  /** Microseconds of locatord JavaScript per change (PRESENCE_SET in, its answer and one PRESENCE out, the ack in), median of the rounds. */
  usPerChange: number;
  /** Each round's figure. */
  rounds: number[];
}

export async function runPresenceMicro(changes = 20_000, rounds = 5, terminals = 1000): Promise<PresenceMicroResult> {
  const { loc, sent, terminal, rid, request, timedReceive, stop } = await startMicroLocatord();
  const open = (i: number): Terminal => terminal({ ip: '127.0.0.1', port: 20000 + i });
  const changers: Terminal[] = [];
  const watchers: Terminal[] = [];
  for (let i = 0; i < terminals; i++) {
    changers.push(open(i));
    watchers.push(open(terminals + i));
  }
  for (const t of [...changers, ...watchers]) await request(t, 'REGISTER', { ticket: t.ticket, timeMs: Date.now() });
  for (let i = 0; i < terminals; i++) await request(watchers[i]!, 'WATCH', { ids: [changers[i]!.locatorId] });

  const perRound: number[] = [];
  for (let r = 0; r < rounds; r++) {
    let us = 0;
    let emptyUs = 0;
    for (let k = 0; k < changes; k++) {
      const i = k % terminals;
      const set = changers[i]!.session.encode('PRESENCE_SET', rid(), { presence: { status: `${r}.${k}` } });
      us += await timedReceive(set, changers[i]!.from);
      // sent: the PRESENCE (made inside the handler) and the PRESENCE_SET_ACK.
      const push = sent.map((b) => decodeDatagram(b)).find((d) => d.ok && d.msg.name === 'PRESENCE');
      if (!push?.ok) throw new Error(`change ${k}: no PRESENCE pushed`);
      const w = watchers[i]!;
      const ack = w.session.encode('PRESENCE_ACK', push.msg.rid, { id: (push.msg.body as Bodies['PRESENCE']).id });
      us += await timedReceive(ack, w.from);
      emptyUs += await emptyPairUs();
    }
    if (loc.presencePushes.size !== 0) throw new Error(`${loc.presencePushes.size} pushes left unacknowledged`);
    perRound.push(Math.round(((us - 2 * emptyUs) / changes) * 100) / 100);
  }
  await stop();
  const sorted = [...perRound].sort((a, b) => a - b);
  return { changes, usPerChange: sorted[Math.floor(sorted.length / 2)]!, rounds: perRound };
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const [changes, rounds] = process.argv.slice(2).map(Number);
  console.log(JSON.stringify(await runPresenceMicro(changes || undefined, rounds || undefined)));
}
