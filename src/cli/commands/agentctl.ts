// devloc(1) commands that talk to the local devloc-agent over its control socket:
//   status, lookup, online, group create|join|leave|members, peers add|rm|list
// Human-readable output by default, --json for scripts (the control API's result, verbatim).
// Exit status: 0 done, 1 the agent refused or could not be reached, 2 bad arguments.
import type { Argv, CommandModule } from 'yargs';
import { DEFAULT_CONTROL_SOCKET } from '../../agent/control-client.js';
import type { AgentStatus, GroupMembers, LookupEntry } from '../../agent/agent.js';
import type { PeerEntry } from '../../agent/peers.js';
import { askAgent, print, printJson, runHandler, table, UsageError } from '../util.js';
import { formatChannel } from './connect.js';
import { escapeControls } from '../../common/escape.js';

export interface Common {
  socket: string;
  json: boolean;
}

/** The daemon's own configuration variable names the socket for both sides. */
const defaultSocket = (): string => process.env['DEVLOC_AGENT_CONTROL_SOCKET'] || DEFAULT_CONTROL_SOCKET;

/** --socket and --json, shared by every command that talks to the local agent. */
export function common<T>(y: Argv<T>): Argv<T & Common> {
  return y
    .option('socket', {
      type: 'string', default: defaultSocket(), defaultDescription: `$DEVLOC_AGENT_CONTROL_SOCKET or ${DEFAULT_CONTROL_SOCKET}`,
      describe: "devloc-agent's control socket",
    })
    .option('json', { type: 'boolean', default: false, describe: 'print the result as JSON' }) as Argv<T & Common>;
}


function when(isoText: string | null, now = Date.now()): string {
  if (!isoText) return '-';
  const s = Math.round((Date.parse(isoText) - now) / 1000);
  const rel = s >= 0 ? `in ${s} s` : `${-s} s ago`;
  return `${isoText.replace(/\.\d{3}Z$/, 'Z')} (${rel})`;
}

const nameOf = (target: string, names: string[]): string => (names.length > 0 && !names.includes(target) ? `${target} (${names.join(', ')})` : target);

// ---- status --------------------------------------------------------------------------------

export function formatStatus(s: AgentStatus, now = Date.now()): string {
  const rows: [string, string][] = [
    ['state', s.state + (s.registered ? '' : ' (not registered)')],
    ['locator ID', s.locatorId ?? '-'],
    ['observed address', s.observed ?? '-'],
    ['network mode', s.netMode + (s.netModeReason ? ` (${s.netModeReason})` : '')],
    ['local port', s.localPort === null ? '-' : String(s.localPort)],
    ['authd', s.authd],
    ['locatord', s.locatord ?? '-'],
    ['reflector', s.reflector ?? '-'],
    ['registered at', when(s.registeredAt, now)],
    ['last refresh', when(s.lastRefreshAt, now)],
    ['next refresh', when(s.nextRefreshAt, now)],
    ['expires', when(s.expiresAt, now)],
    ['ticket expires', when(s.ticketExpiresAt, now)],
    ['ticket renewal', when(s.ticketRenewAt, now)],
  ];
  if (s.retryAt) rows.push(['retry at', when(s.retryAt, now)]);
  // Older agents do not report it.
  if (s.attempt) rows.push(['in progress', `${s.attempt.step} to ${s.attempt.to}: ${s.attempt.sent} sent since ${when(s.attempt.since, now)}`]);
  if (s.lastError) rows.push(['last error', `${s.lastError.error} (${s.lastError.step}, ${when(s.lastError.at, now)})`]);
  for (const r of s.relays ?? []) {
    const via = [r.udp && `udp ${r.udp}`, r.tcp && `tcp ${r.tcp}`, r.tls && `tls ${r.tls}`].filter(Boolean).join(', ');
    rows.push(['relay', `${r.name}: ${via}; credentials expire ${when(r.credentialsExpireAt, now)}`]);
  }
  // Older agents do not report these.
  const ra = s.relayAllocation;
  if (ra) rows.push(['relay allocation', `${ra.relay} ${ra.transport} ${ra.server}: relayed ${ra.relayed}${ra.mapped ? `, seen as ${ra.mapped}` : ''}; ${ra.permitted} peer${ra.permitted === 1 ? '' : 's'} permitted; since ${when(ra.since, now)}`]);
  const rc = s.relayCounters;
  if (rc && (rc.relayedChannels || rc.allocations)) {
    rows.push(['relayed', `${rc.relayedChannels} channel${rc.relayedChannels === 1 ? '' : 's'}, ${rc.relayedBytes} bytes, ${rc.upgrades} upgraded to direct; ${rc.allocations} allocation${rc.allocations === 1 ? '' : 's'}, ${rc.relaysLost} relay${rc.relaysLost === 1 ? '' : 's'} lost`]);
  }
  const c = s.counters;
  rows.push(['counters', `${c.authentications} auth, ${c.registrations} register, ${c.refreshes} refresh, ${c.probesAnswered} probe, ${c.failures} failed, ${c.addressChanges} address changes`]);
  for (const ch of s.channels ?? []) rows.push(['peer channel', formatChannel(ch)]);
  const w = Math.max(...rows.map((r) => r[0].length)) + 1;
  return rows.map(([k, v]) => `${`${k}:`.padEnd(w)} ${escapeControls(v)}`).join('\n');
}

const statusCommand: CommandModule<object, Common> = {
  command: 'status',
  describe: "the local agent's registration: state, locator ID, observed address, network mode, timers",
  builder: (y) => common(y),
  handler: (a) => runHandler('status', async () => {
    const s = (await askAgent(a.socket, 'status')) as AgentStatus;
    if (a.json) printJson(s);
    else print(formatStatus(s));
  }),
};

// ---- lookup / online ------------------------------------------------------------------------

interface TargetArgs extends Common {
  target: string[];
}

const targetsOf = (a: TargetArgs): string[] => a.target.map(String);

export function formatLookup(entries: LookupEntry[]): string {
  const rows = [['TARGET', 'LOCATOR ID', 'ONLINE', 'ADDRESS', 'MODE', 'NICKNAME', 'LAN']];
  for (const e of entries) {
    rows.push([
      nameOf(e.target, e.names), e.id, e.online ? 'yes' : 'no', e.addr ?? '-', e.netMode ?? '-', e.nickname ?? '-',
      e.localAddrs?.join(',') ?? '-',
    ]);
  }
  return table(rows);
}

const lookupCommand: CommandModule<object, TargetArgs> = {
  command: 'lookup <target..>',
  describe: 'current address of terminals, by locator ID (32 hex digits) or address-book name',
  builder: (y) => common(y).positional('target', { type: 'string', array: true, demandOption: true, describe: 'locator IDs or nicknames' }) as unknown as Argv<TargetArgs>,
  handler: (a) => runHandler('lookup', async () => {
    const r = (await askAgent(a.socket, 'lookup', { targets: targetsOf(a) })) as LookupEntry[];
    if (a.json) printJson(r);
    else print(formatLookup(r));
  }),
};

const onlineCommand: CommandModule<object, TargetArgs> = {
  command: 'online <target..>',
  describe: 'online or offline, by locator ID or address-book name',
  builder: (y) => common(y).positional('target', { type: 'string', array: true, demandOption: true, describe: 'locator IDs or nicknames' }) as unknown as Argv<TargetArgs>,
  handler: (a) => runHandler('online', async () => {
    const r = (await askAgent(a.socket, 'online', { targets: targetsOf(a) })) as { target: string; id: string; online: boolean; names: string[] }[];
    if (a.json) printJson(r);
    else print(table([['TARGET', 'LOCATOR ID', 'STATUS'], ...r.map((e) => [nameOf(e.target, e.names), e.id, e.online ? 'online' : 'offline'])]));
  }),
};

// ---- group ----------------------------------------------------------------------------------

interface GroupCreateArgs extends Common {
  name: string;
  code?: string;
  save?: string;
}
interface GroupArgs extends Common {
  group: string;
  code?: string;
}

const groupCreate: CommandModule<object, GroupCreateArgs> = {
  command: 'create <name>',
  describe: 'create a group (you are its first member); prints the group ID',
  builder: (y) =>
    common(y)
      .positional('name', { type: 'string', demandOption: true, describe: 'display name (at most 64 bytes)' })
      .option('code', { type: 'string', describe: 'join code: the group is closed, joining needs this code' })
      .option('save', { type: 'string', describe: 'also save the group ID in the address book under this name' }) as unknown as Argv<GroupCreateArgs>,
  handler: (a) => runHandler('group create', async () => {
    if (Buffer.byteLength(a.name) > 64) throw new UsageError('group name: at most 64 bytes');
    const r = (await askAgent(a.socket, 'group.create', { name: a.name, ...(a.code ? { joinCode: a.code } : {}), ...(a.save ? { save: a.save } : {}) })) as { groupId: string; saved?: string };
    if (a.json) printJson(r);
    else print(r.saved ? `${r.groupId} (saved as ${r.saved})` : r.groupId);
  }),
};

function groupSimple(verb: 'join' | 'leave'): CommandModule<object, GroupArgs> {
  return {
    command: `${verb} <group>`,
    describe: verb === 'join' ? 'join a group, by group ID or address-book name' : 'leave a group',
    builder: (y) => {
      const b = common(y).positional('group', { type: 'string', demandOption: true, describe: 'group ID (32 hex digits) or address-book name' });
      return (verb === 'join' ? b.option('code', { type: 'string', describe: 'join code of a closed group' }) : b) as unknown as Argv<GroupArgs>;
    },
    handler: (a) => runHandler(`group ${verb}`, async () => {
      const r = (await askAgent(a.socket, `group.${verb}`, { group: a.group, ...(a.code ? { joinCode: a.code } : {}) })) as { groupId: string };
      if (a.json) printJson(r);
      else print(`${verb === 'join' ? 'joined' : 'left'} ${r.groupId}`);
    }),
  };
}

export function formatMembers(g: GroupMembers): string {
  const head = `group ${escapeControls(g.groupId)}${g.name ? ` "${escapeControls(g.name)}"` : ''}: ${g.total} member${g.total === 1 ? '' : 's'}`;
  const rows = [['LOCATOR ID', 'ONLINE', 'ADDRESS', 'MODE', 'NICKNAME', 'BOOK'], ...g.members.map((m) => [
    m.id, m.online ? 'yes' : 'no', m.addr ?? '-', m.netMode ?? '-', m.nickname ?? '-', m.names.join(',') || '-',
  ])];
  return `${head}\n${table(rows)}`;
}

const groupMembers: CommandModule<object, GroupArgs> = {
  command: 'members <group>',
  describe: 'members of a group you are in, with status and address',
  builder: (y) => common(y).positional('group', { type: 'string', demandOption: true, describe: 'group ID or address-book name' }) as unknown as Argv<GroupArgs>,
  handler: (a) => runHandler('group members', async () => {
    const r = (await askAgent(a.socket, 'group.members', { group: a.group })) as GroupMembers;
    if (a.json) printJson(r);
    else print(formatMembers(r));
  }),
};

const groupCommand: CommandModule = {
  command: 'group <command>',
  describe: 'groups on locatord (group create|join|leave|members), through the local agent',
  builder: (y) =>
    y
      .command(groupCreate as CommandModule)
      .command(groupSimple('join') as CommandModule)
      .command(groupSimple('leave') as CommandModule)
      .command(groupMembers as CommandModule)
      .demandCommand(1, 'name a group command: create, join, leave, members'),
  handler: () => {},
};

// ---- peers (address book) -------------------------------------------------------------------

interface PeersAddArgs extends Common {
  name: string;
  id: string;
  group: boolean;
}

const peersAdd: CommandModule<object, PeersAddArgs> = {
  command: 'add <name> <id>',
  describe: 'name a locator ID (or, with --group, a group ID) in the address book',
  builder: (y) =>
    common(y)
      .positional('name', { type: 'string', demandOption: true, describe: 'nickname: 1-32 of A-Z a-z 0-9 . _ -' })
      .positional('id', { type: 'string', demandOption: true, describe: '32 hex digits' })
      .option('group', { type: 'boolean', default: false, describe: 'the ID is a group ID' }) as unknown as Argv<PeersAddArgs>,
  handler: (a) => runHandler('peers add', async () => {
    const r = (await askAgent(a.socket, 'peers.add', { name: String(a.name), id: String(a.id), kind: a.group ? 'group' : 'peer' })) as PeerEntry;
    if (a.json) printJson(r);
    else print(`${r.name} = ${r.id}${r.kind === 'group' ? ' (group)' : ''}`);
  }),
};

const peersRm: CommandModule<object, Common & { name: string }> = {
  command: 'rm <name>',
  describe: 'remove a name from the address book',
  builder: (y) => common(y).positional('name', { type: 'string', demandOption: true, describe: 'nickname' }) as unknown as Argv<Common & { name: string }>,
  handler: (a) => runHandler('peers rm', async () => {
    const r = await askAgent(a.socket, 'peers.rm', { name: String(a.name) });
    if (a.json) printJson(r);
    else print(`removed ${a.name}`);
  }),
};

const peersList: CommandModule<object, Common> = {
  command: 'list',
  describe: 'the address book',
  builder: (y) => common(y),
  handler: (a) => runHandler('peers list', async () => {
    const r = (await askAgent(a.socket, 'peers.list')) as PeerEntry[];
    if (a.json) printJson(r);
    else if (r.length === 0) print('(address book is empty)');
    else print(table([['NAME', 'ID', 'KIND'], ...r.map((e) => [e.name, e.id, e.kind])]));
  }),
};

const peersCommand: CommandModule = {
  command: 'peers <command>',
  describe: "the agent's address book: nicknames for locator and group IDs (peers add|rm|list)",
  builder: (y) =>
    y
      .command(peersAdd as CommandModule)
      .command(peersRm as CommandModule)
      .command(peersList as CommandModule)
      .demandCommand(1, 'name a peers command: add, rm, list'),
  handler: () => {},
};

export const agentCommands: CommandModule[] = [
  statusCommand as CommandModule, lookupCommand as CommandModule, onlineCommand as CommandModule, groupCommand, peersCommand,
];
