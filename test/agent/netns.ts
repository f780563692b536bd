// Network namespaces for agent tests: a "public" segment (a bridge in its own namespace, where
// the servers run), hosts attached to it, and hosts behind a NAT namespace doing nftables
// masquerade. Only documentation/private addresses inside namespaces created here are used
// (198.51.100.0/24 public side, 10.77.x.0/24 behind NATs); no namespace has a route anywhere
// else, so no test traffic can leave. Everything is deleted at teardown, also on failure.
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { startCoturn, type Coturn, type CoturnOptions } from '../turn/coturn.js';
import type { Stack, StackOptions, Teardown } from './stack.js';
import { stack } from './stack.js';

export const PUBLIC_NET = '198.51.100';

export function haveNetns(): string | null {
  if (process.getuid?.() !== 0) return 'needs root (network namespaces)';
  try {
    execFileSync('ip', ['-V'], { stdio: 'ignore' });
  } catch {
    return 'needs iproute2 (ip)';
  }
  try {
    execFileSync('nft', ['--version'], { stdio: 'ignore' });
  } catch {
    return 'needs nftables (nft)';
  }
  return null;
}

export function sh(cmd: string, args: string[], input?: string): string {
  try {
    return execFileSync(cmd, args, { encoding: 'utf8', stdio: ['pipe', 'pipe', 'pipe'], ...(input !== undefined ? { input } : {}) });
  } catch (err) {
    const e = err as { stderr?: string; message: string };
    throw new Error(`${cmd} ${args.join(' ')}: ${e.stderr?.trim() || e.message}`);
  }
}

/**
 * The lab owns what it starts: its stacks (`stack()`), its relays (`relay()`) and its namespaces.
 * One teardown, registered by the constructor, stops them in that order (`close()`): the
 * processes first, since a namespace is only gone once nothing runs in it.
 */
export class Lab {
  readonly prefix = `dla${randomBytes(3).toString('hex')}`;
  private readonly names: string[] = [];
  private readonly stacks: Stack[] = [];
  private readonly relays: Coturn[] = [];
  private bridgePort = 0;
  readonly pub: string;

  /** Creates the public namespace with bridge br0 at 198.51.100.1 and .2 (reflector alternate address). */
  constructor(private readonly t: Teardown) {
    t.teardown(() => this.close());
    this.pub = this.add('pub');
    this.ip(this.pub, ['link', 'add', 'br0', 'type', 'bridge']);
    this.ip(this.pub, ['addr', 'add', `${PUBLIC_NET}.1/24`, 'dev', 'br0']);
    this.ip(this.pub, ['addr', 'add', `${PUBLIC_NET}.2/24`, 'dev', 'br0']);
    this.ip(this.pub, ['link', 'set', 'br0', 'up']);
  }

  /** A stack (test/agent/stack.ts) whose servers listen on the public segment at .1. */
  async stack(o: StackOptions = {}): Promise<Stack> {
    const s = await stack(this.t, { netns: this.pub, listen: `${PUBLIC_NET}.1`, ...o });
    this.stacks.push(s);
    return s;
  }

  /** A coturn (test/turn/coturn.ts) in namespace `ns` at `ip` (a host on the public segment). */
  async relay(ns: string, ip: string, o: Omit<CoturnOptions, 'netns'> = {}): Promise<Coturn> {
    const r = await startCoturn({ ...o, netns: { name: ns, ip } });
    this.relays.push(r);
    return r;
  }

  /** Stops the stacks, then the relays, then deletes the namespaces (the teardown does it). */
  async close(): Promise<void> {
    await Promise.all(this.stacks.splice(0).map((s) => s.stopAll()));
    await Promise.all(this.relays.splice(0).map((r) => r.stop()));
    this.cleanup();
  }

  ns(short: string): string {
    return `${this.prefix}-${short}`;
  }

  add(short: string): string {
    const name = this.ns(short);
    sh('ip', ['netns', 'add', name]);
    this.names.push(name);
    this.ip(name, ['link', 'set', 'lo', 'up']);
    return name;
  }

  ip(ns: string, args: string[]): string {
    return sh('ip', ['-n', ns, ...args]);
  }

  exec(ns: string, cmd: string, args: string[], input?: string): string {
    return sh('ip', ['netns', 'exec', ns, cmd, ...args], input);
  }

  nft(ns: string, ruleset: string): void {
    this.exec(ns, 'nft', ['-f', '-'], ruleset);
  }

  /** A veth from `ns` (device `dev`, address `addr/24`) into the public bridge. */
  attach(ns: string, dev: string, addr: string): void {
    const peer = `bp${this.bridgePort++}`;
    this.ip(ns, ['link', 'add', dev, 'type', 'veth', 'peer', 'name', peer, 'netns', this.pub]);
    this.ip(this.pub, ['link', 'set', peer, 'master', 'br0']);
    this.ip(this.pub, ['link', 'set', peer, 'up']);
    this.ip(ns, ['addr', 'add', `${addr}/24`, 'dev', dev]);
    this.ip(ns, ['link', 'set', dev, 'up']);
  }

  /** A host on the public segment. */
  host(short: string, addr: string): string {
    const ns = this.add(short);
    this.attach(ns, 'eth0', addr);
    return ns;
  }

  /**
   * A NAT router (public address `outside`) and a LAN host behind it at 10.77.`lan`.2.
   * `eim`: plain masquerade (Linux keeps the source port: endpoint-independent mapping,
   * address-and-port-dependent filtering); `symmetric`: random,fully-random (a new port per
   * destination: endpoint-dependent mapping); `full-cone`: masquerade plus every inbound UDP
   * datagram forwarded to the LAN host on the same port (endpoint-independent mapping and
   * filtering). Returns the LAN host's namespace.
   *
   * With `isp` (an address on the public segment), the NAT's WAN link goes to an ISP router
   * (namespace `<short>i`) instead of the bridge: one routed hop between the NAT and everyone
   * else, as on the internet, where a datagram leaving the NAT with TTL 1 dies. The ISP router
   * answers ARP for `outside` on the bridge and for the segment on the NAT's side (proxy ARP),
   * so addresses stay as without it.
   */
  behindNat(short: string, outside: string, lan: number, kind: 'eim' | 'symmetric' | 'full-cone', o: { isp?: string } = {}): string {
    const router = this.add(`${short}r`);
    if (o.isp) this.ispLink(short, router, outside, o.isp);
    else this.attach(router, 'wan', outside);
    const host = this.add(short);
    this.ip(router, ['link', 'add', 'lan', 'type', 'veth', 'peer', 'name', 'eth0', 'netns', host]);
    this.ip(router, ['addr', 'add', `10.77.${lan}.1/24`, 'dev', 'lan']);
    this.ip(router, ['link', 'set', 'lan', 'up']);
    this.ip(host, ['addr', 'add', `10.77.${lan}.2/24`, 'dev', 'eth0']);
    this.ip(host, ['link', 'set', 'eth0', 'up']);
    this.ip(host, ['route', 'add', 'default', 'via', `10.77.${lan}.1`]);
    this.exec(router, 'sysctl', ['-qw', 'net.ipv4.ip_forward=1']);
    const masq = kind === 'symmetric' ? 'masquerade random,fully-random' : 'masquerade';
    const inbound = kind === 'full-cone'
      ? `  chain pre {\n    type nat hook prerouting priority dstnat; policy accept;\n    iifname "wan" meta l4proto udp dnat to 10.77.${lan}.2\n  }\n`
      : '';
    this.nft(router, `table ip nat {\n${inbound}  chain post {\n    type nat hook postrouting priority srcnat; policy accept;\n    oifname "wan" ${masq}\n  }\n}\n`);
    return host;
  }

  /** The WAN link of `router` (address `outside`) through an ISP router at `isp` on the bridge. */
  private ispLink(short: string, router: string, outside: string, isp: string): void {
    const ns = this.add(`${short}i`);
    this.attach(ns, 'uplink', isp);
    this.ip(router, ['link', 'add', 'wan', 'type', 'veth', 'peer', 'name', 'cust', 'netns', ns]);
    this.ip(router, ['addr', 'add', `${outside}/24`, 'dev', 'wan']);
    this.ip(router, ['link', 'set', 'wan', 'up']);
    this.ip(ns, ['link', 'set', 'cust', 'up']);
    this.ip(ns, ['route', 'add', `${outside}/32`, 'dev', 'cust']);
    for (const k of ['net.ipv4.ip_forward=1', 'net.ipv4.conf.uplink.proxy_arp=1', 'net.ipv4.conf.cust.proxy_arp=1',
      'net.ipv4.neigh.uplink.proxy_delay=0', 'net.ipv4.neigh.cust.proxy_delay=0']) this.exec(ns, 'sysctl', ['-qw', k]);
  }

  /** Drop `percent`% of UDP at random in both directions inside `ns`; returns a drop-count reader. */
  lossy(ns: string, percent: number): () => number {
    this.nft(ns, [
      'table inet loss {',
      `  chain out { type filter hook output priority 0; policy accept; meta l4proto udp numgen random mod 100 < ${percent} counter drop; }`,
      `  chain in { type filter hook input priority 0; policy accept; meta l4proto udp numgen random mod 100 < ${percent} counter drop; }`,
      '}', '',
    ].join('\n'));
    return () => {
      const out = this.exec(ns, 'nft', ['list', 'table', 'inet', 'loss']);
      return [...out.matchAll(/counter packets (\d+)/g)].reduce((s, m) => s + Number(m[1]), 0);
    };
  }

  private cleanup(): void {
    for (const n of this.names.reverse()) {
      try {
        sh('ip', ['netns', 'del', n]);
      } catch {
        /* already gone */
      }
    }
    this.names.length = 0;
  }
}
