// Peer channels on the local control API (devloc-agent(8), CONTROL SOCKET): the commands behind
// `devloc connect`. The control protocol is one request, one answer, so a channel is used by
// handle: `connect` opens (or reuses) one and returns its ID; `channel.send`, `channel.ping` and
// `channel.close` act on it; `channel.recv` waits (long poll, at most 25 s) for what arrived.
//
// The agent holds what arrives on every channel it has, incoming ones included, in a bounded
// queue per channel (256 messages; beyond that the oldest are dropped and counted as lost), so
// a client attaching later (`devloc connect alice` on the side alice connected to) reads it. A
// channel opened with `connect` is closed when no control request has touched it for a minute
// (its client went away); an incoming channel lives as long as its peer keeps it.
import type { Agent } from './agent.js';
import { AgentError } from './errors.js';
import type { Channel, ChannelSummary, PathInfo } from './channel.js';

export const CHANNEL_COMMANDS = ['connect', 'channels', 'channel.send', 'channel.recv', 'channel.ping', 'channel.close'] as const;

const MAX_QUEUE = 256;
const MAX_WAIT_MS = 25_000;
const LEASE_MS = 60_000;
/** Closed channels stay readable (their last messages and the reason) this long. */
const KEEP_CLOSED_MS = 30_000;

interface Held {
  channel: Channel;
  queue: { n: number; data: Buffer }[];
  /** Lost (gaps) or dropped (queue full) since the last recv. */
  lost: number;
  /** Opened by a control `connect`: closed when its client stops asking. */
  leased: boolean;
  touchedAt: number;
  closedAt: number | undefined;
  waiters: Set<() => void>;
}

export class ChannelRegistry {
  private readonly held = new Map<string, Held>();
  private readonly timer: ReturnType<typeof setInterval>;

  /** `now` is the clock of the lease and of KEEP_CLOSED_MS (a test passes a fake one and calls sweep()). */
  constructor(
    private readonly agent: Agent,
    private readonly now: () => number = Date.now,
  ) {
    agent.on('channel', (ch) => this.hold(ch, false));
    this.timer = setInterval(() => this.sweep(), 5000);
    this.timer.unref();
    agent.once('stopped', () => clearInterval(this.timer));
  }

  hold(ch: Channel, leased: boolean): Held {
    let h = this.held.get(ch.idHex);
    if (h) {
      if (leased) h.leased = true;
      h.touchedAt = this.now();
      return h;
    }
    const held: Held = { channel: ch, queue: [], lost: 0, leased, touchedAt: this.now(), closedAt: undefined, waiters: new Set() };
    h = held;
    const wake = (): void => {
      for (const w of held.waiters) w();
      held.waiters.clear();
    };
    ch.on('message', (data, info) => {
      held.queue.push({ n: info.n, data });
      if (held.queue.length > MAX_QUEUE) {
        held.queue.shift();
        held.lost++;
      }
      wake();
    });
    ch.on('loss', (l) => {
      held.lost += l.missing;
    });
    ch.once('close', () => {
      held.closedAt = this.now();
      wake();
    });
    this.held.set(ch.idHex, held);
    return held;
  }

  /** Renew the lease of h (a channel command named it). */
  touch(h: Held): void {
    h.touchedAt = this.now();
  }

  get(idHex: string): Held {
    const live = this.agent.punch.get(idHex);
    const h = this.held.get(idHex) ?? (live ? this.hold(live, false) : undefined);
    if (!h) throw new AgentError('NOT_FOUND', `no channel ${idHex} (closed, or never opened: see "channels")`);
    h.touchedAt = this.now();
    return h;
  }

  /** Forget closed channels after KEEP_CLOSED_MS, close leased ones untouched for LEASE_MS (every 5 s). */
  sweep(): void {
    const now = this.now();
    for (const [id, h] of this.held) {
      if (h.closedAt !== undefined) {
        if (now - h.closedAt > KEEP_CLOSED_MS) this.held.delete(id);
      } else if (h.leased && now - h.touchedAt > LEASE_MS) {
        h.channel.close('control client went away');
      }
    }
  }
}

const registries = new WeakMap<Agent, ChannelRegistry>();

/** The agent's channel registry (made on first use; ControlServer.listen makes it at start). */
export function channelRegistry(agent: Agent, now?: () => number): ChannelRegistry {
  let r = registries.get(agent);
  if (!r) registries.set(agent, (r = new ChannelRegistry(agent, now)));
  return r;
}

function text(args: Record<string, unknown>, k: string, max: number, required = true): string | undefined {
  const v = args[k];
  if (v === undefined || v === null) {
    if (required) throw new AgentError('BAD_REQUEST', `args.${k} is required`);
    return undefined;
  }
  if (typeof v !== 'string' || v.length > max) throw new AgentError('BAD_REQUEST', `args.${k} must be text (at most ${max} characters)`);
  return v;
}

function number(args: Record<string, unknown>, k: string, def: number, min: number, max: number): number {
  const v = args[k];
  if (v === undefined || v === null) return def;
  if (typeof v !== 'number' || !Number.isFinite(v) || v < min || v > max) throw new AgentError('BAD_REQUEST', `args.${k} must be a number from ${min} to ${max}`);
  return v;
}

export interface ConnectResult {
  channel: string;
  peer: string;
  names: string[];
  nickname?: string;
  role: ChannelSummary['role'];
  path: PathInfo | null;
  punchMs: number | null;
}

export const isChannelCommand = (cmd: string): boolean => (CHANNEL_COMMANDS as readonly string[]).includes(cmd);

/** Execute one of CHANNEL_COMMANDS. */
export async function dispatchChannel(agent: Agent, cmd: string, args: Record<string, unknown>): Promise<unknown> {
  const reg = channelRegistry(agent);
  switch (cmd) {
    case 'connect': {
      const ch = await agent.connect(text(args, 'peer', 64)!, { reuse: args['reuse'] !== false });
      reg.hold(ch, true);
      const s = ch.summary();
      return { channel: s.channel, peer: s.peer, names: s.names, ...(s.nickname !== undefined ? { nickname: s.nickname } : {}), role: s.role, path: s.path, punchMs: s.punchMs } satisfies ConnectResult;
    }
    case 'channels':
      return agent.punch.list();
    case 'channel.send': {
      const h = reg.get(text(args, 'channel', 32)!);
      const t = text(args, 'text', 4096, false);
      const b64 = text(args, 'data', 4096, false);
      if ((t === undefined) === (b64 === undefined)) throw new AgentError('BAD_REQUEST', 'give exactly one of args.text and args.data (base64)');
      return { n: h.channel.send(t !== undefined ? Buffer.from(t) : Buffer.from(b64!, 'base64')) };
    }
    case 'channel.recv': {
      const h = reg.get(text(args, 'channel', 32)!);
      const waitMs = number(args, 'waitMs', 0, 0, MAX_WAIT_MS);
      // max 0 takes no message: the state alone, and the lease renewed (see LEASE_MS).
      const max = number(args, 'max', MAX_QUEUE, 0, MAX_QUEUE);
      if (max > 0 && h.queue.length === 0 && h.closedAt === undefined && waitMs > 0) {
        await new Promise<void>((resolve) => {
          const done = (): void => {
            clearTimeout(timer);
            h.waiters.delete(done);
            resolve();
          };
          const timer = setTimeout(done, waitMs);
          h.waiters.add(done);
        });
      }
      reg.touch(h);
      const messages = h.queue.splice(0, max).map((m) => ({ n: m.n, text: m.data.toString('utf8'), data: m.data.toString('base64') }));
      // The loss count goes with the messages: a max-0 peek leaves it for the next real recv.
      const lost = max > 0 ? h.lost : 0;
      if (max > 0) h.lost = 0;
      const s = h.channel.summary();
      return { channel: s.channel, messages, lost, state: s.state, path: s.path, ...(s.reason ? { reason: s.reason } : {}) };
    }
    case 'channel.ping': {
      const h = reg.get(text(args, 'channel', 32)!);
      const rttMs = await h.channel.ping(number(args, 'timeoutMs', 2000, 10, 30_000));
      return { rttMs, path: h.channel.path };
    }
    case 'channel.close': {
      const h = reg.get(text(args, 'channel', 32)!);
      h.channel.close('closed by the application');
      return { closed: h.channel.idHex };
    }
  }
  throw new AgentError('UNKNOWN_COMMAND', `not a channel command: ${cmd}`);
}
