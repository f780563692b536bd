// The local control API (devloc-agent(8), CONTROL SOCKET): the agent's commands over the
// control-socket protocol and server the daemons' devloc ctl socket uses too
// (src/net/unix-socket.ts: JSON lines on a Unix socket, one request per line, answered in order
// per connection). Access control is the socket's mode
// (0660: the owner and the socket's group), so anyone who may talk to the agent may use every
// command. Lines are bounded so a local client cannot make the agent buffer without end.
import type { ControlHandler, ControlRequest, ControlResponse } from '../net/unix-socket.js';
import { answerControlLine, UnixControlServer } from '../net/unix-socket.js';
import type { Agent } from './agent.js';
import type { AgentLog } from './errors.js';
import { AgentError } from './errors.js';
import type { MatchSpec } from './match.js';
import { parseAttr, parseRequirement } from './match.js';
import type { PresenceStatus } from './presence.js';
import type { PresenceRecord } from '../wire/catalog.js';
import { MAX_STATUS_BYTES } from '../wire/catalog.js';
import type { AddressBook } from './peers.js';
import { AddressBookError } from './peers.js';
import { CHANNEL_COMMANDS, channelRegistry, dispatchChannel, isChannelCommand } from './channel-control.js';

export const MAX_CONTROL_LINE = 64 * 1024;
export const MAX_CONTROL_CONNECTIONS = 64;
const MAX_TARGETS = 1024;

export type { ControlRequest, ControlResponse };

/** The commands, as the man page lists them. */
export const CONTROL_COMMANDS = [
  'status', 'lookup', 'online', 'group.create', 'group.join', 'group.leave', 'group.members', 'peers.add', 'peers.rm', 'peers.list',
  'match.submit', 'match.status', 'match.cancel', 'match.wait',
  'watch', 'unwatch', 'presence.list', 'presence.wait', 'presence.set', 'search', 'media.set', 'allow.list', 'allow.add', 'allow.rm',
  ...CHANNEL_COMMANDS,
] as const;

class BadRequest extends AgentError {
  constructor(message: string) {
    super('BAD_REQUEST', message);
  }
}

function str(args: Record<string, unknown>, k: string, required: true): string;
function str(args: Record<string, unknown>, k: string, required?: false): string | undefined;
function str(args: Record<string, unknown>, k: string, required = false): string | undefined {
  const v = args[k];
  if (v === undefined || v === null) {
    if (required) throw new BadRequest(`args.${k} is required`);
    return undefined;
  }
  if (typeof v !== 'string' || v.length > 256) throw new BadRequest(`args.${k} must be text (at most 256 characters)`);
  return v;
}

function targets(args: Record<string, unknown>): string[] {
  const t = args['targets'];
  if (!Array.isArray(t) || t.length === 0 || t.length > MAX_TARGETS || !t.every((x) => typeof x === 'string' && x.length <= 64)) {
    throw new BadRequest(`args.targets must be 1..${MAX_TARGETS} IDs or nicknames`);
  }
  return t as string[];
}

function int(args: Record<string, unknown>, k: string): number | undefined {
  const v = args[k];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'number' || !Number.isSafeInteger(v)) throw new BadRequest(`args.${k} must be a whole number`);
  return v;
}

function texts(args: Record<string, unknown>, k: string): string[] {
  const v = args[k];
  if (v === undefined || v === null) return [];
  if (!Array.isArray(v) || v.length > 16 || !v.every((x) => typeof x === 'string' && x.length <= 256)) throw new BadRequest(`args.${k} must be at most 16 strings`);
  return v as string[];
}

/** match.submit arguments: the spec, with attrs as an object or "k=v" strings, require/prefer as text. */
function matchSpec(args: Record<string, unknown>): MatchSpec {
  const spec: MatchSpec = { mediaId: str(args, 'mediaId', true) };
  const appType = str(args, 'appType');
  if (appType !== undefined) spec.appType = appType;
  for (const k of ['minParty', 'maxParty', 'maxWaitS'] as const) {
    const v = int(args, k);
    if (v !== undefined) spec[k] = v;
  }
  const nickname = str(args, 'nickname');
  if (nickname !== undefined) spec.nickname = nickname;
  const attrs = args['attrs'];
  if (Array.isArray(attrs)) spec.attrs = Object.fromEntries(texts(args, 'attrs').map(parseAttr));
  else if (attrs !== undefined && attrs !== null) {
    if (typeof attrs !== 'object') throw new BadRequest('args.attrs must be an object or "key=value" strings');
    spec.attrs = attrs as MatchSpec['attrs'] & object;
  }
  const reqs = [...texts(args, 'require').map((r) => parseRequirement(r, true)), ...texts(args, 'prefer').map((r) => parseRequirement(r, false))];
  const raw = args['requirements'];
  if (raw !== undefined && raw !== null) {
    if (!Array.isArray(raw)) throw new BadRequest('args.requirements must be an array');
    reqs.push(...(raw as MatchSpec['requirements'] & object));
  }
  if (reqs.length) spec.requirements = reqs;
  return spec;
}

/** The last presence changes of an agent, numbered, for `presence.wait` (a long poll: `devloc watch`). */
class PresenceLog {
  private readonly events: { seq: number; status: PresenceStatus }[] = [];
  private seq = 0;
  private readonly waiting = new Set<() => void>();

  constructor(agent: Agent) {
    agent.on('presence', (status) => {
      this.events.push({ seq: ++this.seq, status });
      if (this.events.length > 256) this.events.shift();
      for (const w of [...this.waiting]) w();
    });
  }

  /** Changes after `after` (0: from now on), waiting at most `timeoutMs` for one. */
  async wait(after: number | undefined, timeoutMs: number): Promise<{ seq: number; changes: PresenceStatus[] }> {
    const from = after ?? this.seq;
    const take = (): { seq: number; changes: PresenceStatus[] } => ({ seq: this.seq, changes: this.events.filter((e) => e.seq > from).map((e) => e.status) });
    if (this.seq > from) return take();
    await new Promise<void>((resolve) => {
      const done = (): void => {
        clearTimeout(timer);
        this.waiting.delete(done);
        resolve();
      };
      const timer = setTimeout(done, timeoutMs);
      this.waiting.add(done);
    });
    return take();
  }
}

const presenceLogs = new WeakMap<Agent, PresenceLog>();

function presenceLog(agent: Agent): PresenceLog {
  let l = presenceLogs.get(agent);
  if (!l) presenceLogs.set(agent, (l = new PresenceLog(agent)));
  return l;
}

/** presence.set arguments: the record (absent fields cleared). */
function presenceRecord(args: Record<string, unknown>): PresenceRecord {
  const r: PresenceRecord = {};
  const media = str(args, 'mediaId');
  if (media !== undefined) r.mediaId = media;
  const status = str(args, 'status');
  if (status !== undefined) {
    if (Buffer.byteLength(status) > MAX_STATUS_BYTES) throw new BadRequest(`args.status: at most ${MAX_STATUS_BYTES} bytes`);
    r.status = status;
  }
  if (args['lookingForPartner'] !== undefined) {
    if (typeof args['lookingForPartner'] !== 'boolean') throw new BadRequest('args.lookingForPartner must be true or false');
    r.lookingForPartner = args['lookingForPartner'];
  }
  const wants = texts(args, 'wants');
  if (wants.length > 8) throw new BadRequest('args.wants: at most 8 attributes');
  if (wants.length > 0) r.wants = Object.fromEntries(wants.map((w) => parseAttr(w)));
  return r;
}

/** Execute one request against the agent. Exported for tests and for embedding. */
export async function dispatch(agent: Agent, peers: AddressBook | undefined, req: ControlRequest): Promise<unknown> {
  const args = req.args ?? {};
  const book = (): AddressBook => {
    if (!peers) throw new AgentError('NO_ADDRESS_BOOK', 'this agent has no address book');
    return peers;
  };
  switch (req.cmd) {
    case 'status':
      return agent.status();
    case 'lookup':
      return agent.lookup(targets(args));
    case 'online':
      return agent.online(targets(args));
    case 'group.create': {
      const save = str(args, 'save');
      const r = await agent.groupCreate(str(args, 'name', true), str(args, 'joinCode'));
      if (save) book().add(save, r.groupId, 'group');
      return save ? { ...r, saved: save } : r;
    }
    case 'group.join':
      return agent.groupJoin(str(args, 'group', true), str(args, 'joinCode'));
    case 'group.leave':
      return agent.groupLeave(str(args, 'group', true));
    case 'group.members':
      return agent.groupMembers(str(args, 'group', true));
    case 'peers.add': {
      const kind = str(args, 'kind') ?? 'peer';
      if (kind !== 'peer' && kind !== 'group') throw new BadRequest('args.kind must be "peer" or "group"');
      return book().add(str(args, 'name', true), str(args, 'id', true), kind);
    }
    case 'peers.rm': {
      const name = str(args, 'name', true);
      if (!book().remove(name)) throw new AgentError('NOT_FOUND', `no address book entry ${JSON.stringify(name)}`);
      return { removed: name };
    }
    case 'peers.list':
      return book().list();
    case 'match.submit':
      return agent.match.submit(matchSpec(args), { wait: args['wait'] === true });
    case 'match.status':
      return agent.match.status(str(args, 'matchId'));
    case 'match.cancel':
      return agent.match.cancel(str(args, 'matchId'));
    case 'match.wait': {
      const s = int(args, 'timeoutS');
      return agent.match.wait(str(args, 'matchId'), s === undefined ? undefined : s * 1000);
    }
    case 'watch':
      presenceLog(agent);
      return agent.watch(targets(args));
    case 'unwatch':
      return agent.unwatch(args['all'] === true ? 'all' : targets(args));
    case 'presence.list':
      return agent.presence.list();
    case 'presence.wait': {
      const s = int(args, 'timeoutS');
      return presenceLog(agent).wait(int(args, 'after'), Math.min(300, Math.max(0, s ?? 30)) * 1000);
    }
    case 'presence.set':
      return agent.setPresence(presenceRecord(args));
    case 'search': {
      const reqs = [...texts(args, 'require').map((r) => parseRequirement(r, true)), ...texts(args, 'prefer').map((r) => parseRequirement(r, false))];
      return agent.search(reqs, str(args, 'mediaId'));
    }
    case 'allow.list':
      return { allow: agent.allow };
    case 'allow.add':
      return { allow: agent.changeAllow(targets(args)) };
    case 'allow.rm':
      return { allow: agent.changeAllow([], targets(args)) };
    case 'media.set': {
      const media = str(args, 'mediaId', true);
      if (Buffer.byteLength(media) > 64) throw new BadRequest('args.mediaId: at most 64 bytes');
      return agent.setMedia(media);
    }
    default:
      if (isChannelCommand(req.cmd)) return dispatchChannel(agent, req.cmd, args);
      throw new AgentError('UNKNOWN_COMMAND', `unknown command ${JSON.stringify(req.cmd)} (one of ${CONTROL_COMMANDS.join(', ')})`);
  }
}

function errorOf(err: unknown): { code: string; message: string } {
  if (err instanceof AgentError) return { code: err.code, message: err.message };
  if (err instanceof AddressBookError) return { code: 'ADDRESS_BOOK', message: err.message };
  return { code: 'INTERNAL', message: (err as Error)?.message ?? String(err) };
}

/** The agent's side of the protocol. */
function agentHandler(agent: Agent, peers: AddressBook | undefined, log?: AgentLog): ControlHandler {
  return {
    run: (req) => dispatch(agent, peers, req),
    errorOf,
    ...(log ? { refused: (code: string, message: string) => log('debug', 'control request refused', { code, reason: message }) } : {}),
  };
}

/** Parse and execute one line; never throws. */
export function handleLine(agent: Agent, peers: AddressBook | undefined, line: string): Promise<ControlResponse> {
  return answerControlLine(agentHandler(agent, peers), line);
}

/** The agent's control socket: the shared server with the agent's commands and limits. */
export const ControlServer = {
  /** If `path` exists: a socket nobody answers on is stale and removed; anything else is refused. */
  async listen(path: string, agent: Agent, peers: AddressBook | undefined, log: AgentLog = () => {}): Promise<UnixControlServer> {
    // From the start, so what peers send on incoming channels waits for a reader.
    channelRegistry(agent);
    return UnixControlServer.listen(path, agentHandler(agent, peers, log), {
      maxLine: MAX_CONTROL_LINE, maxConnections: MAX_CONTROL_CONNECTIONS, dirMode: 0o755,
      errors: { notSocket: `control socket path ${path} exists and is not a socket`, inUse: `control socket ${path} is in use: is another devloc-agent running?` },
      connectionError: (err) => log('debug', 'control connection error', { err: err.message }),
    });
  },
};
export type ControlServer = UnixControlServer;
