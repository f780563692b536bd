// Fuzz targets: each runs one input through a decoder of untrusted bytes and checks the
// properties the code promises (HACKING.md: "decoders of untrusted input return { ok: false,
// code, reason }, never throw"; the server never sends an unauthenticated source more bytes
// than it received). A target returns a short signature of the outcome, which the loop uses to
// keep inputs that reached somewhere new, and throws PropertyViolation when a promise breaks.
import { EventEmitter } from 'node:events';
import type dgram from 'node:dgram';
import { Logger } from '../src/common/log.js';
import { Metrics } from '../src/common/metrics.js';
import { UdpClient } from '../src/net/client.js';
import { ClientSession } from '../src/net/clientsession.js';
import { RateLimiter } from '../src/net/ratelimit.js';
import type { Handler, Handlers } from '../src/net/server.js';
import { DatagramServer } from '../src/net/server.js';
import type { ServerSession } from '../src/net/sessions.js';
import { ServerSessions } from '../src/net/sessions.js';
import type { Address } from '../src/wire/addr.js';
import { openAuthGrant, openAuthRequest } from '../src/wire/auth.js';
import type { MessageName } from '../src/wire/catalog.js';
import { catalog, MessageType, responseTypeOf, specOf } from '../src/wire/catalog.js';
import type { CborValue } from '../src/wire/cbor.js';
import { decodeStrict, encodeCbor } from '../src/wire/cbor.js';
import { MAC_BYTES, MAX_DATAGRAM, REQUEST_ID_BYTES, SESSION_ID_BYTES } from '../src/wire/constants.js';
import { decodeDatagram, encodeDatagram } from '../src/wire/envelope.js';
import { DevlocError, ErrorCode } from '../src/wire/errors.js';
import { ed25519Sign, ed25519Verify, isDeviceId, isServiceId, parseKeyFile, parsePublicKeyFile } from '../src/wire/keys.js';
import { sealBytes } from '../src/wire/seal.js';
import { ReplayWindow, verifyDatagram } from '../src/wire/session.js';
import { TicketVerifier } from '../src/wire/ticket.js';
import type { Rng } from './rng.js';
import { encodeHead, scanItems } from './cborscan.js';
import { sampleBody } from './samples.js';
import type { World } from './world.js';
import { macWithRaw } from './world.js';
import { stunTargets } from './stun-targets.js';

export class PropertyViolation extends Error {
  override readonly name = 'PropertyViolation';
}

function must(cond: unknown, what: string): asserts cond {
  if (!cond) throw new PropertyViolation(what);
}

export interface Target {
  name: string;
  /** What the target exercises, for the report. */
  doc: string;
  seeds: Buffer[];
  /** Optional structure-aware step after mutation (e.g. reseal a MAC so the input gets deeper). */
  prepare?(input: Buffer, rng: Rng): Buffer;
  run(input: Buffer, rng: Rng): string | Promise<string>;
}

const knownCodes = new Set<number>(Object.values(ErrorCode));
/** An outcome's reason without its variable parts (numbers, quoted values, JSON positions). */
const norm = (reason: string): string =>
  reason.replace(/^Unexpected token[\s\S]*/, 'Unexpected token').replace(/"[^"]*"|'[^']*'/g, 'Q').replace(/\b[0-9a-f]{4,}\b/gi, 'H').replace(/\d+/g, '#').replace(/\s+in JSON.*$/, '').slice(0, 48);

function checkRefusal(r: { code: unknown; reason: unknown }, allowed?: readonly number[]): void {
  must(typeof r.code === 'number' && knownCodes.has(r.code), `refusal code ${String(r.code)} is not an ErrorCode`);
  if (allowed) must(allowed.includes(r.code), `refusal code ${String(r.code)} not among ${allowed.join(',')}`);
  must(typeof r.reason === 'string' && r.reason.length > 0, 'refusal without a reason');
}

/** A decoded value must be exactly the CBOR subset the codec promises. */
function checkCborValue(v: unknown, depth: number): string {
  must(depth < 100, 'decoded value nested beyond any limit');
  if (typeof v === 'number') {
    must(Number.isSafeInteger(v), `decoded number ${v} is not a safe integer`);
    return 'int';
  }
  if (typeof v === 'string') return 'text';
  if (typeof v === 'boolean' || v === null) return 'simple';
  if (v instanceof Uint8Array) return 'bytes';
  if (Array.isArray(v)) {
    for (const x of v) checkCborValue(x, depth + 1);
    return 'array';
  }
  if (v instanceof Map) {
    for (const [k, x] of v) {
      must(typeof k === 'string' || (typeof k === 'number' && Number.isSafeInteger(k)), 'map key neither int nor text');
      checkCborValue(x, depth + 1);
    }
    return 'map';
  }
  throw new PropertyViolation(`decoded value of unexpected kind ${typeof v}`);
}

export function cborEqual(a: CborValue, b: CborValue): boolean {
  if (a instanceof Uint8Array) return b instanceof Uint8Array && Buffer.from(a).equals(Buffer.from(b));
  if (Array.isArray(a)) return Array.isArray(b) && a.length === b.length && a.every((x, i) => cborEqual(x, b[i]!));
  if (a instanceof Map) {
    if (!(b instanceof Map) || a.size !== b.size) return false;
    for (const [k, v] of a) if (!b.has(k) || !cborEqual(v, b.get(k)!)) return false;
    return true;
  }
  return a === b;
}

/** True when every head in `bytes` is in its shortest form (so re-encoding must reproduce it). */
function headsShortest(bytes: Buffer): boolean {
  for (const it of scanItems(bytes, 5000)) {
    if (it.argument < 0) return false;
    if (it.major === 7) continue;
    if (encodeHead(it.major, it.argument).length !== it.headLength) return false;
  }
  return true;
}

// --- decodeStrict -----------------------------------------------------------------------

function cborTarget(seeds: Buffer[]): Target {
  return {
    name: 'cbor',
    doc: 'decodeStrict: typed result, decode(encode(v)) = v, canonical input re-encodes byte for byte',
    seeds,
    run(input, rng) {
      const limits = rng.chance(0.2) ? { maxDepth: 1 + rng.int(4), maxItems: 1 + rng.int(20) } : undefined;
      const r = decodeStrict(input, limits);
      if (!r.ok) {
        checkRefusal(r, [ErrorCode.MALFORMED, ErrorCode.TOO_LARGE]);
        return `err:${r.code}:${norm(r.reason)}`;
      }
      const kind = checkCborValue(r.value, 0);
      const enc = encodeCbor(r.value);
      const again = decodeStrict(enc, { maxDepth: 1000, maxItems: 1_000_000 });
      must(again.ok && cborEqual(again.value, r.value), 'decode(encode(v)) differs from v');
      must(enc.length <= input.length, 're-encoding is longer than the input');
      if (headsShortest(input)) must(enc.equals(input), 'input with shortest heads does not re-encode to itself (decoding lost information)');
      return `ok:${kind}`;
    },
  };
}

// --- decodeDatagram ---------------------------------------------------------------------

function datagramTarget(seeds: Buffer[]): Target {
  return {
    name: 'datagram',
    doc: 'decodeDatagram: typed message or a refusal code; decoded messages re-encode (idempotently)',
    seeds,
    run(input) {
      const r = decodeDatagram(input);
      if (!r.ok) {
        checkRefusal(r);
        if (r.rid !== undefined) must(r.rid.length === REQUEST_ID_BYTES, 'refusal names a request ID of the wrong size');
        return `err:${r.code}:${r.type ?? '-'}:${norm(r.reason)}`;
      }
      const m = r.msg;
      must(MessageType[m.name] === m.type && specOf(m.type)?.name === m.name, 'name and type disagree');
      must(m.rid.length === REQUEST_ID_BYTES, 'request ID size');
      const spec = catalog[m.type];
      if (spec.auth === 'session') must(m.auth, 'session message without auth');
      if (m.auth) {
        must(m.auth.sid.length === SESSION_ID_BYTES, 'session ID size');
        must(Number.isSafeInteger(m.auth.seq) && m.auth.seq >= 0, 'sequence number');
      }
      must(m.body && typeof m.body === 'object', 'body is not an object');
      const enc = encodeDatagram(m.name, m.rid, m.body as never, m.auth);
      must(enc.length <= MAX_DATAGRAM + 200, 're-encoding grew unreasonably');
      const again = decodeDatagram(enc);
      must(again.ok && again.msg.name === m.name, `re-encoded ${m.name} does not decode: ${again.ok ? '' : again.reason}`);
      const enc2 = encodeDatagram(again.msg.name, again.msg.rid, again.msg.body as never, again.msg.auth);
      must(enc2.equals(enc), 'encode(decode(encode(m))) differs from encode(m)');
      return `ok:${m.name}:${Object.keys(m.body).sort().join(',')}`;
    },
  };
}

// --- tickets ----------------------------------------------------------------------------

const TICKET_CODES = [ErrorCode.BAD_TICKET, ErrorCode.TICKET_EXPIRED, ErrorCode.WRONG_AUDIENCE, ErrorCode.CLOCK_SKEW];
const PROTECTED = encodeCbor(new Map([[1, -8]]));

function checkClaims(v: ReturnType<TicketVerifier['verify']>, audience: string): string {
  if (!v.ok) {
    checkRefusal(v, TICKET_CODES);
    return `err:${v.code}:${norm(v.reason)}`;
  }
  const c = v.claims;
  must(c.aud === audience, 'accepted a ticket for another audience');
  must(c.locatorId.length === 16 && c.cti.length === 16 && c.cnf.length === 32, 'claim sizes');
  must(Number.isSafeInteger(c.exp) && Number.isSafeInteger(c.iat), 'claim dates');
  must(typeof c.iss === 'string', 'issuer');
  return 'ok';
}

function ticketTarget(w: World): Target {
  let verifier = newVerifier(w);
  let n = 0;
  return {
    name: 'ticket',
    doc: 'TicketVerifier.verify on mutated tickets (cached and fresh verifiers); accepted ones carry a real signature',
    seeds: w.ticket.seeds,
    run(input) {
      // A fresh verifier now and then, so both the cache and the uncached path are exercised.
      if (++n % 64 === 0) verifier = newVerifier(w);
      const v = verifier.verify(input);
      const sig = checkClaims(v, w.ticket.audience);
      if (v.ok) {
        // Independent check: the COSE_Sign1 really is signed by a trusted key.
        const d = decodeStrict(input);
        must(d.ok && Array.isArray(d.value), 'accepted ticket is not a COSE array');
        const [prot, , payload, signature] = d.value as [Uint8Array, CborValue, Uint8Array, Uint8Array];
        const key = w.ticket.verifyKeys.get(v.kid);
        must(key, 'accepted under an unknown kid');
        must(ed25519Verify(key, encodeCbor(['Signature1', prot, new Uint8Array(0), payload]), signature), 'accepted a ticket whose signature does not verify');
      }
      return sig;
    },
  };
}

function newVerifier(w: World): TicketVerifier {
  return new TicketVerifier({ keys: w.ticket.verifyKeys, audience: w.ticket.audience, now: () => w.ticket.verifyAt, cacheMax: 256 });
}

function claimsTarget(w: World): Target {
  const verifier = newVerifier(w);
  const unprotected = new Map([[4, w.ticket.kid]]);
  return {
    name: 'ticket-claims',
    doc: 'mutated CWT claims, signed with the authd key, through TicketVerifier.verify (parseClaims after a valid signature)',
    seeds: w.ticket.claims,
    run(payload) {
      const signature = ed25519Sign(w.ticket.signKey, encodeCbor(['Signature1', PROTECTED, new Uint8Array(0), payload]));
      const ticket = encodeCbor([PROTECTED, unprotected, payload, signature]);
      return checkClaims(verifier.verify(ticket), w.ticket.audience);
    },
  };
}

// --- the sealed auth exchange -----------------------------------------------------------

const AUTH_CODES = [ErrorCode.BAD_PROOF, ErrorCode.MALFORMED, ErrorCode.BAD_MESSAGE, ErrorCode.UNKNOWN_DEVICE];

function deviceLookup(w: World) {
  return (id: string) => (id === w.auth.deviceId ? { ok: true as const, key: w.auth.deviceKey } : { ok: false as const, code: ErrorCode.UNKNOWN_DEVICE, reason: 'unknown device' });
}

function checkOpened(r: ReturnType<typeof openAuthRequest>): string {
  if (!r.ok) {
    checkRefusal(r, AUTH_CODES);
    return `err:${r.code}:${norm(r.reason)}`;
  }
  const i = r.inner;
  must(typeof i.deviceId === 'string' && Number.isSafeInteger(i.timeMs), 'inner types');
  must(i.nonce.length === 16 && i.cnf.length === 32 && i.signature.length === 64, 'inner sizes');
  must(Array.isArray(i.audiences) && i.audiences.every((a) => typeof a === 'string'), 'audiences');
  return 'ok';
}

function authRequestTarget(w: World): Target {
  const lookup = deviceLookup(w);
  return {
    name: 'auth-request',
    doc: 'AUTH_REQUEST datagrams: decodeDatagram then openAuthRequest (bad ephemeral keys, bad seals)',
    seeds: w.auth.requests,
    run(input) {
      const d = decodeDatagram(input);
      if (!d.ok || d.msg.name !== 'AUTH_REQUEST') return d.ok ? `other:${d.msg.name}` : `err:${d.code}`;
      return checkOpened(openAuthRequest(d.msg.rid, d.msg.body, w.auth.sealSecret, lookup));
    },
  };
}

function authInnerTarget(w: World): Target {
  const lookup = deviceLookup(w);
  const aad = Buffer.concat([w.auth.rid, w.auth.kid, w.auth.ephemeralPublic]);
  return {
    name: 'auth-inner',
    doc: 'mutated AuthInner plaintexts, sealed with the exchange key, through openAuthRequest',
    seeds: w.auth.inners.length ? w.auth.inners : [encodeCbor(new Map<number, CborValue>([[1, w.auth.deviceId]]))],
    run(inner) {
      const sealed = sealBytes(w.auth.sealKeys.request, inner, aad);
      return checkOpened(openAuthRequest(w.auth.rid, { authdKey: w.auth.kid, ephemeral: w.auth.ephemeralPublic, sealed }, w.auth.sealSecret, lookup));
    },
  };
}

function authGrantTarget(w: World): Target {
  return {
    name: 'auth-grant',
    doc: 'mutated AuthGrant plaintexts, sealed with the response key, through openAuthGrant',
    seeds: w.auth.grants.length ? w.auth.grants : [encodeCbor(new Map<number, CborValue>([[3, w.auth.nonce]]))],
    run(grant, rng) {
      // Now and then the sealed bytes themselves are garbage (a forged response). Otherwise
      // as authd seals: nonce(12) || ChaCha20-Poly1305(response key, nonce, grant, AAD = rid).
      const nonce = rng.bytes(12);
      const sealed = rng.chance(0.1) ? grant : Buffer.concat([nonce, sealBytes(w.auth.sealKeys.response, grant, w.auth.rid, nonce)]);
      const r = openAuthGrant(w.auth.sealKeys, w.auth.rid, sealed, w.auth.nonce);
      if (!r.ok) {
        must(typeof r.reason === 'string', 'refusal without a reason');
        return `err:${norm(r.reason)}`;
      }
      const g = r.grant;
      must(g.locatorId.length === 16 && Buffer.from(g.nonce).equals(w.auth.nonce), 'grant ids');
      for (const t of g.tickets) must(typeof t.aud === 'string' && t.ticket instanceof Uint8Array && t.serviceKey.length === 32 && Number.isSafeInteger(t.exp), 'ticket grant types');
      return `ok:${g.tickets.length}`;
    },
  };
}

// --- key files --------------------------------------------------------------------------

function keyFileTarget(w: World): Target {
  return {
    name: 'keyfile',
    doc: 'parseKeyFile / parsePublicKeyFile on mutated JSON key files',
    seeds: w.keyFiles.map((t) => Buffer.from(t)),
    run(input) {
      const text = input.toString('utf8');
      const k = parseKeyFile(text);
      const p = parsePublicKeyFile(text);
      let sig = '';
      if (k.ok) {
        must(['authd', 'service', 'device'].includes(k.value.kind), 'key file kind');
        for (const pair of ['sign', 'seal'] as const) {
          const v = (k.value as unknown as Record<string, { public: Buffer; secret: Buffer } | undefined>)[pair];
          if (v) must(v.public.length === 32 && v.secret.length === 32, 'key sizes');
        }
        sig += `k:${k.value.kind}`;
      } else {
        must(typeof k.error === 'string', 'error text');
        sig += `k!${norm(k.error)}`;
      }
      if (p.ok) {
        must(['authd-public', 'service-public', 'device-public'].includes(p.value.kind), 'public key file kind');
        // The same identifiers a private key file must have (a kid that is not hex can never
        // match a ticket's kid; a bad service ID never matches an audience).
        const v = p.value;
        if (v.kind === 'authd-public') must(/^[0-9a-f]{2,32}$/.test(v.kid), `public key file accepted kid ${JSON.stringify(v.kid)}`);
        if (v.kind === 'service-public') must(isServiceId(v.service), `public key file accepted service ${JSON.stringify(v.service)}`);
        if (v.kind === 'device-public') must(isDeviceId(v.deviceId), `public key file accepted deviceId ${JSON.stringify(v.deviceId)}`);
        for (const f of ['sign', 'seal'] as const) {
          const v = (p.value as unknown as Record<string, Buffer | undefined>)[f];
          if (v !== undefined) must(v.length === 32, 'public key size');
        }
        sig += `/p:${p.value.kind}`;
      } else {
        must(typeof p.error === 'string', 'error text');
        sig += `/p!${norm(p.error)}`;
      }
      return sig;
    },
  };
}

// --- the datagram server ----------------------------------------------------------------

/** A socket stand-in that records what the server sends. */
export class RecordingSocket extends EventEmitter {
  sent: { bytes: Buffer; port: number; ip: string }[] = [];
  send(bytes: Uint8Array, port: number, ip: string, cb?: (err: Error | null) => void): void {
    this.sent.push({ bytes: Buffer.from(bytes), port, ip });
    cb?.(null);
  }
  close(cb?: () => void): void {
    cb?.();
  }
  address(): { address: string; family: string; port: number } {
    return { address: '127.0.0.1', family: 'IPv4', port: 4701 };
  }
  asSocket(): dgram.Socket {
    return this as unknown as dgram.Socket;
  }
}

const SOURCES: Address[] = [
  { ip: '198.51.100.7', port: 4800 }, { ip: '198.51.100.7', port: 4801 }, { ip: '203.0.113.9', port: 5000 },
  { ip: '2001:db8::7', port: 4800 }, { ip: '127.0.0.1', port: 40000 }, { ip: '192.0.2.1', port: 1 },
];

const THROWN_CODES = [ErrorCode.NOT_FOUND, ErrorCode.FORBIDDEN, ErrorCode.TRY_LATER, ErrorCode.FULL, ErrorCode.CONFLICT, ErrorCode.BAD_MESSAGE];

/** Handlers for every request type whose behaviour depends on the request's bytes. */
function fuzzHandlers(): Handlers {
  const handlers: Record<string, Handler> = {};
  const respond: Handler = (ctx) => {
    const h = ctx.raw.reduce((a, b) => (a * 31 + b) >>> 0, 7) % 11;
    const resp = responseTypeOf(ctx.msg.type as never);
    const respName = resp !== undefined ? specOf(resp)?.name : undefined;
    switch (h) {
      case 5:
        throw new DevlocError(THROWN_CODES[ctx.raw.length % THROWN_CODES.length]!, `refused: ${'é€'.repeat(ctx.raw.length % 90)}`, ctx.raw.length % 3 === 0 ? 250 : undefined);
      case 6:
        throw new Error('fuzz handler failure');
      case 7:
        return null;
      case 8:
        return Promise.resolve().then(() => (respName ? ctx.reply(respName, sampleBody(respName, true)) : null));
      case 9:
        return { error: ErrorCode.TRY_LATER, retryAfterMs: 100, message: 'busy' };
      case 10:
        // Oversized handler output: the server must not send it.
        return Buffer.alloc(MAX_DATAGRAM + 1 + (ctx.raw.length % 50));
      default:
        return respName ? ctx.reply(respName, sampleBody(respName, h % 2 === 0)) : null;
    }
  };
  for (const name of Object.keys(MessageType) as MessageName[]) {
    const t = MessageType[name];
    // Requests, plus the acknowledgements terminals send to servers (odd, but served).
    if (t % 2 === 0 || name === 'PROBE_ACK' || name === 'MATCH_RESULT_ACK') handlers[name] = respond;
  }
  return handlers as Handlers;
}

interface FuzzServer {
  server: DatagramServer;
  socket: RecordingSocket;
  sessions: ServerSessions;
  clock: { ms: number };
}

/** Restore the world's sessions into a server's session table (so MACed seeds verify). */
export function restoreWorldSessions(sessions: ServerSessions, w: World): void {
  for (const s of w.sessions) restoreSession(sessions, s, w.ticket.verifyAt + 3600);
}

function newFuzzServer(w: World): FuzzServer {
  const clock = { ms: w.ticket.verifyAt * 1000 };
  const verifier = new TicketVerifier({ keys: w.ticket.verifyKeys, audience: w.ticket.audience, now: () => Math.floor(clock.ms / 1000), cacheMax: 64 });
  const sessions = new ServerSessions({ verifier, serviceSecret: w.serviceSecret, now: () => clock.ms, maxSessions: 64 });
  restoreWorldSessions(sessions, w);
  const socket = new RecordingSocket();
  const rateLimiter = new RateLimiter({ ratePerS: 200, burst: 40, maxSources: 32, now: () => clock.ms });
  const server = new DatagramServer({
    service: 'fuzz', socket: socket.asSocket(), handlers: fuzzHandlers(), sessions, rateLimiter, replyCacheMax: 512,
    logger: new Logger({ service: 'fuzz', write: () => undefined, now: () => clock.ms }), metrics: new Metrics(),
  });
  return { server, socket, sessions, clock };
}

function restoreSession(sessions: ServerSessions, s: World['sessions'][number], exp: number): void {
  const session: ServerSession = {
    sid: s.sid, sidHex: s.sid.toString('hex'), locatorId: Buffer.alloc(16, 0x5c), locatorHex: '5c'.repeat(16), aud: s.aud, exp, keys: s.keys,
    window: new ReplayWindow(), txSeq: 0,
  };
  sessions.restore(session);
}

/** A DatagramServer under test: its sends are recorded, its clock is ours. */
export interface ServerUnderTest {
  server: DatagramServer;
  /** Every datagram the server sent, in order. */
  sent: { bytes: Buffer; port: number; ip: string }[];
  clock: { ms: number };
}

/**
 * The properties every datagram server must keep, whatever it serves: receive() never throws;
 * at most one reply to the source; every datagram sent is valid wire within the size limit; an
 * input not MACed under a session we hold gets replies (to anyone) no larger than itself; a
 * REPLAY refusal is never larger than the datagram it refuses. Sends to other addresses than the
 * source (pushes of a MACed request, e.g. MATCH_RESULT to a party) are allowed for MACed inputs.
 */
export function datagramServerTarget(name: string, doc: string, w: World, make: () => ServerUnderTest, restartEvery = 4000): Target {
  let sut = make();
  let runs = 0;
  const seqs = new Map<string, number>();
  const bySid = new Map(w.sessions.map((s) => [s.sid.toString('hex'), s] as const));
  /** Input verifies under a session key we gave the server: the server may answer it freely. */
  const authenticated = (input: Buffer): boolean => {
    const d = decodeDatagram(input);
    if (!d.ok || !d.msg.auth) return false;
    const s = bySid.get(Buffer.from(d.msg.auth.sid).toString('hex'));
    return s !== undefined && verifyDatagram(s.keys.terminalToServer, input);
  };
  return {
    name,
    doc,
    seeds: w.datagrams,
    prepare(input, rng) {
      // Half the session-shaped inputs get a valid MAC (and usually a fresh sequence number),
      // so mutated bodies reach schema checks, the replay window and the handlers.
      if (!rng.chance(0.5)) return input;
      const d = decodeDatagram(input);
      const sidOf = (x: Uint8Array): string => Buffer.from(x).toString('hex');
      if (!d.ok) {
        // Schema-invalid but session-shaped: reseal the bytes as they are.
        const s = d.auth && input.length > MAC_BYTES ? bySid.get(sidOf(d.auth.sid)) : undefined;
        return s ? macWithRaw(s.t2sRaw, Buffer.from(input)) : input;
      }
      if (!d.msg.auth) return input;
      const sid = sidOf(d.msg.auth.sid);
      const s = bySid.get(sid);
      if (!s) return input;
      const next = (seqs.get(sid) ?? 1000) + 1 + (rng.chance(0.1) ? rng.int(100) : 0);
      const seq = rng.chance(0.85) ? next : rng.int(next);
      seqs.set(sid, Math.max(next, seqs.get(sid) ?? 0));
      try {
        const out = encodeDatagram(d.msg.name, rng.chance(0.9) ? rng.bytes(REQUEST_ID_BYTES) : d.msg.rid, d.msg.body as never, { sid: s.sid, seq });
        return macWithRaw(s.t2sRaw, out);
      } catch {
        return input;
      }
    },
    async run(input, rng) {
      // A fresh server now and then: sessions, caches and buckets start over.
      if (++runs % restartEvery === 0) sut = make();
      sut.clock.ms += rng.int(40);
      const from = rng.pick(SOURCES);
      const before = sut.sent.length;
      await sut.server.receive(input, from);
      const sent = sut.sent.slice(before);
      const auth = authenticated(input);
      const toSource = sent.filter((r) => r.ip === from.ip && r.port === from.port);
      must(toSource.length <= 1, `${toSource.length} replies to one datagram`);
      if (!auth) {
        must(sent.length === toSource.length, 'an unauthenticated datagram made the server send elsewhere');
        const total = sent.reduce((a, r) => a + r.bytes.length, 0);
        must(total <= input.length, `reply of ${total} B to an unauthenticated ${input.length} B datagram`);
      }
      let sig = `in:${input.length > MAX_DATAGRAM ? 'big' : 'ok'}:${auth ? 'mac' : '-'}`;
      for (const r of sent) {
        must(r.bytes.length <= MAX_DATAGRAM, `a datagram of ${r.bytes.length} B exceeds the limit`);
        const d = decodeDatagram(r.bytes);
        must(d.ok, `the server sent an undecodable datagram: ${d.ok ? '' : d.reason}`);
        if (d.msg.name === 'ERROR') {
          must(knownCodes.has(d.msg.body.code), 'ERROR with an unknown code');
          if (d.msg.body.code === ErrorCode.REPLAY) must(r.bytes.length <= input.length, 'REPLAY refusal larger than the replayed datagram');
        }
        sig += `:${d.msg.name}${d.msg.name === 'ERROR' ? `/${d.msg.body.code}` : ''}`;
      }
      return sig;
    },
  };
}

function serverTarget(w: World): Target {
  return datagramServerTarget(
    'server',
    'DatagramServer.receive (sessions, rate limit, response cache, every handler outcome): never throws, one reply at most, valid wire, no reply to an unauthenticated input larger than it',
    w,
    () => {
      const fs = newFuzzServer(w);
      return { server: fs.server, sent: fs.socket.sent, clock: fs.clock };
    },
  );
}

// --- the client -------------------------------------------------------------------------

function clientTarget(w: World): Target {
  let socket = new RecordingSocket();
  let client: UdpClient | undefined;
  return {
    name: 'client',
    doc: 'UdpClient.receive and ClientSession.accept on forged answers: never throw',
    seeds: w.datagrams,
    async run(input) {
      client ??= await UdpClient.open({ socket: socket.asSocket(), timers: { setTimeout: () => 0, clearTimeout: () => undefined }, onPush: () => undefined });
      const d = decodeDatagram(input);
      const server: Address = { ip: '198.51.100.10', port: 4701 };
      let pending: Promise<unknown> | undefined;
      if (d.ok) {
        // A terminal-side session checks MAC and replay window of session answers.
        const session = d.msg.auth ? w.clientSession() : null;
        const o = session ? { accept: (r: Parameters<ClientSession['accept']>[0]) => session.accept(r) } : {};
        pending = client.request(server, Buffer.from([0]), d.msg.rid, o).catch(() => undefined);
      }
      client.receive(input, server);
      const answered = d.ok && client.pendingCount === 0;
      if (client.pendingCount > 0) {
        // Leave no request pending into the next run.
        await client.close();
        client = undefined;
        socket = new RecordingSocket();
      }
      await pending;
      return `${d.ok ? d.msg.name : 'err'}:${answered ? 'answered' : 'ignored'}`;
    },
  };
}

export function allTargets(w: World): Target[] {
  return [
    cborTarget([...w.datagrams, ...w.ticket.seeds, ...w.ticket.claims, ...w.auth.inners, ...w.auth.grants]),
    datagramTarget(w.datagrams),
    ticketTarget(w),
    claimsTarget(w),
    authRequestTarget(w),
    authInnerTarget(w),
    authGrantTarget(w),
    keyFileTarget(w),
    serverTarget(w),
    clientTarget(w),
    ...stunTargets(),
  ];
}
