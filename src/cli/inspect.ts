// The analysis behind `devloc decode`: one datagram in, one report out (the text and JSON
// printers in commands/decode.ts only format it). Never throws on input bytes.
//
// Besides decoding the envelope and body, an Inspector remembers what earlier datagrams of the
// same capture taught it: seal keys of an AUTH_REQUEST it could open (to open the answer with the
// same request ID), session keys derived from a ticket (to check later MACs of that session),
// requests by request ID (to say what a response answers) and exact bytes (retransmissions).
import type { KeyObject } from 'node:crypto';
import { createSecretKey } from 'node:crypto';
import type { Address } from '../wire/addr.js';
import { formatAddress } from '../wire/addr.js';
import { authGrantFields, authInnerFields, specOf } from '../wire/catalog.js';
import type { AuthGrant, MessageSpec } from '../wire/catalog.js';
import type { CborValue } from '../wire/cbor.js';
import { decodeStrict } from '../wire/cbor.js';
import { DEFAULT_CLOCK_SKEW_S, MAC_BYTES, MAX_DEPTH, MAX_ITEMS, PROTOCOL_VERSION } from '../wire/constants.js';
import { decodeDatagram } from '../wire/envelope.js';
import { errorName } from '../wire/errors.js';
import type { RawPair } from '../wire/keys.js';
import { ed25519Verify, privateKeyObject } from '../wire/keys.js';
import type { Field, FieldType } from '../wire/schema.js';
import { decodeFields } from '../wire/schema.js';
import type { SealKeys } from '../wire/seal.js';
import { deriveSealKeys, NONCE_BYTES, openBytes } from '../wire/seal.js';
import type { SessionKey, SessionKeys } from '../wire/session.js';
import { deriveSessionKeys, verifyDatagram } from '../wire/session.js';
import { parseClaims, parseSign1, sigStructure } from '../wire/ticket-parse.js';
import { envelopeDiag, fieldsDiag } from './diag.js';
import { hex } from './util.js';

export type Json = null | boolean | number | string | Json[] | { [k: string]: Json };

/** An authd key given with --authd-key: its public signing key, and its sealing pair if private. */
export interface AuthdKeyInput {
  kid: string;
  signPublic: KeyObject;
  seal?: RawPair;
  label: string;
}

export interface InspectKeys {
  authd: AuthdKeyInput[];
  /** Raw 32-byte session keys (either direction). */
  session: { key: KeyObject; label: string }[];
  /** Service static secrets, to derive session keys from tickets seen. */
  services: { service: string; secret: KeyObject; label: string }[];
  /** Raw 32-byte seal keys (request or response), or 64 bytes request || response. */
  seal: { key: Buffer; label: string }[];
}

export const noKeys = (): InspectKeys => ({ authd: [], session: [], services: [], seal: [] });

export type Check = 'ok' | 'bad' | 'not-checked';

export interface TicketReport {
  /** Where the ticket was found, e.g. "body.ticket" or "grant.tickets[0].ticket". */
  where: string;
  /** Whether the ticket parses (COSE_Sign1 with EdDSA and well-formed claims). */
  ok: boolean;
  error?: string;
  kid?: string;
  claims?: { iss: string; sub: string; aud: string; iat: number; exp: number; cti: string; cnf: string; addr?: string };
  signature: Check;
  /** Why not checked, or which key verified / what was tried. */
  signatureNote: string;
  /** Validity at the time of decoding (informational; captures are usually old). */
  validity?: string;
}

export interface SealedReport {
  /** What the ciphertext holds. */
  what: 'AuthInner' | 'AuthGrant';
  opened: boolean;
  note: string;
  value?: Json;
  diag?: string;
}

export interface Report {
  index: number;
  length: number;
  hex: string;
  /** message: a devloc datagram (valid or not); ticket: a bare COSE_Sign1 ticket. */
  kind: 'message' | 'ticket';
  /** A valid message (or a parseable ticket). */
  ok: boolean;
  error?: { code: number; name: string; reason: string };
  version?: number;
  type?: number;
  name?: string;
  direction?: string;
  service?: string;
  authentication?: string;
  rid?: string;
  auth?: { sid: string; seq: number; mac: string; check: Check; note: string };
  body?: Json;
  /** Annotated diagnostic notation: the body (valid message) or the whole datagram (invalid). */
  diag?: string;
  sealed?: SealedReport;
  tickets: TicketReport[];
  duplicateOf?: number;
  answers?: { index: number; name: string; afterMs?: number };
}

export interface InspectContext {
  index: number;
  /** Capture time in seconds (pcap), to report how long an answer took. */
  time?: number;
  /** Width for diagnostic notation. */
  width?: number;
}

/** A schema-decoded value as JSON: bytes as lowercase hex, addresses as "ip:port" / "[ip6]:port". */
export function toJson(type: FieldType, v: unknown): Json {
  switch (type.t) {
    case 'bstr':
      return hex(v as Uint8Array);
    case 'addr':
      return formatAddress(v as Address);
    case 'array':
      return (v as unknown[]).map((x) => toJson(type.of, x));
    case 'struct':
      return fieldsToJson(type.fields, v as Record<string, unknown>);
    default:
      return v as Json;
  }
}

export function fieldsToJson(fields: readonly Field[], obj: Record<string, unknown>): { [k: string]: Json } {
  const out: { [k: string]: Json } = {};
  for (const f of fields) if (obj[f.name] !== undefined) out[f.name] = toJson(f.type, obj[f.name]);
  return out;
}

const SKEW = DEFAULT_CLOCK_SKEW_S;

export class Inspector {
  /** Seal keys and request nonce of each AUTH_REQUEST opened, by request ID. */
  private readonly sealByRid = new Map<string, { keys: SealKeys; nonce?: string }>();
  /** Session keys by session ID: candidates until one verifies a MAC. */
  private readonly sessions = new Map<string, { keys: SessionKeys; label: string }[]>();
  private readonly seen = new Map<string, number>();
  private readonly requests = new Map<string, { index: number; name: string; time?: number }>();

  constructor(
    private readonly keys: InspectKeys,
    private readonly now: () => number = () => Math.floor(Date.now() / 1000),
  ) {}

  inspect(bytes: Buffer, ctx: InspectContext): Report {
    const h = bytes.toString('hex');
    const report: Report = { index: ctx.index, length: bytes.length, hex: h, kind: 'message', ok: false, tickets: [] };
    const dup = this.seen.get(h);
    if (dup !== undefined) report.duplicateOf = dup;
    else this.seen.set(h, ctx.index);
    const width = ctx.width ?? 100;

    const raw = decodeStrict(bytes, { maxDepth: MAX_DEPTH, maxItems: MAX_ITEMS });
    // A bare ticket (someone pasted the ticket field): an array whose first item is a bstr.
    if (raw.ok && Array.isArray(raw.value) && raw.value.length === 4 && raw.value[0] instanceof Uint8Array) {
      report.kind = 'ticket';
      const t = this.ticket(bytes, 'ticket');
      report.ok = t.ok;
      report.tickets.push(t);
      return report;
    }
    const dec = decodeDatagram(bytes);
    if (!dec.ok) {
      report.error = { code: dec.code, name: errorName(dec.code), reason: dec.reason };
      if (dec.rid) report.rid = hex(dec.rid);
      if (raw.ok && Array.isArray(raw.value)) {
        const [version, type] = raw.value;
        if (typeof version === 'number') report.version = version;
        if (typeof type === 'number') this.describeType(report, type);
        report.diag = envelopeDiag(raw.value, { width, indent: 2 });
      }
      return report;
    }
    const msg = dec.msg;
    const spec = specOf(msg.type)!;
    report.ok = true;
    report.version = PROTOCOL_VERSION;
    this.describeType(report, msg.type);
    report.rid = hex(msg.rid);
    report.body = fieldsToJson(spec.fields, msg.body as Record<string, unknown>);
    const rawBody = (raw as { ok: true; value: CborValue[] }).value[3]!;
    report.diag = fieldsDiag(spec.fields, rawBody, { width, indent: 2 });

    // Pair requests and answers by request ID (requests are even types, answers odd).
    if (msg.type % 2 === 0) {
      this.requests.set(report.rid, { index: ctx.index, name: msg.name, ...(ctx.time !== undefined ? { time: ctx.time } : {}) });
    } else {
      const req = this.requests.get(report.rid);
      if (req && req.index !== ctx.index) {
        report.answers = { index: req.index, name: req.name };
        if (req.time !== undefined && ctx.time !== undefined) report.answers.afterMs = Math.round((ctx.time - req.time) * 1e6) / 1e3;
      }
    }

    const body = msg.body as Record<string, unknown>;
    if (body['ticket'] instanceof Uint8Array) {
      const t = this.ticket(body['ticket'], 'body.ticket');
      report.tickets.push(t);
      if (msg.auth && t.claims) this.deriveSession(Buffer.from(msg.auth.sid), t);
    }
    if (msg.name === 'AUTH_REQUEST') report.sealed = this.openRequest(msg.rid, msg.body, width);
    if (msg.name === 'AUTH_RESPONSE') {
      const r = this.openResponse(msg.rid, msg.body.sealed, width);
      report.sealed = r.report;
      r.grant?.tickets.forEach((g, i) => report.tickets.push(this.ticket(g.ticket, `grant.tickets[${i}].ticket`)));
    }
    if (msg.auth) {
      report.auth = { sid: hex(msg.auth.sid), seq: msg.auth.seq, mac: hex(bytes.subarray(bytes.length - MAC_BYTES)), ...this.checkMac(bytes, msg.auth.sid, spec) };
    }
    return report;
  }

  private describeType(report: Report, type: number): void {
    report.type = type;
    const spec = specOf(type);
    if (!spec) return;
    report.name = spec.name;
    report.direction = spec.direction;
    report.service = spec.service;
    report.authentication = spec.auth;
  }

  /** Parse a ticket and check its signature against the authd keys given. */
  ticket(bytes: Uint8Array, where: string): TicketReport {
    const sign1 = parseSign1(bytes);
    const c = typeof sign1 === 'string' ? sign1 : parseClaims(sign1.payload);
    if (typeof sign1 === 'string' || typeof c === 'string') {
      return { where, ok: false, error: typeof sign1 === 'string' ? sign1 : (c as string), signature: 'not-checked', signatureNote: 'ticket does not parse' };
    }
    const r: TicketReport = {
      where, ok: true, kid: sign1.kid,
      claims: { iss: c.iss, sub: c.locatorId.toString('hex'), aud: c.aud, iat: c.iat, exp: c.exp, cti: c.cti.toString('hex'), cnf: c.cnf.toString('hex'), ...(c.addr ? { addr: formatAddress(c.addr) } : {}) },
      signature: 'not-checked', signatureNote: 'no --authd-key given',
    };
    const now = this.now();
    r.validity = c.exp + SKEW < now ? 'expired' : c.iat - SKEW > now ? 'not yet valid (issued in the future)' : 'valid now';
    if (this.keys.authd.length === 0) return r;
    const signed = sigStructure(sign1.protectedBytes, sign1.payload);
    for (const k of this.keys.authd) {
      if (ed25519Verify(k.signPublic, signed, sign1.signature)) {
        r.signature = 'ok';
        r.signatureNote = k.kid === sign1.kid ? `verified with authd key ${k.kid}` : `verified with authd key ${k.kid}, but the ticket names kid ${sign1.kid}`;
        return r;
      }
    }
    r.signature = 'bad';
    const kids = this.keys.authd.map((k) => k.kid).join(', ');
    r.signatureNote = this.keys.authd.some((k) => k.kid === sign1.kid)
      ? `does not verify with authd key ${sign1.kid}`
      : `kid ${sign1.kid} is none of the keys given (${kids}); does not verify with them`;
    return r;
  }

  private deriveSession(sid: Buffer, t: TicketReport): void {
    if (!t.claims || t.claims.cti !== sid.toString('hex') || this.keys.services.length === 0) return;
    const cands: { keys: SessionKeys; label: string }[] = [];
    for (const s of this.keys.services) {
      const keys = deriveSessionKeys(s.secret, Buffer.from(t.claims.cnf, 'hex'), sid, t.claims.aud);
      if (keys) cands.push({ keys, label: `session keys derived from ${s.label} and the ticket` });
    }
    if (cands.length) this.sessions.set(sid.toString('hex'), cands);
  }

  private checkMac(bytes: Buffer, sid: Uint8Array, spec: MessageSpec): { check: Check; note: string } {
    const sidHex = hex(sid);
    const toServer = spec.direction === 'terminal->server' || spec.direction === 'terminal->authd';
    const derived = this.sessions.get(sidHex) ?? [];
    const tried: { key: SessionKey; label: string; derived?: number }[] = [];
    derived.forEach((d, i) => tried.push({ key: toServer ? d.keys.terminalToServer : d.keys.serverToTerminal, label: `${d.label} (${toServer ? 'terminal-to-server' : 'server-to-terminal'})`, derived: i }));
    tried.push(...this.keys.session);
    if (tried.length === 0) return { check: 'not-checked', note: 'no key (give --session-key or --service-key)' };
    for (const k of tried) {
      if (verifyDatagram(k.key, bytes)) {
        if (k.derived !== undefined) this.sessions.set(sidHex, [derived[k.derived]!]);
        return { check: 'ok', note: `verified with ${k.label}` };
      }
    }
    return { check: 'bad', note: `does not verify with ${tried.length === 1 ? tried[0]!.label : `any of ${tried.length} keys`}` };
  }

  private sealCandidates(which: 'request' | 'response'): { key: Buffer; label: string }[] {
    const out: { key: Buffer; label: string }[] = [];
    for (const s of this.keys.seal) {
      if (s.key.length === 64) out.push({ key: which === 'request' ? s.key.subarray(0, 32) : s.key.subarray(32), label: `${s.label} (${which} half)` });
      else out.push(s);
    }
    return out;
  }

  private openRequest(rid: Uint8Array, body: { authdKey: Uint8Array; ephemeral: Uint8Array; sealed: Uint8Array }, width: number): SealedReport {
    const aad = Buffer.concat([rid, body.authdKey, body.ephemeral]);
    const attempts: { key: Buffer; label: string; keys?: SealKeys }[] = [];
    for (const a of this.keys.authd) {
      if (!a.seal) continue;
      const keys = deriveSealKeys(privateKeyObject('X25519', a.seal), body.ephemeral, body.ephemeral, a.seal.public);
      if (keys) attempts.push({ key: keys.request, label: `authd key ${a.kid}`, keys });
    }
    attempts.push(...this.sealCandidates('request'));
    if (attempts.length === 0) return { what: 'AuthInner', opened: false, note: 'sealed: give the private authd key (--authd-key) or --seal-key to open it' };
    for (const a of attempts) {
      const plain = openBytes(a.key, body.sealed, aad);
      if (!plain) continue;
      const report = this.innerReport('AuthInner', authInnerFields, plain, `opened with ${a.label}; the device signature is checked by authd against the enrolled device key`, width);
      if (a.keys) {
        const nonce = (report.value as { nonce?: string } | undefined)?.nonce;
        this.sealByRid.set(hex(rid), nonce === undefined ? { keys: a.keys } : { keys: a.keys, nonce });
      }
      return report;
    }
    return { what: 'AuthInner', opened: false, note: `does not open with ${attempts.map((a) => a.label).join(', ')}` };
  }

  private openResponse(rid: Uint8Array, sealed: Uint8Array, width: number): { report: SealedReport; grant?: AuthGrant } {
    const attempts: { key: Buffer; label: string }[] = [];
    const known = this.sealByRid.get(hex(rid));
    if (known) attempts.push({ key: known.keys.response, label: 'the keys of the AUTH_REQUEST with this request ID' });
    attempts.push(...this.sealCandidates('response'));
    if (attempts.length === 0) {
      return { report: { what: 'AuthGrant', opened: false, note: 'sealed to the terminal: give --seal-key, or the private authd key with the matching AUTH_REQUEST in the same input' } };
    }
    // sealed = nonce (12 random bytes) || ciphertext and tag.
    const nonce = sealed.subarray(0, NONCE_BYTES);
    const ciphertext = sealed.subarray(NONCE_BYTES);
    for (const a of attempts) {
      const plain = openBytes(a.key, ciphertext, rid, nonce);
      if (!plain) continue;
      const report = this.innerReport('AuthGrant', authGrantFields, plain, `opened with ${a.label}`, width);
      const d = decodeStrict(plain);
      const f = d.ok && d.value instanceof Map ? decodeFields(authGrantFields, d.value, 'grant') : null;
      if (!f?.ok) return { report };
      const grant = f.value as unknown as AuthGrant;
      // The terminal checks that the grant echoes its request's nonce; so does this.
      if (known?.nonce !== undefined && hex(grant.nonce) !== known.nonce) report.note += `; the grant's nonce is not the request's (${known.nonce})`;
      return { report, grant };
    }
    return { report: { what: 'AuthGrant', opened: false, note: `does not open with ${attempts.map((a) => a.label).join(', ')}` } };
  }

  private innerReport(what: 'AuthInner' | 'AuthGrant', fields: readonly Field[], plain: Buffer, note: string, width: number): SealedReport {
    const d = decodeStrict(plain);
    if (!d.ok) return { what, opened: true, note: `${note}; plaintext is not valid CBOR: ${d.reason}` };
    const diag = fieldsDiag(fields, d.value, { width, indent: 4 });
    if (!(d.value instanceof Map)) return { what, opened: true, note: `${note}; plaintext is not a map`, diag };
    const f = decodeFields(fields, d.value, what === 'AuthInner' ? 'inner' : 'grant');
    if (!f.ok) return { what, opened: true, note: `${note}; invalid: ${f.reason}`, diag };
    return { what, opened: true, note, value: fieldsToJson(fields, f.value), diag };
  }
}

/** A raw 32-byte key as a KeyObject for HMAC. */
export const secretKey = (raw: Buffer): KeyObject => createSecretKey(raw);
