// Ticket parsing without verification: the COSE_Sign1 / CWT layout of ticket.ts, split out so
// that a terminal (the agent, ClientSession) can read its own ticket's claims without pulling
// in the verifier and its cache (lru-cache). ticket.ts re-exports everything here.
import type { CborMap, CborValue } from './cbor.js';
import { decodeStrict, encodeCbor } from './cbor.js';
import { LOCATOR_ID_BYTES, SESSION_ID_BYTES } from './constants.js';
import type { Address } from './addr.js';
import { bytesToIp, ipToBytes } from './addr.js';

export const COSE_ALG_EDDSA = -8;
export const PROTECTED = encodeCbor(new Map([[1, COSE_ALG_EDDSA]]));
export const TICKET_ISSUER = 'devloc-authd';
/**
 * Private-use claim (RFC 8392: below -65536): the address authd sent the sealed grant to, as
 * [ip bstr(4 or 16), port]. A session opened from it needs no address validation
 * (devloc-protocol(7), ADDRESS VALIDATION): only that address could read the ticket.
 */
export const CLAIM_ADDR = -65537;

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
  /** Where authd sent the grant (CLAIM_ADDR), when it said. */
  addr?: Address;
}

export interface TicketIssueInput {
  locatorId: Uint8Array;
  aud: string;
  iat: number;
  exp: number;
  cti: Uint8Array;
  cnf: Uint8Array;
  addr?: Address;
}

export function sigStructure(protectedBytes: Uint8Array, payload: Uint8Array): Buffer {
  return encodeCbor(['Signature1', protectedBytes, new Uint8Array(0), payload]);
}

export function encodeClaims(c: TicketIssueInput, iss = TICKET_ISSUER): Buffer {
  const coseKey: CborMap = new Map<number, number | Uint8Array>([[1, 1], [-1, 4], [-2, c.cnf]]);
  const claims: CborMap = new Map<number, CborValue>([
    [1, iss],
    [2, Buffer.from(c.locatorId).toString('hex')],
    [3, c.aud],
    [4, c.exp],
    [6, c.iat],
    [7, c.cti],
    [8, new Map([[1, coseKey]])],
  ]);
  const ip = c.addr ? ipToBytes(c.addr.ip) : null;
  if (c.addr && ip) claims.set(CLAIM_ADDR, [ip, c.addr.port]);
  return encodeCbor(claims);
}


export interface ParsedSign1 {
  protectedBytes: Uint8Array;
  kid: string;
  payload: Uint8Array;
  signature: Uint8Array;
}

export function parseSign1(bytes: Uint8Array): ParsedSign1 | string {
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

export function parseClaims(payload: Uint8Array): TicketClaims | string {
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
  const claims: TicketClaims = { iss, locatorId: Buffer.from(sub, 'hex'), aud, exp, iat, cti: Buffer.from(cti), cnf: Buffer.from(x) };
  const a = m.get(CLAIM_ADDR);
  if (a !== undefined) {
    const ip = Array.isArray(a) && a.length === 2 && a[0] instanceof Uint8Array ? bytesToIp(a[0]) : null;
    const port = Array.isArray(a) ? a[1] : undefined;
    if (ip === null || typeof port !== 'number' || !Number.isInteger(port) || port < 0 || port > 65535) return 'addr must be [ip, port]';
    claims.addr = { ip, port };
  }
  return claims;
}

/** Read a ticket's claims without checking the signature (for `devloc decode`). */
export function peekTicket(bytes: Uint8Array): { kid: string; claims: TicketClaims } | string {
  const p = parseSign1(bytes);
  if (typeof p === 'string') return p;
  const c = parseClaims(p.payload);
  return typeof c === 'string' ? c : { kid: p.kid, claims: c };
}
