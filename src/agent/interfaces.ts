// The terminal's own addresses, from os.networkInterfaces(). The agent polls this every few
// seconds: a DHCP renewal, a new Wi-Fi network or a PPP reconnect (the patent's connection
// server assigning a new address) shows up as a different set, and starts the whole sequence.
// Polling is used rather than netlink because it needs nothing beyond node:os and costs
// microseconds per poll.
import { networkInterfaces } from 'node:os';
import type { Address } from '../wire/addr.js';
import { normaliseIp } from '../wire/addr.js';

export interface LocalAddress {
  ip: string;
  family: 'IPv4' | 'IPv6';
  internal: boolean;
  /** IPv6 link-local (fe80::/10): useless to anyone off-link. */
  linkLocal: boolean;
}

export type InterfaceSource = () => ReturnType<typeof networkInterfaces>;

export function localAddresses(source: InterfaceSource = networkInterfaces): LocalAddress[] {
  const out: LocalAddress[] = [];
  for (const list of Object.values(source())) {
    for (const a of list ?? []) {
      const family = a.family === 'IPv4' || (a.family as unknown) === 4 ? 'IPv4' : 'IPv6';
      const ip = normaliseIp(a.address);
      out.push({ ip, family, internal: a.internal, linkLocal: family === 'IPv6' && /^fe[89ab]/i.test(ip) });
    }
  }
  return out;
}

/** A stable text summary of the address set, to compare polls. */
export function addressSignature(list: LocalAddress[]): string {
  return [...new Set(list.map((a) => a.ip))].sort().join(',');
}

/** LAN addresses worth reporting in REGISTER (catalog: at most 4), with our UDP port. */
export function reportableAddresses(list: LocalAddress[], port: number, max = 4): Address[] {
  const v4 = list.filter((a) => !a.internal && a.family === 'IPv4');
  const v6 = list.filter((a) => !a.internal && a.family === 'IPv6' && !a.linkLocal);
  return [...v4, ...v6].slice(0, max).map((a) => ({ ip: a.ip, port }));
}

export function isLocalIp(ip: string, list: LocalAddress[]): boolean {
  const n = normaliseIp(ip);
  return list.some((a) => a.ip === n);
}
