// devloc-agent(8) as a DaemonDefinition: options, checks, start/stop. The entry point is
// main.ts. This file may use src/common (yargs, the logger); the library may not.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Config, Spec } from '../common/config.js';
import { bool, list, num, str } from '../common/config.js';
import type { DaemonDefinition, Running } from '../common/daemon.js';
import type { Logger } from '../common/log.js';
import type { Metrics } from '../common/metrics.js';
import type { Address } from '../wire/addr.js';
import { formatAddress, parseAddress } from '../wire/addr.js';
import { DEFAULT_PORTS, DEFAULT_SERVICE_IDS } from '../wire/constants.js';
import { MAX_ALLOW } from '../wire/catalog.js';
import { isServiceId } from '../wire/keys.js';
import type { AgentOptions } from './types.js';
import { Agent } from './agent.js';
import { DEFAULT_CONTROL_SOCKET } from './control-client.js';
import { ControlServer } from './control.js';
import { loadAuthdKey, loadDeviceIdentity } from './identity.js';
import { formatId, isIdText } from './ids.js';
import { AddressBook, writeFileAtomic } from './peers.js';
import type { RelayPolicy } from './punch.js';

export const agentSpec: Spec = {
  identity: { type: 'string', default: '/etc/devloc/device.key', describe: 'device identity file (kind "device"; read only; no permission for group/others, owned by root or this user)' },
  authd: { type: 'string', default: '', describe: `authd address host:port (required; authd's default port is ${DEFAULT_PORTS.authd})` },
  'authd-key': { type: 'string', default: '/etc/devloc/authd.pub', describe: 'authd public key file (devloc keygen --public)' },
  audiences: { type: 'list', default: [DEFAULT_SERVICE_IDS.locatord, DEFAULT_SERVICE_IDS.matchd], describe: 'services to get tickets for, comma-separated; the first is locatord, "match" is matchd (unregistered ones are skipped)' },
  locatord: { type: 'string', default: '', describe: 'locatord address host:port ("" = the address authd gives in the grant)' },
  matchd: { type: 'string', default: '', describe: 'matchd address host:port ("" = the address authd gives in the "match" grant)' },
  reflector: { type: 'string', default: '', describe: `NAT reflector host:port ("" = locatord's host, port ${DEFAULT_PORTS.reflector}; "off" = do not classify)` },
  bind: { type: 'string', default: '', describe: 'local address of the UDP socket host:port ("" = any address of authd\'s family, ephemeral port)' },
  'control-socket': { type: 'string', default: DEFAULT_CONTROL_SOCKET, describe: 'Unix socket of the local control API (mode 0660)' },
  'peers-file': { type: 'string', default: '', describe: 'address book file ("" = peers.json in --state-dir)', reloadable: true },
  nickname: { type: 'string', default: '', describe: 'nickname registered with locatord, shown to others ("" = none)' },
  allow: { type: 'list', default: [], describe: 'locator IDs or address-book names that may always see this terminal (with --visibility groups), comma-separated, at most 32' },
  'join-group': { type: 'list', default: [], describe: 'groups to join when registering, comma-separated GROUP or GROUP:CODE (a group ID or address-book name, the join code of a closed group); at most 4, joined once' },
  'media-id': { type: 'string', default: '', describe: 'media/game ID registered with locatord ("" = none)' },
  visibility: { type: 'string', default: 'anyone', choices: ['anyone', 'groups'], describe: 'who may look this terminal up: anyone with its locator ID, or group members only' },
  'save-partners': { type: 'boolean', default: true, describe: 'add the partners of a match to the address book under their nicknames (--no-save-partners: never)' },
  relay: { type: 'string', default: 'auto', choices: ['auto', 'always', 'never'], describe: 'relayed channels through the TURN relays of the grant: auto (when no direct path can work or punching failed), always (forced), never' },
  reachable: { type: 'boolean', default: true, describe: 'accept introductions: terminals allowed to look this one up may open direct channels to it (--no-reachable: never)' },
  'ttl-s': { type: 'number', default: 0, min: 0, max: 86400, describe: 'registration TTL to ask for, seconds (0 = the server default)' },
  'max-refresh-s': { type: 'number', default: 0, min: 0, max: 86400, describe: 'refresh at least this often, seconds (0 = as locatord suggests)' },
  'interface-poll-s': { type: 'number', default: 3, min: 0.1, max: 3600, describe: 'how often to look for a local address change, seconds' },
  'retransmit-ms': { type: 'number', default: 1000, min: 20, max: 60000, describe: 'first retransmission timeout, ms (doubles; 4 retransmissions)' },
  'backoff-min-ms': { type: 'number', default: 1000, min: 10, max: 3_600_000, describe: 'first retry delay after a failure, ms (doubles, with jitter)' },
  'backoff-max-ms': { type: 'number', default: 60000, min: 10, max: 3_600_000, describe: 'longest retry delay, ms' },
};

function addr(c: Config, key: string): Address | null | 'bad' {
  const v = str(c, key);
  if (!v) return null;
  return parseAddress(v) ?? 'bad';
}

function check(c: Config): string | null {
  const authd = addr(c, 'authd');
  if (authd === null) return '--authd is required (host:port of devloc-authd)';
  if (authd === 'bad') return `--authd: expected host:port with a literal IP, got ${JSON.stringify(str(c, 'authd'))}`;
  for (const k of ['locatord', 'matchd', 'bind']) if (addr(c, k) === 'bad') return `--${k}: expected host:port with a literal IP`;
  if (str(c, 'reflector') !== 'off' && addr(c, 'reflector') === 'bad') return '--reflector: expected host:port with a literal IP, or "off"';
  const aud = list(c, 'audiences');
  if (aud.length === 0 || aud.length > 4 || !aud.every(isServiceId)) return '--audiences: 1 to 4 service IDs';
  const nick = str(c, 'nickname');
  if (nick && Buffer.byteLength(nick) > 32) return '--nickname: at most 32 bytes';
  if (Buffer.byteLength(str(c, 'media-id')) > 64) return '--media-id: at most 64 bytes';
  if (list(c, 'allow').length > 32) return '--allow: at most 32 IDs';
  const joins = list(c, 'join-group');
  if (joins.length > 4) return '--join-group: at most 4 groups';
  if (joins.some((j) => splitJoin(j).group === '')) return '--join-group: GROUP or GROUP:CODE';
  if (num(c, 'backoff-min-ms') > num(c, 'backoff-max-ms')) return '--backoff-min-ms must not exceed --backoff-max-ms';
  const id = loadDeviceIdentity(str(c, 'identity'));
  if (!id.ok) return id.error;
  const key = loadAuthdKey(str(c, 'authd-key'));
  if (!key.ok) return key.error;
  return null;
}

/** "GROUP:CODE" (the code may itself hold colons) or "GROUP". */
function splitJoin(s: string): { group: string; code?: string } {
  const i = s.indexOf(':');
  return i < 0 ? { group: s.trim() } : { group: s.slice(0, i).trim(), code: s.slice(i + 1) };
}

export function peersPath(c: Config): string {
  return str(c, 'peers-file') || join(str(c, 'state-dir'), 'peers.json');
}

/** The allow list kept across restarts (`devloc allow` changes it): allow.json in --state-dir. */
export function allowPath(c: Config): string {
  return join(str(c, 'state-dir'), 'allow.json');
}

/** The IDs (hex) of the allow list file; a missing file is an empty list, a bad one an error. */
function loadAllow(file: string): string[] {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw new Error(`cannot read allow list ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch {
    throw new Error(`allow list ${file} is not JSON`);
  }
  const ids = (body as { allow?: unknown } | null)?.allow;
  if (!Array.isArray(ids) || ids.length > MAX_ALLOW || !ids.every((x) => typeof x === 'string' && isIdText(x))) {
    throw new Error(`allow list ${file}: expected {"version":1,"allow":[at most ${MAX_ALLOW} locator IDs]}`);
  }
  return ids.map((x: string) => x.toLowerCase());
}

async function start(c: Config, logger: Logger, metrics: Metrics): Promise<Running> {
  const identity = loadDeviceIdentity(str(c, 'identity'));
  if (!identity.ok) throw new Error(identity.error);
  const authdKey = loadAuthdKey(str(c, 'authd-key'));
  if (!authdKey.ok) throw new Error(authdKey.error);
  const peers = new AddressBook(peersPath(c));
  peers.load();
  const opts: AgentOptions = {
    identity: identity.value,
    authd: addr(c, 'authd') as Address,
    authdKey: authdKey.value,
    audiences: list(c, 'audiences'),
    interfacePollMs: num(c, 'interface-poll-s') * 1000,
    retransmitMs: num(c, 'retransmit-ms'),
    backoffMinMs: num(c, 'backoff-min-ms'),
    backoffMaxMs: num(c, 'backoff-max-ms'),
    maxRefreshS: num(c, 'max-refresh-s'),
    visibility: str(c, 'visibility') === 'groups' ? 1 : 0,
    reachable: bool(c, 'reachable'),
    savePartners: bool(c, 'save-partners'),
    peer: { relay: str(c, 'relay') as RelayPolicy },
    peers,
    log: (level, msg, fields) => logger.log(level, msg, fields),
  };
  const locatord = addr(c, 'locatord');
  if (locatord && locatord !== 'bad') opts.locatord = locatord;
  const reflector = str(c, 'reflector');
  if (reflector === 'off') opts.reflector = null;
  else if (reflector) opts.reflector = parseAddress(reflector)!;
  const matchd = addr(c, 'matchd');
  if (matchd && matchd !== 'bad') opts.match = { matchd };
  const bind = addr(c, 'bind');
  if (bind && bind !== 'bad') opts.bind = { host: bind.ip, port: bind.port };
  if (str(c, 'nickname')) opts.nickname = str(c, 'nickname');
  if (str(c, 'media-id')) opts.mediaId = str(c, 'media-id');
  // The list kept from the last run (devloc allow), plus --allow's IDs: both at the first REGISTER.
  const allowFile = allowPath(c);
  const given = list(c, 'allow').map((x) => {
    const id = peers.resolve(x);
    if (!id) throw new Error(`--allow: ${JSON.stringify(x)} is neither a locator ID nor a name in the address book`);
    return formatId(id);
  });
  const allow = [...new Set([...loadAllow(allowFile), ...given])];
  if (allow.length > MAX_ALLOW) throw new Error(`--allow and the allow list kept in ${allowFile}: more than ${MAX_ALLOW} IDs (devloc allow rm some)`);
  if (allow.length > 0) opts.allow = allow.map((h) => Buffer.from(h, 'hex'));
  const joins = list(c, 'join-group').map(splitJoin);
  if (joins.length > 0) {
    opts.joinGroups = joins.map(({ group, code }) => {
      const groupId = peers.resolve(group);
      if (!groupId) throw new Error(`--join-group: ${JSON.stringify(group)} is neither a group ID nor a name in the address book`);
      return code ? { groupId, joinCode: code } : { groupId };
    });
  }
  if (num(c, 'ttl-s') > 0) opts.ttlS = num(c, 'ttl-s');

  const agent = new Agent(opts);
  agent.on('allow', (ids) => {
    try {
      writeFileAtomic(allowFile, JSON.stringify({ version: 1, allow: ids }, null, 2) + '\n');
    } catch (err) {
      logger.warn('allow list not saved: the change holds until the agent stops', { file: allowFile, err: (err as NodeJS.ErrnoException).code ?? (err as Error).message });
    }
  });
  agent.on('state', (s, prev) => logger.debug('state', { state: s, previous: prev }));
  metrics.gauge('agent_registered', 'Whether the registration with locatord is current (1) or not (0)', () => (agent.isRegistered ? 1 : 0));
  metrics.gauge('agent_match_waiting', 'Match requests waiting for partners', () => agent.match.waiting);
  for (const [k, help] of [
    ['authentications', 'Authentications with authd that got a ticket'], ['registrations', 'REGISTERs acknowledged'],
    ['refreshes', 'REFRESHes acknowledged'], ['probesAnswered', 'PROBEs answered'], ['failures', 'Steps that failed and were retried'],
    ['addressChanges', 'Address changes that restarted the sequence'],
  ] as const) {
    metrics.gauge(`agent_${k.replace(/[A-Z]/g, (x) => `_${x.toLowerCase()}`)}`, `${help} (since start)`, () => agent.counters[k]);
  }
  metrics.gauge('agent_relayed_channels', 'Peer channels whose path was a TURN relay at some point (since start)', () => agent.punch.relayCountersNow().relayedChannels);
  for (const tr of ['udp', 'tcp', 'tls'] as const) {
    metrics.gauge(`agent_relayed_channels_${tr}`, `Peer channels first relayed with this end reaching the relay over ${tr.toUpperCase()} (since start)`, () => agent.punch.relayCountersNow().relayedChannelsByTransport[tr]);
  }
  metrics.gauge('agent_relayed_bytes', 'Bytes of peer channel datagrams through a TURN relay, both ways (since start)', () => agent.punch.relayCountersNow().relayedBytes);
  metrics.gauge('agent_relay_upgrades', 'Peer channels moved from a relay to a direct path (since start)', () => agent.punch.relayCountersNow().upgrades);
  metrics.gauge('agent_relay_allocated', 'Whether the agent holds a TURN allocation (1) or not (0)', () => (agent.relay.status() ? 1 : 0));
  metrics.gauge('agent_relays_lost', 'TURN relays that stopped answering while allocated (since start)', () => agent.relay.counters.relaysLost);
  // The control socket first: an agent that cannot start (socket in use, directory missing) must
  // not have sent anything (an AUTH_REQUEST would count at authd and could displace a running
  // agent's session).
  const control = await ControlServer.listen(str(c, 'control-socket'), agent, peers, (l, m, f) => logger.log(l, m, f));
  try {
    await agent.start();
  } catch (err) {
    await control.close();
    throw err;
  }
  logger.info('listening', {
    controlSocket: control.path, udpPort: agent.localPort, authd: formatAddress(opts.authd),
    ...(opts.locatord ? { locatord: formatAddress(opts.locatord) } : {}), peersFile: peers.path,
  });
  return {
    async stop() {
      await agent.stop();
      await control.close();
    },
    reload(next: Config) {
      if (peersPath(next) !== peers.path) throw new Error('peers-file changed: restart devloc-agent to use the new file');
      peers.load();
      // Services added to authd since the last grant (a match service) are in the next one.
      void agent.reauthenticate('SIGHUP');
    },
  };
}

export const agentDaemon: DaemonDefinition = {
  name: 'agent',
  summary: 'The devloc terminal agent: authenticates this device, registers its address with locatord and keeps it current;\nserves the local control API used by "devloc status/lookup/online/group/peers/match".',
  spec: agentSpec,
  check,
  start,
};
