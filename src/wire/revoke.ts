// REVOKE (devloc-protocol(7), REVOCATION): authd tells a service to end a terminal now. The body
// is signed with authd's ticket-signing key over a domain tag and the fields that matter,
// including the request ID, so a service that trusts authd's tickets trusts its revocations
// with the same keys (the --trust files), and the signature of one REVOKE cannot be moved to
// another. Pure: no clock, no socket.
import type { KeyObject } from 'node:crypto';
import type { Bodies } from './catalog.js';
import { encodeCbor } from './cbor.js';
import { ErrorCode } from './errors.js';
import { ed25519Sign, ed25519Verify } from './keys.js';

const DOMAIN = Buffer.from('devloc-revoke-v1', 'ascii');

export type RevokeFields = Omit<Bodies['REVOKE'], 'kid' | 'signature'>;

function signedBytes(rid: Uint8Array, f: RevokeFields): Buffer {
  return Buffer.concat([DOMAIN, encodeCbor([Buffer.from(rid), Buffer.from(f.locatorId), f.code, f.untilS, f.timeMs])]);
}

/** The REVOKE body, signed with `key` (kid `kid`, hex). */
export function signRevoke(rid: Uint8Array, f: RevokeFields, kid: string, key: KeyObject): Bodies['REVOKE'] {
  return { ...f, kid: Buffer.from(kid, 'hex'), signature: ed25519Sign(key, signedBytes(rid, f)) };
}

/** Only these codes may be pushed: a REVOKE cannot make a service answer anything else. */
export const REVOKE_CODES: readonly number[] = [ErrorCode.REVOKED];

/** Check a REVOKE against the trusted authd keys and the clock; never throws. */
export function verifyRevoke(
  rid: Uint8Array, b: Bodies['REVOKE'], trusted: ReadonlyMap<string, KeyObject>, nowMs: number, skewMs: number,
): { ok: true } | { ok: false; code: ErrorCode; reason: string } {
  const kid = Buffer.from(b.kid).toString('hex');
  const key = trusted.get(kid);
  if (!key) return { ok: false, code: ErrorCode.BAD_PROOF, reason: `REVOKE signed by an untrusted key (kid ${kid || 'empty'})` };
  // The cheap checks before the signature.
  if (Math.abs(b.timeMs - nowMs) > skewMs) return { ok: false, code: ErrorCode.CLOCK_SKEW, reason: 'REVOKE timeMs outside the clock skew' };
  if (!REVOKE_CODES.includes(b.code)) return { ok: false, code: ErrorCode.BAD_MESSAGE, reason: `REVOKE code ${b.code} is not one a service may be told` };
  if (!ed25519Verify(key, signedBytes(rid, b), b.signature)) return { ok: false, code: ErrorCode.BAD_PROOF, reason: 'REVOKE signature does not verify' };
  return { ok: true };
}
