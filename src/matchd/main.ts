#!/usr/bin/env node
// devloc-matchd(8): the matching daemon (the patent's third embodiment). Options, config file
// keys and environment variables (DEVLOC_MATCHD_*) come from `spec` below; man/devloc-matchd.8
// documents every one of them. matchd keeps nothing on disk: `state-dir` is accepted (every
// daemon has it) but unused.
import type { Config, Spec } from '../common/config.js';
import { list, num, str } from '../common/config.js';
import type { DaemonDefinition, Running } from '../common/daemon.js';
import { main } from '../common/daemon.js';
import { DEFAULT_CLOCK_SKEW_S, DEFAULT_PORTS, DEFAULT_RETRANSMIT_TIMEOUT_MS, MAX_RETRANSMIT } from '../wire/constants.js';
import { checkServiceKeys, readServiceKey, readTrust } from '../net/trust.js';
import { MAX_SESSIONS_LIMIT } from '../net/sessions.js';
import { defaultEngineOptions, MAX_PARTY_LIMIT } from './engine.js';
import type { EngineTuning, MatchdOptions } from './server.js';
import { DEFAULT_SUBMIT_LIMITS, startMatchd } from './server.js';
import { isMainModule } from '../common/entry.js';
import { controlSocketOption } from '../common/control.js';
import { matchdControl } from './control.js';

const d = defaultEngineOptions;

export const spec: Spec = {
  listen: { type: 'string', default: '0.0.0.0', describe: 'IP address to listen on (IPv4 or IPv6 literal)' },
  port: { type: 'number', default: DEFAULT_PORTS.matchd, min: 0, max: 65535, describe: 'UDP port (0 = any free port)' },
  'control-socket': controlSocketOption('matchd'),
  'service-key': { type: 'string', describe: 'service key file (kind "service"); its service ID is the ticket audience (required)' },
  trust: { type: 'list', default: [], reloadable: true, describe: 'authd public key files whose tickets are accepted, comma-separated (required)' },
  'clock-skew': { type: 'number', default: DEFAULT_CLOCK_SKEW_S, min: 0, max: 86_400, describe: 'clock skew allowed on ticket times, seconds' },
  'submit-freshness': { type: 'number', default: 120, min: 1, max: 3600, describe: "how far a session-opening MATCH_SUBMIT's timeMs may be from our clock, seconds" },
  'max-sessions': { type: 'number', default: 1_000_000, min: 1, max: MAX_SESSIONS_LIMIT, describe: 'most sessions held (least recently used dropped beyond)' },
  'tick-interval': { type: 'number', default: 250, min: 10, max: 10_000, describe: 'how often deadlines and widening are processed, ms' },
  'widen-step': { type: 'number', default: d.widenStep, min: 0, reloadable: true, describe: 'how much preferred numeric ranges widen on each side per step' },
  'widen-interval': { type: 'number', default: d.widenIntervalMs / 1000, min: 0, max: 3600, reloadable: true, describe: 'waiting time per widening step, seconds (0 = no widening)' },
  'preferred-drop': { type: 'number', default: d.preferredDropMs / 1000, min: 0, max: 3600, reloadable: true, describe: 'waiting time after which preferred requirements stop filtering, seconds' },
  'max-waiting': { type: 'number', default: d.maxWaiting, min: 1, reloadable: true, describe: 'most waiting requests in total (FULL beyond)' },
  'max-waiting-per-media': { type: 'number', default: d.maxWaitingPerMedia, min: 1, reloadable: true, describe: 'most waiting requests per media ID (FULL beyond)' },
  'max-wait': { type: 'number', default: d.maxWaitMs / 1000, min: 1, max: 3600, reloadable: true, describe: 'longest wait granted, seconds (a larger maxWaitS is clamped)' },
  'max-party': { type: 'number', default: d.maxParty, min: 2, max: MAX_PARTY_LIMIT, reloadable: true, describe: 'largest party formed (a larger maxParty is clamped)' },
  'result-retention': { type: 'number', default: d.retentionMs / 1000, min: 0, max: 86_400, reloadable: true, describe: 'how long an ended request can still be polled or cancelled, seconds' },
  'push-timeout': { type: 'number', default: DEFAULT_RETRANSMIT_TIMEOUT_MS, min: 50, max: 60_000, describe: 'first MATCH_RESULT retransmission after this (x1..1.5, doubling), ms' },
  'push-retransmit': { type: 'number', default: MAX_RETRANSMIT, min: 0, max: 10, describe: 'MATCH_RESULT retransmissions before giving up' },
  'submit-interval': { type: 'number', default: DEFAULT_SUBMIT_LIMITS.intervalMs / 1000, min: 0, max: 3600, describe: 'one MATCH_SUBMIT per terminal per this many seconds on average (0 = unlimited)' },
  'submit-burst': { type: 'number', default: DEFAULT_SUBMIT_LIMITS.burst, min: 1, max: 100, describe: 'MATCH_SUBMITs a terminal may send in a row before submit-interval applies' },
  'match-cooldown': { type: 'number', default: DEFAULT_SUBMIT_LIMITS.cooldownMs / 1000, min: 0, max: 3600, describe: 'seconds after a match during which the terminal may not submit again (0 = none)' },
  rate: { type: 'number', default: 50, min: 0, reloadable: true, describe: 'datagrams per second per source IP (0 = unlimited)' },
  burst: { type: 'number', default: 100, min: 1, reloadable: true, describe: 'burst allowed per source IP' },
  'receive-buffer': { type: 'number', default: 0, min: 0, describe: 'UDP receive buffer (SO_RCVBUF) in bytes (0 = system default)' },
};

export { readTrust } from '../net/trust.js';

export { readServiceKey } from '../net/trust.js';

export function tuningFromConfig(c: Config): EngineTuning {
  return {
    widenStep: num(c, 'widen-step'),
    widenIntervalMs: num(c, 'widen-interval') * 1000,
    preferredDropMs: num(c, 'preferred-drop') * 1000,
    maxWaiting: num(c, 'max-waiting'),
    maxWaitingPerMedia: num(c, 'max-waiting-per-media'),
    maxWaitMs: num(c, 'max-wait') * 1000,
    maxParty: num(c, 'max-party'),
    retentionMs: num(c, 'result-retention') * 1000,
    // Finished requests kept: bounded like the waiting ones.
    maxRetained: num(c, 'max-waiting'),
  };
}

/** Deep configuration check (also --check-config). */
export function checkConfig(c: Config): string | null {
  return checkServiceKeys(str(c, 'service-key'), list(c, 'trust'));
}

export function optionsFromConfig(c: Config): MatchdOptions {
  const sk = readServiceKey(str(c, 'service-key'));
  return {
    host: str(c, 'listen'),
    port: num(c, 'port'),
    service: sk.service,
    serviceSecret: sk.secret,
    trustedKeys: readTrust(list(c, 'trust')),
    clockSkewS: num(c, 'clock-skew'),
    freshnessMs: num(c, 'submit-freshness') * 1000,
    maxSessions: num(c, 'max-sessions'),
    tickMs: num(c, 'tick-interval'),
    engine: tuningFromConfig(c),
    push: { initialTimeoutMs: num(c, 'push-timeout'), maxRetransmit: num(c, 'push-retransmit') },
    rate: { ratePerS: num(c, 'rate'), burst: num(c, 'burst') },
    submitLimits: { intervalMs: num(c, 'submit-interval') * 1000, burst: num(c, 'submit-burst'), cooldownMs: num(c, 'match-cooldown') * 1000 },
    receiveBufferBytes: num(c, 'receive-buffer'),
  };
}

export const definition: DaemonDefinition = {
  derivesKeysPerRequest: true,
  name: 'matchd',
  summary: 'devloc matching server: pairs terminals that want partners for the same media ID, choosing a host they can all reach, and pushes the result.',
  spec,
  check: checkConfig,
  async start(config, logger, metrics): Promise<Running> {
    const m = await startMatchd({ ...optionsFromConfig(config), logger, metrics });
    return {
      stop: () => m.stop(),
      control: matchdControl(m, logger),
      reload(next: Config) {
        const keys = readTrust(list(next, 'trust')); // throws: reload refused, old keys kept
        const dropped = m.setTrustedKeys(keys);
        m.setRate(num(next, 'rate'), num(next, 'burst'));
        m.tune(tuningFromConfig(next));
        logger.info('trusted keys reloaded', { kids: [...keys.keys()], sessionsDropped: dropped });
      },
    };
  },
};

if (isMainModule(import.meta.url)) main(definition);
