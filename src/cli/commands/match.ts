// devloc match submit|status|cancel: find partners through the local devloc-agent, which talks
// to devloc-matchd (devloc-matchd(8)) over its own socket and tickets.
//
//   devloc match submit --media chess [--min 2] [--max 4] [--attr level=12] [--require "region=eu"]
//                       [--prefer "level 10..14"] [--wait 60] [--nick alice] [--no-wait] [--json]
//   devloc match status [ID]
//   devloc match cancel [ID]
//
// `submit` waits for the result by default and prints the party with the host marked.
// Exit status: 0 matched (or submitted, with --no-wait; status and cancel: answered), 1 no
// match, cancelled, or the agent refused or could not be reached, 2 bad arguments.
import type { Argv, CommandModule } from 'yargs';
import type { MatchResult } from '../../agent/match.js';
import { parseAttr, parseRequirement } from '../../agent/match.js';
import { AgentError } from '../../agent/agent.js';
import { classificationBoundMs } from '../../agent/netmode.js';
import { DEFAULT_RETRANSMIT_TIMEOUT_MS } from '../../wire/constants.js';
import { askAgent, cliIo, print, printJson, runHandler, table, UsageError } from '../util.js';
import { controlRequest } from '../../agent/control-client.js';
import type { Common } from './agentctl.js';
import { common } from './agentctl.js';
import { escapeControls } from '../../common/escape.js';



/** Human form of a result: a headline, then for a match the party with the host marked. */
export function formatMatch(r: MatchResult): string {
  const what = `${r.mediaId}${r.appType ? ` (${r.appType})` : ''}`;
  const id = `match ${r.matchId}`;
  const lines: string[] = [];
  switch (r.state) {
    case 'matched': {
      const members = r.members ?? [];
      const host = r.host !== undefined ? members[r.host] : undefined;
      const hostName = host ? (host.self ? 'you' : `${host.nickname ?? host.names[0] ?? host.id.slice(0, 8)} (${host.id.slice(0, 8)}…)`) : '-';
      const via = r.path && r.path !== 'host' ? `, you reach it ${r.path === 'relay' ? 'through a relay' : r.path === 'lan' ? 'on the LAN' : 'directly'}` : '';
      lines.push(`matched: ${escapeControls(what)}, ${members.length} members, host: ${escapeControls(hostName)}${via} [${escapeControls(id)}]`);
      // PATH: each member's path to the host (lan, direct, relay), when matchd says.
      const paths = members.some((m) => m.path !== undefined);
      const rows = [['', 'LOCATOR ID', 'NICKNAME', 'MODE', 'ADDRESS', ...(paths ? ['PATH'] : []), 'ROLE']];
      members.forEach((m, i) => {
        const role = [m.host ? 'host' : '', m.self ? 'you' : ''].filter(Boolean).join(', ') || '-';
        const nick = m.nickname ?? '-';
        const names = m.names.length ? ` (${m.names.join(', ')})` : '';
        rows.push([`${m.host ? '*' : ' '}${i}`, m.id, nick + names, m.netMode, m.addr, ...(paths ? [m.host ? '-' : m.path ?? '-'] : []), role]);
      });
      lines.push(table(rows));
      break;
    }
    case 'waiting':
      lines.push(`waiting: ${what}, party of ${r.minParty}..${r.maxParty}, until ${r.deadline.replace(/\.\d{3}Z$/, 'Z')} [${id}]`);
      break;
    case 'no-match':
      lines.push(`no match: ${what}, nobody suitable before ${r.deadline.replace(/\.\d{3}Z$/, 'Z')} [${id}]`);
      if (r.noPath) lines.push('(a compatible partner was waiting, but there was no path to it: not direct, and no relay either of you could use)');
      break;
    case 'cancelled':
      lines.push(`cancelled: ${what} [${id}]`);
      break;
  }
  if (r.reason) lines.push(`(${r.reason})`);
  return lines.join('\n');
}

// ---- submit ------------------------------------------------------------------------------------

interface SubmitArgs extends Common {
  media: string;
  'app-type'?: string;
  min: number;
  max?: number;
  attr: string[];
  require: string[];
  prefer: string[];
  wait: number;
  nick?: string;
  'no-wait': boolean;
}

const submit: CommandModule<object, SubmitArgs> = {
  command: 'submit',
  describe: 'ask matchd for partners; waits for the result and prints the party (host marked *)',
  builder: (y) =>
    common(y)
      // --no-wait is its own flag, not the negation of --wait SECONDS.
      .parserConfiguration({ 'boolean-negation': false })
      .option('media', { type: 'string', demandOption: true, describe: 'media ID: the game or application to find partners for' })
      .option('app-type', { type: 'string', describe: 'application type (game, chat, voice, ...); only equal types match' })
      .option('min', { type: 'number', default: 2, describe: 'smallest party, this terminal included' })
      .option('max', { type: 'number', describe: 'largest party (default: --min)' })
      .option('attr', { type: 'string', array: true, default: [] as string[], describe: 'own attribute key=value (numbers and true/false are typed), repeatable' })
      .option('require', { type: 'string', array: true, default: [] as string[], describe: 'mandatory requirement on partners: "attr=value", "attr in a,b", "attr 10..20", repeatable' })
      .option('prefer', { type: 'string', array: true, default: [] as string[], describe: 'preferred requirement (relaxed while waiting), same forms, repeatable' })
      .option('wait', { type: 'number', default: 60, describe: 'longest wait for partners, seconds (then: no match)' })
      .option('nick', { type: 'string', describe: "nickname shown to partners (default: the agent's --nickname)" })
      .option('no-wait', { type: 'boolean', default: false, describe: 'return once matchd has the request (print its ID) instead of waiting' }) as unknown as Argv<SubmitArgs>,
  handler: (a) => runHandler('match submit', async () => {
    const attrs: Record<string, string | number | boolean> = {};
    try {
      for (const x of a.attr.map(String)) {
        const [k, v] = parseAttr(x);
        attrs[k] = v;
      }
      for (const r of a.require.map(String)) parseRequirement(r, true);
      for (const r of a.prefer.map(String)) parseRequirement(r, false);
    } catch (err) {
      if (err instanceof AgentError) throw new UsageError(err.message);
      throw err;
    }
    if (!Number.isInteger(a.wait) || a.wait < 1 || a.wait > 3600) throw new UsageError('--wait: 1 to 3600 seconds');
    const wait = !a['no-wait'];
    const args: Record<string, unknown> = {
      mediaId: String(a.media), minParty: a.min, ...(a.max !== undefined ? { maxParty: a.max } : {}), maxWaitS: a.wait, wait,
      ...(a['app-type'] !== undefined ? { appType: String(a['app-type']) } : {}),
      ...(Object.keys(attrs).length ? { attrs } : {}),
      ...(a.require.length ? { require: a.require.map(String) } : {}),
      ...(a.prefer.length ? { prefer: a.prefer.map(String) } : {}),
      ...(a.nick !== undefined ? { nickname: String(a.nick) } : {}),
    };
    // Interrupted while waiting: withdraw the request rather than leave it to be matched.
    let interrupted = false;
    const onSignal = (): void => {
      if (interrupted) process.exit(130);
      interrupted = true;
      cliIo.err('devloc match submit: interrupted, cancelling the request\n');
      void controlRequest(a.socket, 'match.cancel', {}, 5000).catch(() => undefined).finally(() => process.exit(130));
    };
    if (wait) process.once('SIGINT', onSignal);
    let r: MatchResult;
    try {
      // The agent answers at the latest a minute after the deadline (matchd unreachable), after
      // waiting up to one classification of its network mode before it submits.
      r = (await askAgent(a.socket, 'match.submit', args, (a.wait + 90) * 1000 + classificationBoundMs(DEFAULT_RETRANSMIT_TIMEOUT_MS))) as MatchResult;
    } finally {
      process.off('SIGINT', onSignal);
    }
    if (a.json) printJson(r);
    else print(wait ? formatMatch(r) : `submitted: ${r.mediaId}, waiting until ${r.deadline.replace(/\.\d{3}Z$/, 'Z')}\n${r.matchId}`);
    if (wait && r.state !== 'matched') process.exitCode = 1;
  }),
};

// ---- status / cancel ---------------------------------------------------------------------------

interface IdArgs extends Common {
  id?: string;
}

function byId(verb: 'status' | 'cancel'): CommandModule<object, IdArgs> {
  return {
    command: `${verb} [id]`,
    describe: verb === 'status'
      ? 'state of a match request (default: the newest), asking matchd while it waits'
      : 'withdraw a waiting match request (default: the newest); too late once matched',
    builder: (y) => common(y).positional('id', { type: 'string', describe: 'match ID (16 hex digits) as submit printed it' }) as unknown as Argv<IdArgs>,
    handler: (a) => runHandler(`match ${verb}`, async () => {
      if (a.id !== undefined && !/^[0-9a-fA-F]{16}$/.test(String(a.id))) throw new UsageError(`${JSON.stringify(a.id)} is not a match ID (16 hex digits)`);
      const r = (await askAgent(a.socket, `match.${verb}`, a.id !== undefined ? { matchId: String(a.id) } : {})) as MatchResult;
      if (a.json) printJson(r);
      else print(formatMatch(r));
    }),
  };
}

export const matchCommand: CommandModule = {
  command: 'match <command>',
  describe: 'find partners through devloc-matchd (match submit|status|cancel), via the local agent',
  builder: (y) =>
    y
      .command(submit as CommandModule)
      .command(byId('status') as CommandModule)
      .command(byId('cancel') as CommandModule)
      .demandCommand(1, 'name a match command: submit, status, cancel'),
  handler: () => {},
};
