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
import { LRUCache } from 'lru-cache';
import type { CborMap } from './cbor.js';
import { decodeStrict, encodeCbor } from './cbor.js';
import { DEFAULT_CLOCK_SKEW_S, LOCATOR_ID_BYTES, SESSION_ID_BYTES } from './constants.js';
import { ErrorCode } from './errors.js';
import { ed25519Sign, ed25519Verify } from './keys.js';

export const COSE_ALG_EDDSA = -8;
const PROTECTED = encodeCbor(new Map([[1, COSE_ALG_EDDSA]]));
export const TICKET_ISSUER = 'devloc-authd';

export interface TicketClaims {
  iss: string;
  /** Locator ID (16 bytes); `sub` on the wire as 32 lowercase hex digits. */
  locatorId: Buffer;
  aud: string;
  exp: number;
  iat: number;
  cti: Buffer;
  /** Terminal's X25519 public key (cnf). */
  cnf: Buffer;
}

export interface TicketIssueInput {
  locatorId: Uint8Array;
  aud: string;
  iat: number;
  exp: number;
  cti: Uint8Array;
  cnf: Uint8Array;
}

function sigStructure(protectedBytes: Uint8Array, payload: Uint8Array): Buffer {
  return encodeCbor(['Signature1', protectedBytes, new Uint8Array(0), payload]);
}

export function encodeClaims(c: TicketIssueInput, iss = TICKET_ISSUER): Buffer {
  const coseKey: CborMap = new Map<number, number | Uint8Array>([[1, 1], [-1, 4], [-2, c.cnf]]);
  const claims: CborMap = new Map<number, string | number | Uint8Array | CborMap>([
    [1, iss],
    [2, Buffer.from(c.locatorId).toString('hex')],
    [3, c.aud],
    [4, c.exp],
    [6, c.iat],
    [7, c.cti],
    [8, new Map([[1, coseKey]])],
  ]);
  return encodeCbor(claims);
}

/** Issue a ticket signed with `key` under `kid` (the authd key ID, as bytes). */
export function issueTicket(input: TicketIssueInput, kid: Uint8Array, key: KeyObject): Buffer {
  const payload = encodeClaims(input);
  const signature = ed25519Sign(key, sigStructure(PROTECTED, payload));
  return encodeCbor([PROTECTED, new Map([[4, kid]]), payload, signature]);
}

export type TicketResult = { ok: true; claims: TicketClaims; kid: string } | { ok: false; code: ErrorCode; reason: string };

interface Parsed {
  protectedBytes: Uint8Array;
  kid: string;
  payload: Uint8Array;
  signature: Uint8Array;
}

function parseSign1(bytes: Uint8Array): Parsed | string {
  const d = decodeStrict(bytes);
  if (!d.ok) return `not CBOR: ${d.reason}`;
  const v = d.value;
  if (!Array.isArray(v) || v.length !== 4) return 'not a COSE_Sign1 array';
  const [prot, unprot, payload, signature] = v;
  if (!(prot instanceof Uint8Array) || !(unprot instanceof Map) || !(payload instanceof Uint8Array) || !(signature instanceof Uint8Array)) {
    return 'COSE_Sign1 item types wrong';
  }
  // Only one protected header is acceptable: alg EdDSA. Anything else is refused, not ignored.
  if (!Buffer.from(prot).equals(PROTECTED)) return 'protected header must be exactly {1: -8} (EdDSA)';
  const kid = unprot.get(4);
  if (!(kid instanceof Uint8Array) || kid.length === 0 || kid.length > 16) return 'kid missing';
  return { protectedBytes: prot, kid: Buffer.from(kid).toString('hex'), payload, signature };
}

function parseClaims(payload: Uint8Array): TicketClaims | string {
  const d = decodeStrict(payload);
  if (!d.ok || !(d.value instanceof Map)) return 'claims are not a CBOR map';
  const m = d.value;
  const iss = m.get(1), sub = m.get(2), aud = m.get(3), exp = m.get(4), iat = m.get(6), cti = m.get(7), cnf = m.get(8);
  if (typeof iss !== 'string' || typeof sub !== 'string' || typeof aud !== 'string') return 'iss/sub/aud must be text';
  if (typeof exp !== 'number' || typeof iat !== 'number' || exp < 0 || iat < 0) return 'exp/iat must be numeric dates';
  if (!(cti instanceof Uint8Array) || cti.length !== SESSION_ID_BYTES) return `cti must be ${SESSION_ID_BYTES} bytes`;
  if (!new RegExp(`^[0-9a-f]{${LOCATOR_ID_BYTES * 2}}$`).test(sub)) return 'sub must be a hex locator ID';
  const coseKey = cnf instanceof Map ? cnf.get(1) : undefined;
  if (!(coseKey instanceof Map) || coseKey.get(1) !== 1 || coseKey.get(-1) !== 4) return 'cnf must hold an OKP X25519 COSE_Key';
  const x = coseKey.get(-2);
  if (!(x instanceof Uint8Array) || x.length !== 32) return 'cnf key must be 32 bytes';
  return { iss, locatorId: Buffer.from(sub, 'hex'), aud, exp, iat, cti: Buffer.from(cti), cnf: Buffer.from(x) };
}

/** Read a ticket's claims without checking the signature (for `devloc decode`). */
export function peekTicket(bytes: Uint8Array): { kid: string; claims: TicketClaims } | string {
  const p = parseSign1(bytes);
  if (typeof p === 'string') return p;
  const c = parseClaims(p.payload);
  return typeof c === 'string' ? c : { kid: p.kid, claims: c };
}

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
  private readonly verified: LRUCache<string, { bytes: Buffer; claims: TicketClaims; kid: string }>;
  /** Signature verifications performed (a metric tests read). */
  signatureChecks = 0;

  constructor(opts: VerifierOptions) {
    this.keys = opts.keys;
    this.audience = opts.audience;
    this.clockSkewS = opts.clockSkewS ?? DEFAULT_CLOCK_SKEW_S;
    this.now = opts.now ?? (() => Math.floor(Date.now() / 1000));
    this.verified = new LRUCache({ max: opts.cacheMax ?? 100_000 });
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
      const ttl = Math.max(1, (claims.exp + this.clockSkewS - now) * 1000);
      this.verified.set(cacheKey, { bytes: Buffer.from(bytes), claims, kid: p.kid }, { ttl });
    }
    return { ok: true, claims, kid: p.kid };
  }
}
