// devloc(1) presence commands, through the local devloc-agent:
//   devloc watch [IDs|names]   watch terminals: their status now, then one line per change
//                              (--json: JSON lines), until Ctrl-C; no IDs: the agent's list
//   devloc presence set [--media ID] [--looking] [--want k=v] [--status TEXT]
//   devloc presence list       what the agent watches, as last told
//   devloc search [--media ID] [--require "attr 10..20"] ...   partner search (SEARCH)
//   devloc media set ID        change the media ID at run time ("" : none)
//   devloc allow add|rm IDs|names, devloc allow list   the visibility allow list (re-registers)
// Exit status: 0 done (watch: interrupted), 1 the agent refused or could not be reached, 2 bad arguments.
import type { Argv, CommandModule } from 'yargs';
import type { PresenceStatus } from '../../agent/presence.js';
import { escapeControls } from '../../common/escape.js';
import { MAX_STATUS_BYTES } from '../../wire/catalog.js';
import { AgentError } from '../../agent/errors.js';
import { parseRequirement } from '../../agent/match.js';
import { askAgent, print, printJson, runHandler, UsageError } from '../util.js';
import type { Common } from './agentctl.js';
import { common } from './agentctl.js';

/**
 * One line per status: "online  alice (3f2a…)  chess  looking for level=3  "up for a game"".
 * Escaped here, as the other formatters of peer strings do (agentctl.ts): one line whatever a peer
 * put in its nickname, media ID or wants (print keeps newlines, and one would start a line that
 * looks like another terminal's status; devloc(1) DESCRIPTION).
 */
export function formatPresence(s: PresenceStatus): string {
  const who = s.names.length > 0 ? `${s.names.join(',')} (${s.id})` : s.nickname !== undefined ? `${s.nickname} (${s.id})` : s.id;
  const parts = [s.online ? 'online ' : 'offline', who];
  const p = s.presence;
  if (s.online && p) {
    if (p.mediaId !== undefined) parts.push(p.mediaId);
    if (p.lookingForPartner) parts.push(`looking${p.wants ? ` for ${Object.entries(p.wants).map(([k, v]) => `${k}=${String(v)}`).join(' ')}` : ''}`);
    if (p.status !== undefined) parts.push(JSON.stringify(p.status));
  }
  return escapeControls(parts.join('  '));
}

const line = (a: Common, s: PresenceStatus): void => {
  if (a.json) printJson(s, true);
  else print(formatPresence(s));
};

interface WatchArgs extends Common {
  targets: string[];
}

export const watchCommand: CommandModule<object, WatchArgs> = {
  command: 'watch [targets..]',
  describe: 'watch terminals (IDs or address-book names): their status, then a line per change, until Ctrl-C',
  builder: (y) => common(y).positional('targets', { type: 'string', array: true, describe: 'locator IDs or nicknames (none: what the agent watches)' }) as unknown as Argv<WatchArgs>,
  handler: (a) => runHandler('watch', async () => {
    const targets = (a.targets ?? []).map(String);
    let stop = false;
    process.once('SIGINT', () => {
      stop = true;
      process.exit(0);
    });
    // The log first, so no change between the answer and the first wait is lost.
    let after = ((await askAgent(a.socket, 'presence.wait', { timeoutS: 0 })) as { seq: number }).seq;
    const now = (targets.length > 0 ? await askAgent(a.socket, 'watch', { targets }) : await askAgent(a.socket, 'presence.list', {})) as PresenceStatus[];
    for (const s of now) line(a, s);
    while (!stop) {
      const r = (await askAgent(a.socket, 'presence.wait', { after, timeoutS: 30 }, 60_000)) as { seq: number; changes: PresenceStatus[] };
      for (const s of r.changes) line(a, s);
      after = r.seq;
    }
  }),
};

interface SetArgs extends Common {
  media?: string;
  looking: boolean;
  want: string[];
  status?: string;
}

const set: CommandModule<object, SetArgs> = {
  command: 'set',
  describe: 'replace this terminal\'s presence record (absent fields are cleared); watchers are told',
  builder: (y) =>
    common(y)
      .option('media', { type: 'string', describe: 'media ID in use' })
      .option('looking', { type: 'boolean', default: false, describe: 'looking for a partner' })
      .option('want', { type: 'string', array: true, default: [] as string[], describe: 'wanted partner attribute key=value, repeatable (at most 8)' })
      .option('status', { type: 'string', describe: `status text (at most ${MAX_STATUS_BYTES} bytes)` }) as unknown as Argv<SetArgs>,
  handler: (a) => runHandler('presence set', async () => {
    if (a.status !== undefined && Buffer.byteLength(String(a.status)) > MAX_STATUS_BYTES) throw new UsageError(`--status: at most ${MAX_STATUS_BYTES} bytes`);
    if (a.want.length > 8) throw new UsageError('--want: at most 8 attributes');
    const r = await askAgent(a.socket, 'presence.set', {
      ...(a.media !== undefined ? { mediaId: String(a.media) } : {}), lookingForPartner: a.looking,
      ...(a.want.length ? { wants: a.want.map(String) } : {}), ...(a.status !== undefined ? { status: String(a.status) } : {}),
    });
    if (a.json) printJson(r, true);
    else print('presence set');
  }),
};

const list: CommandModule<object, Common> = {
  command: 'list',
  describe: 'the terminals the agent watches, as last told',
  builder: (y) => common(y),
  handler: (a) => runHandler('presence list', async () => {
    for (const s of (await askAgent(a.socket, 'presence.list', {})) as PresenceStatus[]) line(a, s);
  }),
};

interface SearchArgs extends Common {
  media?: string;
  require: string[];
}

export const searchCommand: CommandModule<object, SearchArgs> = {
  command: 'search',
  describe: 'partner search: online terminals looking for a partner with a media ID (default: the agent\'s) whose wanted attributes satisfy the requirements',
  builder: (y) =>
    common(y)
      .option('media', { type: 'string', describe: 'media ID (default: the one the agent uses)' })
      .option('require', { type: 'string', array: true, default: [] as string[], describe: 'requirement on the wanted attributes: "attr=value", "attr in a,b", "attr 10..20", repeatable (at most 16)' }) as unknown as Argv<SearchArgs>,
  handler: (a) => runHandler('search', async () => {
    const reqs = a.require.map(String);
    if (reqs.length > 16) throw new UsageError('--require: at most 16');
    try {
      for (const r of reqs) parseRequirement(r, true);
    } catch (err) {
      if (err instanceof AgentError) throw new UsageError(err.message);
      throw err;
    }
    const found = (await askAgent(a.socket, 'search', { ...(a.media !== undefined ? { mediaId: String(a.media) } : {}), ...(reqs.length ? { require: reqs } : {}) })) as PresenceStatus[];
    for (const s of found) line(a, s);
  }),
};

interface MediaArgs extends Common {
  id: string;
}

const mediaSet: CommandModule<object, MediaArgs> = {
  command: 'set <id>',
  describe: 'change the media ID in use now ("" for none); locatord and watchers are told, re-registrations keep it',
  builder: (y) => common(y).positional('id', { type: 'string', demandOption: true }) as unknown as Argv<MediaArgs>,
  handler: (a) => runHandler('media set', async () => {
    if (Buffer.byteLength(String(a.id)) > 64) throw new UsageError('media ID: at most 64 bytes');
    const r = await askAgent(a.socket, 'media.set', { mediaId: String(a.id) });
    if (a.json) printJson(r, true);
    else print('media set');
  }),
};

export const mediaCommand: CommandModule = {
  command: 'media <command>',
  describe: 'the media ID this terminal uses (media set), via the local agent',
  builder: (y) => y.command(mediaSet as CommandModule).demandCommand(1, 'name a media command: set'),
  handler: () => {},
};

interface AllowArgs extends Common {
  targets: string[];
}

/** The allow list as the agent answered it: one ID a line (none: nothing), or the answer as JSON. */
function printAllow(a: Common, r: { allow: string[] }): void {
  if (a.json) printJson(r, true);
  else if (r.allow.length > 0) print(r.allow.join('\n'));
}

const allowChange = (verb: 'add' | 'rm', describe: string): CommandModule<object, AllowArgs> => ({
  command: `${verb} <targets..>`,
  describe,
  builder: (y) => common(y).positional('targets', { type: 'string', array: true, demandOption: true, describe: 'locator IDs or address-book names' }) as unknown as Argv<AllowArgs>,
  handler: (a) => runHandler(`allow ${verb}`, async () => {
    const r = (await askAgent(a.socket, `allow.${verb}`, { targets: a.targets.map(String) })) as { allow: string[] };
    printAllow(a, r);
  }),
});

const allowList: CommandModule<object, Common> = {
  command: 'list',
  describe: 'the locator IDs on the allow list',
  builder: (y) => common(y),
  handler: (a) => runHandler('allow list', async () => {
    const r = (await askAgent(a.socket, 'allow.list', {})) as { allow: string[] };
    printAllow(a, r);
  }),
};

export const allowCommand: CommandModule = {
  command: 'allow <command>',
  describe: 'the visibility allow list: terminals that may always see this one (with --visibility groups), via the local agent',
  builder: (y) => y
    .command(allowChange('add', 'let terminals see this one (at most 32 in all); the agent registers again') as CommandModule)
    .command(allowChange('rm', 'take terminals off the allow list; the agent registers again') as CommandModule)
    .command(allowList as CommandModule)
    .demandCommand(1, 'name an allow command: add, rm, list'),
  handler: () => {},
};

export const presenceCommand: CommandModule = {
  command: 'presence <command>',
  describe: "this terminal's presence record and the watched terminals (presence set|list), via the local agent",
  builder: (y) => y.command(set as CommandModule).command(list as CommandModule).demandCommand(1, 'name a presence command: set, list'),
  handler: () => {},
};
