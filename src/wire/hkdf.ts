// HKDF-SHA-256 (RFC 5869) for the derivations made per authentication, session or channel
// (devloc-protocol(7): seal keys, session keys, channel keys; the rarer ones, group codes and the
// Redis store's keys, call hkdfSync themselves), by one of two implementations that give the same
// bytes (test/unit/hkdf.test.ts):
//   - node:crypto's hkdfSync, the default: what a terminal uses. It derives a few keys an hour.
//   - hkdfSha256 (hmac-sha256.ts, JavaScript), which the servers choose at start
//     (`deriveKeysInJavaScript`): hkdfSync makes native key objects on every call, 7.5% of
//     locatord's thread in a profile of first REGISTERs; the JavaScript one costs half as much.
// Not the JavaScript one everywhere: once V8 optimises its SHA-256 loop, which a handful of
// derivations is enough for, the process keeps ~4 MiB more resident (the optimising compiler's
// memory): measured in `devloc bench --only agent`, the agent's idle RSS over bare Node went from
// +4.3 to +8.1 MiB in an ES module host and from +6.8 to +10.6 MiB for the daemon, beyond its
// budget, when the agent's derivations moved to it.
import { hkdfSync } from 'node:crypto';
import { checkHkdfLength, hkdfSha256 } from './hmac-sha256.js';

let inJavaScript = false;

/** This process derives its keys with the JavaScript HKDF from now on (servers, at start). */
export function deriveKeysInJavaScript(on = true): void {
  inJavaScript = on;
}

/** `length` bytes of HKDF-SHA-256 from `ikm` with `salt` and `info`, in memory of their own. */
export function hkdf(ikm: Uint8Array, salt: Uint8Array, info: Uint8Array, length: number): Buffer {
  // hkdfSha256 checks the length itself; node's path gets the same check, hence the same
  // RangeError whichever implementation derives (hkdfSync's own error differs).
  if (inJavaScript) return hkdfSha256(ikm, salt, info, length);
  checkHkdfLength(length);
  return Buffer.from(hkdfSync('sha256', ikm, salt, info, length));
}
