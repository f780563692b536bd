// devloc connect PEER: a direct channel to a peer through the local devloc-agent (devloc(1)).
//
//   devloc connect bob             line chat: stdin lines go to bob, what bob sends is printed
//   devloc connect bob --ping 5    five pings over the channel, with round trips
//
// The agent asks locatord for an introduction, punches through both NATs and keeps the path;
// this command only drives the control API (connect, channel.send/recv/ping/close). Exit
// status: 0 done (for --ping: at least one answer), 1 no channel (peer unavailable, no direct
// path, punching failed, no agent) or no ping answered, 2 bad arguments.
import { createInterface } from 'node:readline';
import type { Argv, CommandModule } from 'yargs';
import type { ChannelSummary, PathInfo } from '../../agent/channel.js';
import type { ConnectResult } from '../../agent/channel-control.js';
import { DEFAULT_CONTROL_SOCKET } from '../../agent/control-client.js';
import { askAgent, CliError, print, printJson, runHandler, UsageError } from '../util.js';
import { escapeControls } from '../../common/escape.js';

interface ConnectArgs {
  peer: string;
  socket: string;
  json: boolean;
  ping?: number;
  interval: number;
  timeout: number;
}

const defaultSocket = (): string => process.env['DEVLOC_AGENT_CONTROL_SOCKET'] || DEFAULT_CONTROL_SOCKET;
/** The candidate kind, with how this end reaches the relay on a relayed path ("relay over tcp"). */
const kindText = (p: PathInfo): string => `${p.kind}${p.transport ? ` over ${p.transport}` : ''}`;

export const pathText = (p: PathInfo | null): string => (p ? `${p.addr} (${kindText(p)}${p.rttMs !== null ? `, rtt ${p.rttMs} ms` : ''})` : 'no path');

/** lan, direct or relay: what kind of path a channel has. */
export const pathClass = (p: PathInfo | null): string => (!p ? 'no path' : p.kind === 'lan' ? 'lan' : p.kind === 'relay' ? 'relay' : 'direct');

export function formatConnected(r: ConnectResult): string {
  const who = [r.peer, ...r.names.map((n) => `"${n}"`), ...(r.nickname ? [`nickname ${r.nickname}`] : [])].join(' ');
  const how = r.role === 'initiator' ? `punched in ${r.punchMs ?? '?'} ms` : 'channel the peer opened';
  return `connected to ${escapeControls(who)}: channel ${r.channel}, ${r.path?.kind === 'relay' ? 'relayed' : 'direct'} path ${pathText(r.path)}, ${how}`;
}

interface PingOutcome {
  rttMs: number | null;
  path: PathInfo | null;
}

/** A line when the path changed between two outputs (an upgrade from the relay, a move to the LAN...). */
function pathChange(before: PathInfo | null, after: PathInfo | null): string | null {
  if (!before || !after || (before.addr === after.addr && before.kind === after.kind)) return null;
  const what = before.kind === 'relay' && after.kind !== 'relay' ? 'upgraded' : 'changed';
  return `path ${what}: ${pathClass(before)} ${before.addr} -> ${pathClass(after)} ${after.addr} (${kindText(after)})`;
}

async function pings(a: ConnectArgs, channel: string, first: PathInfo | null): Promise<void> {
  const count = a.ping!;
  const rtts: number[] = [];
  let path = first;
  let upgrades = 0;
  for (let i = 1; i <= count; i++) {
    const r = (await askAgent(a.socket, 'channel.ping', { channel, timeoutMs: a.timeout }, a.timeout + 5000)) as PingOutcome;
    const change = pathChange(path, r.path);
    if (change) {
      if (path?.kind === 'relay' && r.path?.kind !== 'relay') upgrades++;
      if (a.json) printJson({ path: r.path, previous: path }, true);
      else print(change);
    }
    if (r.path) path = r.path;
    if (r.rttMs !== null) rtts.push(r.rttMs);
    if (a.json) printJson({ ping: i, ...r }, true);
    else print(r.rttMs === null ? `ping ${i}: no answer within ${a.timeout} ms` : `ping ${i}: rtt ${r.rttMs} ms via ${pathClass(r.path)} ${r.path ? `${r.path.addr} (${kindText(r.path)})` : ''}`.trimEnd());
    if (i < count) await new Promise((res) => setTimeout(res, a.interval));
  }
  const lost = count - rtts.length;
  const avg = rtts.length ? Math.round((rtts.reduce((x, y) => x + y, 0) / rtts.length) * 10) / 10 : null;
  if (a.json) {
    printJson({
      summary: {
        pings: count, answered: rtts.length, lostPct: Math.round((100 * lost) / count),
        rttMs: rtts.length ? { min: Math.min(...rtts), avg, max: Math.max(...rtts) } : null, path, upgrades,
      },
    }, true);
  } else {
    const stats = rtts.length ? `, rtt min/avg/max ${Math.min(...rtts)}/${avg!.toFixed(1)}/${Math.max(...rtts)} ms` : '';
    print(`${count} pings, ${rtts.length} answered, ${Math.round((100 * lost) / count)}% lost${stats}; path ${pathClass(path)}${upgrades ? `, upgraded from the relay ${upgrades === 1 ? 'once' : `${upgrades} times`}` : ''}`);
  }
  if (rtts.length === 0) throw new CliError('no ping was answered');
}

interface RecvResult {
  messages: { n: number; text: string; data: string }[];
  lost: number;
  state: string;
  path: PathInfo | null;
  reason?: string;
}

async function chat(a: ConnectArgs, channel: string, first: PathInfo | null): Promise<void> {
  let done = false;
  let sending = Promise.resolve();
  const lines = createInterface({ input: process.stdin });
  lines.on('line', (line) => {
    if (!line) return;
    sending = sending.then(async () => {
      if (!done) await askAgent(a.socket, 'channel.send', { channel, text: line });
    });
  });
  const eof = new Promise<void>((resolve) => lines.once('close', () => resolve()));
  const receive = (async (): Promise<string | null> => {
    let path = first;
    while (!done) {
      const r = (await askAgent(a.socket, 'channel.recv', { channel, waitMs: 20_000 }, 30_000)) as RecvResult;
      const change = pathChange(path, r.path);
      if (change) void (a.json ? printJson({ path: r.path, previous: path }, true) : print(change));
      if (r.path) path = r.path;
      if (r.lost > 0) void (a.json ? printJson({ lost: r.lost }, true) : print(`(${r.lost} message${r.lost === 1 ? '' : 's'} lost)`));
      for (const m of r.messages) void (a.json ? printJson(m, true) : print(`< ${escapeControls(m.text)}`));
      if (r.state === 'closed' || r.state === 'failed') return r.reason ?? r.state;
    }
    return null;
  })();
  const ended = await Promise.race([eof.then(() => null), receive]);
  done = true;
  if (ended !== null) {
    lines.close();
    void (a.json ? printJson({ closed: ended }, true) : print(`channel closed: ${escapeControls(String(ended))}`));
    return;
  }
  // stdin ended: finish sending, then close our end.
  await sending;
  await askAgent(a.socket, 'channel.close', { channel });
}

export const connectCommand: CommandModule<object, ConnectArgs> = {
  command: 'connect <peer>',
  describe: 'a direct channel to a peer through the NATs (introduced by locatord): line chat, or --ping N',
  builder: (y) =>
    (y as Argv)
      .positional('peer', { type: 'string', demandOption: true, describe: 'locator ID (32 hex digits) or address-book name' })
      .option('socket', {
        type: 'string', default: defaultSocket(), defaultDescription: `$DEVLOC_AGENT_CONTROL_SOCKET or ${DEFAULT_CONTROL_SOCKET}`,
        describe: "devloc-agent's control socket",
      })
      .option('json', { type: 'boolean', default: false, describe: 'print JSON lines' })
      .option('ping', { type: 'number', describe: 'send this many pings over the channel and print their round trips, then close it' })
      .option('interval', { type: 'number', default: 1000, describe: 'ms between pings' })
      .option('timeout', { type: 'number', default: 2000, describe: 'ms to wait for each ping\'s answer' }) as unknown as Argv<ConnectArgs>,
  handler: (a) => runHandler('connect', async () => {
    if (a.ping !== undefined && (!Number.isInteger(a.ping) || a.ping < 1 || a.ping > 10_000)) throw new UsageError('--ping: a count from 1 to 10000');
    if (!(a.interval >= 0 && a.interval <= 60_000)) throw new UsageError('--interval: 0 to 60000 ms');
    if (!(a.timeout >= 10 && a.timeout <= 30_000)) throw new UsageError('--timeout: 10 to 30000 ms');
    const r = (await askAgent(a.socket, 'connect', { peer: String(a.peer) }, 90_000)) as ConnectResult;
    if (a.json) printJson(r, true);
    else print(formatConnected(r));
    if (a.ping !== undefined) {
      try {
        await pings(a, r.channel, r.path);
      } finally {
        await askAgent(a.socket, 'channel.close', { channel: r.channel }).catch(() => {});
      }
      return;
    }
    await chat(a, r.channel, r.path);
  }),
};

/** One line per channel for `devloc status`. */
export function formatChannel(c: ChannelSummary): string {
  const who = escapeControls(c.names.length ? `${c.names.join(',')} (${c.peer})` : c.nickname ? `${c.peer} (nickname ${c.nickname})` : c.peer);
  const dir = c.role === 'initiator' ? 'to' : 'from';
  const s = c.stats;
  if (c.state === 'failed') return `${dir} ${who}: failed: ${c.reason ?? 'unknown reason'}`;
  const traffic = `${s.sent} sent, ${s.received} received, ${s.lost} lost${s.refused ? `, ${s.refused} refused` : ''}`;
  if (c.state === 'closed') return `${dir} ${who}: closed (${c.reason ?? 'closed'}); ${traffic}`;
  if (c.state === 'punching') return `${dir} ${who}: punching ${c.candidates.join(', ')}`;
  return `${dir} ${who}: open via ${pathText(c.path)}; ${traffic}`;
}
