// Tickets: a CWT (RFC 8392) signed as an untagged COSE_Sign1 (RFC 9052) with EdDSA/Ed25519.
//
//   COSE_Sign1 = [protected: bstr .cbor {1: -8}, unprotected: {4: kid}, payload: bstr .cbor claims, signature: bstr(64)]
//   claims = {1 iss: tstr, 2 sub: tstr (locator ID, 32 hex digits), 3 aud: tstr, 4 exp, 6 iat,
//             7 cti: bstr(16), 8 cnf: {1 COSE_Key: {1 kty: 1 (OKP), -1 crv: 4 (X25519), -2 x: bstr(32)}}}
//   signature = Ed25519 over Sig_structure ["Signature1", protected, h'', payload] (RFC 9052 §4.4)
//
// The cnf key (RFC 8747 proof of possession) is the terminal's X25519 key: a service derives the
// session key from it and its own static key, so a ticket is worthless without the private half.
import type { KeyObject } from 'node:crypto';
import { ExpiringCache } from './expiring-cache.js';
import { encodeCbor } from './cbor.js';
import { DEFAULT_CLOCK_SKEW_S } from './constants.js';
import { ErrorCode } from './errors.js';
import { ed25519Sign, ed25519Verify } from './keys.js';
import type { TicketClaims, TicketIssueInput } from './ticket-parse.js';
import { encodeClaims, parseClaims, parseSign1, PROTECTED, sigStructure } from './ticket-parse.js';

export type { ParsedSign1, TicketClaims, TicketIssueInput } from './ticket-parse.js';
export { COSE_ALG_EDDSA, encodeClaims, peekTicket, TICKET_ISSUER } from './ticket-parse.js';

/** Issue a ticket signed with `key` under `kid` (the authd key ID, as bytes). */
export function issueTicket(input: TicketIssueInput, kid: Uint8Array, key: KeyObject): Buffer {
  const payload = encodeClaims(input);
  const signature = ed25519Sign(key, sigStructure(PROTECTED, payload));
  return encodeCbor([PROTECTED, new Map([[4, kid]]), payload, signature]);
}

export type TicketResult = { ok: true; claims: TicketClaims; kid: string } | { ok: false; code: ErrorCode; reason: string };

export interface VerifierOptions {
  /** Trusted authd signing keys by kid (hex). */
  keys: Map<string, KeyObject>;
  /** This service's ID: tickets for any other audience are refused. */
  audience: string;
  clockSkewS?: number;
  /** Seconds since the epoch; injected for tests. */
  now?: () => number;
  /** Most verified tickets remembered (each ~400 B). */
  cacheMax?: number;
}

/**
 * Verifies tickets against a set of trusted authd keys. Each distinct ticket's signature is
 * checked at most once per process: the verified result is cached until the ticket expires.
 */
export class TicketVerifier {
  keys: Map<string, KeyObject>;
  readonly audience: string;
  readonly clockSkewS: number;
  private readonly now: () => number;
  private readonly verified: ExpiringCache<string, { bytes: Buffer; claims: TicketClaims; kid: string }>;
  /** Signature verifications performed (a metric tests read). */
  signatureChecks = 0;

  constructor(opts: VerifierOptions) {
    this.keys = opts.keys;
    this.audience = opts.audience;
    this.clockSkewS = opts.clockSkewS ?? DEFAULT_CLOCK_SKEW_S;
    this.now = opts.now ?? (() => Math.floor(Date.now() / 1000));
    // Entries expire on the verifier's clock, the one verify() checks `exp` against.
    const now = this.now;
    this.verified = new ExpiringCache(opts.cacheMax ?? 100_000, () => now() * 1000);
  }

  /** Verified results held (expired ones included until the next purge). */
  get cachedTickets(): number {
    return this.verified.size;
  }

  /** Replace the trusted key set (SIGHUP); cached results from removed keys are dropped. */
  setKeys(keys: Map<string, KeyObject>): void {
    this.keys = keys;
    for (const [k, v] of this.verified.entries()) if (!keys.has(v.kid)) this.verified.delete(k);
  }

  verify(bytes: Uint8Array): TicketResult {
    const p = parseSign1(bytes);
    if (typeof p === 'string') return { ok: false, code: ErrorCode.BAD_TICKET, reason: p };
    const cacheKey = Buffer.from(p.signature).toString('base64');
    let hit = this.verified.get(cacheKey);
    if (hit && !hit.bytes.equals(bytes)) hit = undefined;
    let claims: TicketClaims;
    if (hit) {
      claims = hit.claims;
    } else {
      const key = this.keys.get(p.kid);
      if (!key) return { ok: false, code: ErrorCode.BAD_TICKET, reason: `unknown kid ${p.kid}` };
      this.signatureChecks++;
      if (!ed25519Verify(key, sigStructure(p.protectedBytes, p.payload), p.signature)) {
        return { ok: false, code: ErrorCode.BAD_TICKET, reason: 'signature does not verify' };
      }
      const c = parseClaims(p.payload);
      if (typeof c === 'string') return { ok: false, code: ErrorCode.BAD_TICKET, reason: c };
      claims = c;
    }
    const now = this.now();
    if (claims.aud !== this.audience) return { ok: false, code: ErrorCode.WRONG_AUDIENCE, reason: `ticket is for ${claims.aud}` };
    if (claims.exp + this.clockSkewS < now) return { ok: false, code: ErrorCode.TICKET_EXPIRED, reason: 'ticket expired' };
    if (claims.iat - this.clockSkewS > now) return { ok: false, code: ErrorCode.CLOCK_SKEW, reason: 'ticket issued in the future' };
    if (!hit) {
      // A ticket not presented again (every renewed one) stayed until 100k newer ones pushed it
      // out (seen growing the heap of the agent bench's virtual day): expired ones are dropped.
      this.verified.tidy();
      const ttl = Math.max(1, (claims.exp + this.clockSkewS - now) * 1000);
      this.verified.set(cacheKey, { bytes: Buffer.from(bytes), claims, kid: p.kid }, { ttl });
    }
    return { ok: true, claims, kid: p.kid };
  }
}
