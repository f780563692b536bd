// Which terminals can reach each other directly, by network mode (the patent's "network mode
// field": "when both of two users ... cannot directly communicate with each other, another user
// from outside who can directly communicate is searched").
//
// "Directly" means UDP with simultaneous hole punching: each side learns the other's observed
// address (the one matchd saw, i.e. its NAT mapping toward matchd) and both send at once. The
// RFC 4787 terms decide whether that works:
//
//   mapping   EIM = endpoint-independent: the mapping matchd saw is the one every peer sees.
//             EDM = endpoint-dependent ("symmetric"): a new external port per destination, so
//                   the address matchd reports is wrong for a peer.
//   filtering EIF = anything may send in once a mapping exists ("full cone"),
//             ADF = only addresses we sent to ("restricted"), any port of theirs,
//             APDF = only address:port pairs we sent to ("port-restricted"; symmetric NATs too).
//
// Direct connectivity matrix (y = works, - = fails); UNKNOWN is treated as SYMMETRIC (the worst
// mode in which UDP still flows), UDP_BLOCKED reaches nobody:
//
//                     open  full-cone  restricted  port-restr.  symmetric  udp-blocked
//   open               y       y          y            y           y           -
//   full-cone          y       y          y            y           y           -
//   restricted         y       y          y            y           y           -
//   port-restricted    y       y          y            y           -           -
//   symmetric          y       y          y            -           -           -
//   udp-blocked        -       -          -            -           -           -
//
// Why each "-" / "y" on the NAT-to-NAT part:
// - EIM <-> EIM (full cone, restricted, port-restricted among themselves): both observed
//   addresses are valid for the peer; each side's outgoing packet opens its own filter for the
//   other's exact address:port, so the second packet in each direction gets through.
// - open or full-cone <-> anything that sends UDP: the open/full-cone side accepts from any
//   source, and answers to whatever (possibly new, symmetric) source port it saw.
// - restricted <-> symmetric: the symmetric side sends from a fresh port P' to the restricted
//   side's (valid) observed address; restricted filtering is by address only, and the restricted
//   side already sent to that address, so P' is let in; the reply to P' matches the symmetric
//   side's new mapping. Works.
// - port-restricted <-> symmetric: the port-restricted side only admits the exact port it sent
//   to (the symmetric side's mapping toward matchd), but the symmetric side sends from P'. Fails.
// - symmetric <-> symmetric: neither observed port is right for the other. Fails.
//
// A party whose members cannot all reach each other directly needs a host: a member that every
// other member can reach directly; the others talk through it (src/matchd/engine.ts). The agent
// uses the same matrix before hole punching (src/agent/punch.ts): a pair it marks "-" is not
// tried, and `noDirectPathReason` says why. The matrix lives in src/wire so that the agent, which
// may import only src/wire and its own files, shares it with matchd.
import { NetMode } from './constants.js';

/** Collapse a wire value to the mode used for connectivity (unknown -> symmetric). */
export function effectiveMode(netMode: number): number {
  if (netMode === NetMode.UNKNOWN || netMode > NetMode.UDP_BLOCKED) return NetMode.SYMMETRIC;
  return netMode;
}

/** Modes whose filtering lets in anyone (so they reach, and are reached by, every UDP peer). */
function acceptsAnyone(m: number): boolean {
  return m === NetMode.OPEN || m === NetMode.FULL_CONE;
}

/** Modes whose filtering is per address:port (fails against an endpoint-dependent mapping). */
function filtersByPort(m: number): boolean {
  return m === NetMode.PORT_RESTRICTED || m === NetMode.SYMMETRIC;
}

/** Can terminals of modes `a` and `b` exchange UDP directly (with hole punching)? Symmetric in a, b. */
export function canConnectDirect(a: number, b: number): boolean {
  const x = effectiveMode(a);
  const y = effectiveMode(b);
  if (x === NetMode.UDP_BLOCKED || y === NetMode.UDP_BLOCKED) return false;
  if (acceptsAnyone(x) || acceptsAnyone(y)) return true;
  // Both behind NATs other than full cone. Only an endpoint-dependent mapping can break it, and
  // only against a peer that filters by port.
  if (x === NetMode.SYMMETRIC && filtersByPort(y)) return false;
  if (y === NetMode.SYMMETRIC && filtersByPort(x)) return false;
  return true;
}

/**
 * How good a host a mode makes (lower is better): the order of NetMode itself, which runs from
 * the most to the least reachable, with unknown counted as symmetric.
 */
export function hostRank(netMode: number): number {
  return effectiveMode(netMode);
}

/** Whether `modes` can all talk pairwise directly. */
export function fullyConnected(modes: readonly number[]): boolean {
  for (let i = 0; i < modes.length; i++) {
    for (let j = i + 1; j < modes.length; j++) if (!canConnectDirect(modes[i]!, modes[j]!)) return false;
  }
  return true;
}

/** Whether member `host` of `modes` is reachable directly by every other member. */
export function canHost(modes: readonly number[], host: number): boolean {
  const h = modes[host]!;
  return modes.every((m, i) => i === host || canConnectDirect(h, m));
}

/**
 * Index of the host for a party given its members' modes, or -1 when the party cannot be
 * connected. Preference: the most reachable member that everyone can reach; among equals, the
 * earliest (the caller lists members oldest request first, or anchor first).
 */
export function chooseHost(modes: readonly number[]): number {
  let best = -1;
  for (let i = 0; i < modes.length; i++) {
    if (!canHost(modes, i)) continue;
    if (best < 0 || hostRank(modes[i]!) < hostRank(modes[best]!)) best = i;
  }
  return best;
}

/** The matrix as text rows (for `devloc` docs and the man page test). */
export function matrixRows(): { mode: number; reaches: number[] }[] {
  const modes = [NetMode.OPEN, NetMode.FULL_CONE, NetMode.RESTRICTED, NetMode.PORT_RESTRICTED, NetMode.SYMMETRIC, NetMode.UDP_BLOCKED];
  return modes.map((a) => ({ mode: a, reaches: modes.filter((b) => canConnectDirect(a, b)) }));
}

const MODE_TEXT: Record<number, string> = {
  [NetMode.OPEN]: 'a public address',
  [NetMode.FULL_CONE]: 'a full-cone NAT',
  [NetMode.RESTRICTED]: 'a restricted-cone NAT',
  [NetMode.PORT_RESTRICTED]: 'a port-restricted NAT',
  [NetMode.SYMMETRIC]: 'a symmetric NAT',
  [NetMode.UDP_BLOCKED]: 'a network that blocks UDP',
};

/**
 * Why terminals of modes `own` and `peer` cannot reach each other directly, as one sentence for
 * status and logs; null when the matrix says they can. Modes as on the wire (unknown counts as
 * symmetric, as everywhere in this file).
 */
export function noDirectPathReason(own: number, peer: number): string | null {
  if (canConnectDirect(own, peer)) return null;
  const a = effectiveMode(own);
  const b = effectiveMode(peer);
  const pair = `this terminal is behind ${MODE_TEXT[a] ?? 'an unknown network'}${own === NetMode.UNKNOWN ? ' (not classified: counted as symmetric)' : ''} and the peer behind ${MODE_TEXT[b] ?? 'an unknown network'}${peer === NetMode.UNKNOWN ? ' (not classified: counted as symmetric)' : ''}`;
  if (a === NetMode.UDP_BLOCKED || b === NetMode.UDP_BLOCKED) return `${pair}: no UDP gets through`;
  if (a === NetMode.SYMMETRIC && b === NetMode.SYMMETRIC) {
    return `${pair}: both NATs pick a new port for each destination, so neither observed address is valid for the other`;
  }
  return `${pair}: the symmetric NAT sends from a new port for the peer, and the port-restricted NAT only lets in the exact port it sent to`;
}

// ---- relays (issue 17) -------------------------------------------------------------------------
//
// With a TURN relay (coturn, RFC 8656) every pair can talk, at a cost: a terminal that holds relay
// credentials (its authd grant's `relays`) and reaches the relay over some transport allocates a
// UDP relayed address there; a peer reaches it by sending UDP to that address (TURN permissions
// are per IP, so a symmetric peer's new ports are let in), or through its own allocation
// (relay to relay). So a pair is connectable through a relay when at least one side can use a
// relay and each side either sends UDP or can use a relay. A udp-blocked terminal can use a relay
// only over TCP or TLS. Terminals declare what they can use in MATCH_SUBMIT `relay` (a mask of
// RelayVia); matchd has no relay configuration of its own.

/** Transports over which a terminal reaches a TURN relay it holds credentials for (a bit mask). */
export const RelayVia = { UDP: 1, TCP: 2, TLS: 4 } as const;
/** Every RelayVia bit. */
export const RELAY_VIA_ALL = RelayVia.UDP | RelayVia.TCP | RelayVia.TLS;

/** A member's path to the host in MATCH_RESULT (absent on the host's own entry); LAN and DIRECT are both direct. */
export const MatchPath = { LAN: 1, DIRECT: 2, RELAY: 3 } as const;
export type MatchPathName = 'lan' | 'direct' | 'relay';
export const matchPathNames: Record<number, MatchPathName> = { [MatchPath.LAN]: 'lan', [MatchPath.DIRECT]: 'direct', [MatchPath.RELAY]: 'relay' };

/** What matching needs to know about a terminal: its network mode and relay capability. */
export interface Reach {
  netMode: number;
  /** RelayVia mask (0 or absent: no relay). */
  relay?: number;
}

/** Whether a terminal in `netMode` can use a relay it reaches over the transports in `relay`. */
export function canUseRelay(netMode: number, relay: number | undefined): boolean {
  const via = (relay ?? 0) & RELAY_VIA_ALL;
  return effectiveMode(netMode) === NetMode.UDP_BLOCKED ? (via & (RelayVia.TCP | RelayVia.TLS)) !== 0 : via !== 0;
}

/** Can `a` and `b` talk through a relay (one's allocation, or both)? Symmetric in a, b. */
export function canConnectRelayed(a: Reach, b: Reach): boolean {
  const ra = canUseRelay(a.netMode, a.relay);
  const rb = canUseRelay(b.netMode, b.relay);
  const sendsUdp = (m: number): boolean => effectiveMode(m) !== NetMode.UDP_BLOCKED;
  return (ra || rb) && (ra || sendsUdp(a.netMode)) && (rb || sendsUdp(b.netMode));
}

/**
 * The path between `a` and `b` (a MatchPath), or 0 when there is none. `sameNat`: both have the
 * same observed IP; a pair the matrix connects directly is then LAN (the agent tries the LAN
 * addresses first, src/agent/punch.ts planPath). A shared IP never adds a path of its own: a
 * carrier-grade NAT shows one address for many unrelated networks.
 */
export function pathBetween(a: Reach, b: Reach, sameNat = false): number {
  if (canConnectDirect(a.netMode, b.netMode)) return sameNat ? MatchPath.LAN : MatchPath.DIRECT;
  return canConnectRelayed(a, b) ? MatchPath.RELAY : 0;
}

/**
 * The host of a party and every member's path to it, or null when no member can host (some
 * member has no path to it). `path(i, j)` is pathBetween for members i and j. Preference: a host
 * every member reaches directly (LAN or direct), the most reachable first (hostRank); then the
 * host with the fewest relayed members, the most reachable first; among equals, the earliest.
 * `paths[host]` is 0.
 */
export function chooseHostByPaths(members: readonly Reach[], path: (i: number, j: number) => number): { host: number; paths: number[] } | null {
  let best: { host: number; paths: number[]; relayed: number } | null = null;
  for (let h = 0; h < members.length; h++) {
    const paths = members.map((_, i) => (i === h ? 0 : path(i, h)));
    if (paths.some((p, i) => i !== h && p === 0)) continue;
    const relayed = paths.filter((p) => p === MatchPath.RELAY).length;
    if (!best || relayed < best.relayed || (relayed === best.relayed && hostRank(members[h]!.netMode) < hostRank(members[best.host]!.netMode))) {
      best = { host: h, paths, relayed };
    }
  }
  return best && { host: best.host, paths: best.paths };
}
