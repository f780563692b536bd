// The lookup of devloc's UDP sockets, alone in its file: the retransmitting client (client.ts)
// and the agent's TURN link (agent/turn/client.ts) take it, and src/agent/turn may import it
// without the client (test/turn/imports.test.ts). Imports only src/wire/addr.ts; node:dns is
// loaded when a name is looked up, not before.
import { ipToBytes, packIp } from '../wire/addr.js';

type LookupCallback = (err: NodeJS.ErrnoException | null, address: string, family: number) => void;

/**
 * The `lookup` of our UDP sockets: an IP literal (all devloc sends to) is its own answer, as
 * dns.lookup would give it, without loading node:dns; a name goes to dns.lookup, loaded then.
 * dgram's default lookup loads node:dns with the first bind, and with it c-ares: 0.7 MiB of an
 * idle agent's RSS (issue 20).
 */
export function literalLookup(host: string, options: unknown, callback: LookupCallback): void {
  if (typeof options !== 'object' && ipToBytes(host) !== null) {
    process.nextTick(callback, null, host, host.includes(':') ? 6 : 4);
    return;
  }
  import('node:dns').then(
    (dns) => dns.lookup(host, options as number, callback),
    (err: NodeJS.ErrnoException) => callback(err, '', 0),
  );
}

/**
 * The lookup of a server's socket (net/server.ts bindUdp): literalLookup until `bound()` is
 * called, then an IPv4 literal (every address a server answers or probes comes from node:dgram's
 * rinfo or its own table) answers within the call, without the tick literalLookup and dns.lookup
 * add to every send: 0.1-0.3 us of CPU per send in a loop of sends to loopback here (a bare echo
 * server's CPU per datagram showed no difference within its spread; README, beside the table).
 * Not while binding: an answer within the call makes bind() emit 'listening' before it returns.
 * Anything else (IPv6, a name) still goes through literalLookup.
 */
export function serverLookup(): { lookup: (host: string, options: unknown, callback: LookupCallback) => void; bound: () => void } {
  let isBound = false;
  return {
    lookup(host, options, callback) {
      if (isBound && typeof options !== 'object' && typeof packIp(host) === 'number') callback(null, host, 4);
      else literalLookup(host, options, callback);
    },
    bound() {
      isBound = true;
    },
  };
}
