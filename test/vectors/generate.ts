// Generates the devloc wire test vectors: messages.json, ticket.json and auth.json.
//
//   npx tsx test/vectors/generate.ts          write the three files next to this script
//   npx tsx test/vectors/generate.ts --check  exit 1 if a committed file differs
//
// Deterministic: every key, request ID, session ID, sequence number, nonce and clock value is a
// constant below, and every primitive used (Ed25519 signatures, X25519, HKDF, HMAC,
// ChaCha20-Poly1305 with its fixed zero nonce) is deterministic. Running it twice gives the same
// bytes; test/unit/vectors.test.ts checks that the committed files are what this script writes.
//
// Each vector is written from its `meaning` (the JSON form a reader sees), turned into a typed
// body by the catalog schema and encoded by the codec; the test decodes the hex independently
// and compares it to the meaning, so a codec change that alters any byte shows up there.
import type { KeyObject } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { parseAddress } from '../../src/wire/addr.js';
import { authGrantFields, catalog, MessageType, type MessageName } from '../../src/wire/catalog.js';
import { buildAuthRequestWith, proofInput, sealAuthGrant } from '../../src/wire/auth.js';
import { decodeStrict, encodeCbor } from '../../src/wire/cbor.js';
import { DEFAULT_PORTS, DEFAULT_SERVICE_IDS } from '../../src/wire/constants.js';
import { MAX_REFLECT_RESULT } from '../../src/agent/netmode.js';
import { decodeDatagram, encodeDatagram } from '../../src/wire/envelope.js';
import { ErrorCode } from '../../src/wire/errors.js';
import type { RawPair } from '../../src/wire/keys.js';
import { privateKeyObject, publicFromSecret } from '../../src/wire/keys.js';
import type { FieldType } from '../../src/wire/schema.js';
import { openBytes } from '../../src/wire/seal.js';
import { encodeBody } from '../../src/wire/schema.js';
import { channelCipher, deriveDataKeys, derivePunchKeys, sealChannelKey } from '../../src/wire/peer.js';
import { joinProof, sealCodeKey } from '../../src/wire/groupcode.js';
import type { SessionKey } from '../../src/wire/session.js';
import { deriveSessionKeys, rawKey, sealDatagram } from '../../src/wire/session.js';
import { signRevoke } from '../../src/wire/revoke.js';
import { COSE_ALG_EDDSA, encodeClaims, issueTicket, TICKET_ISSUER } from '../../src/wire/ticket.js';

// ---------------------------------------------------------------------------------------------
// Fixed inputs. Public halves are derived, never written by hand.

/** Ed25519 seed of authd's ticket-signing key (RFC 8032 §7.1 TEST 1 secret key). */
export const AUTHD_SIGN_SEED = '9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60';
/** Ed25519 seed of the device's factory key (RFC 8032 §7.1 TEST 2 secret key). */
export const DEVICE_SIGN_SEED = '4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb';
/** authd's X25519 sealing key (RFC 7748 §6.1 Bob's private key). */
export const AUTHD_SEAL_SECRET = '5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb';
/** The terminal's one-shot X25519 key for sealing AUTH_REQUEST (RFC 7748 §6.1 Alice's private key). */
export const EPHEMERAL_SECRET = '77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a';
/** The terminal's session X25519 key: its public half is the tickets' cnf. */
export const TERMINAL_CNF_SECRET = 'c8a9d5a91091ad851c668b0736c1c9a02936c0d3ad62670858088047ba057475';
/** Static X25519 keys of the two session services. */
export const SERVICE_SECRETS = {
  locatord: 'a0a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3b4b5b6b7b8b9babbbcbdbebf',
  matchd: '606162636465666768696a6b6c6d6e6f707172737475767778797a7b7c7d7e7f',
} as const;
export type SessionService = keyof typeof SERVICE_SECRETS;

export const AUTHD_KID = '7a1e0001';
/** The AUTH_RESPONSE's seal nonce (authd draws 12 random bytes per response). */
export const RESPONSE_NONCE = 'a0a1a2a3a4a5a6a7a8a9aaab';
export const DEVICE_ID = 'DEVLOC-TEST-0001';
export const LOCATOR_ID = '5ca1ab1e0123456789abcdef00c0ffee';
/** Session IDs are the tickets' cti. */
export const SIDS: Record<SessionService, string> = {
  locatord: '51d0000000000000000000000000000a',
  matchd: '51d0000000000000000000000000000b',
};
/** 2026-01-01T00:00:00Z. */
export const NOW_S = 1767225600;
export const TIME_MS = NOW_S * 1000 + 123;
export const TICKET_LIFETIME_S = 3600;
export const AUTH_RID = 'a0a0000000000002';
export const AUTH_NONCE = '6e6f6e63652d30303030303030303031';
export const AUTH_AUDIENCES = [DEFAULT_SERVICE_IDS.locatord, DEFAULT_SERVICE_IDS.matchd];

/** A peer channel (devloc-protocol(7), PEER CHANNELS): its ID and key as locatord draws them. */
export const CHANNEL_ID = 'c4a0000000000000000000000000000c';
export const CHANNEL_KEY = '404142434445464748494a4b4c4d4e4f505152535455565758595a5b5c5d5e5f';
/** The two ends' ephemeral X25519 keys for the channel (counting bytes). */
export const INITIATOR_EPH_SECRET = '202122232425262728292a2b2c2d2e2f303132333435363738393a3b3c3d3e3f';
export const RESPONDER_EPH_SECRET = '808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f';

// Other identities appearing in bodies.
const PEER_ID = '0123456789abcdef0123456789abcdef';
const PEER2_ID = 'fedcba9876543210fedcba9876543210';
const GROUP_ID = '6a0e0000000000000000000000000001';
const MATCH_ID = '3a7c000000000001';

// ---------------------------------------------------------------------------------------------
// Key helpers.

/** The raw pair for a 32-byte secret, the public half computed from it. */
export function pairFromSecret(alg: 'Ed25519' | 'X25519', secretHex: string): RawPair {
  const secret = Buffer.from(secretHex, 'hex');
  return { secret, public: publicFromSecret(alg === 'Ed25519' ? 'ed25519' : 'x25519', secret) };
}

const hex = (b: Uint8Array): string => Buffer.from(b).toString('hex');
const unhex = (h: string): Buffer => Buffer.from(h, 'hex');

// ---------------------------------------------------------------------------------------------
// JSON meaning -> typed body, by schema (bytes are hex, addresses "ip:port" / "[ip6]:port").

type Json = null | boolean | number | string | Json[] | { [k: string]: Json };

function fromJsonValue(type: FieldType, v: Json, path: string): unknown {
  switch (type.t) {
    case 'uint':
    case 'bool':
    case 'tstr':
    case 'props':
      return v;
    case 'bstr':
      if (typeof v !== 'string' || !/^([0-9a-f]{2})*$/.test(v)) throw new Error(`${path}: bytes must be lowercase hex`);
      return unhex(v);
    case 'addr': {
      const a = typeof v === 'string' ? parseAddress(v) : null;
      if (!a) throw new Error(`${path}: not an address: ${JSON.stringify(v)}`);
      return a;
    }
    case 'array':
      if (!Array.isArray(v)) throw new Error(`${path}: expected array`);
      return v.map((x, i) => fromJsonValue(type.of, x, `${path}[${i}]`));
    case 'struct':
      return fromJsonFields(type.fields, v, path);
  }
}

function fromJsonFields(fields: readonly { key: number; name: string; type: FieldType }[], v: Json, path: string): Record<string, unknown> {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new Error(`${path}: expected object`);
  const out: Record<string, unknown> = {};
  const known = new Set(fields.map((f) => f.name));
  for (const k of Object.keys(v)) if (!known.has(k)) throw new Error(`${path}: unknown field ${k}`);
  for (const f of fields) if (v[f.name] !== undefined) out[f.name] = fromJsonValue(f.type, v[f.name]!, `${path}.${f.name}`);
  return out;
}

// ---------------------------------------------------------------------------------------------
// Sessions.

export interface SessionVectorKeys {
  sid: string;
  aud: string;
  terminalToServer: string;
  serverToTerminal: string;
}

function sessionKeysFor(service: SessionService): { hex: SessionVectorKeys; t2s: SessionKey; s2t: SessionKey } {
  const svc = pairFromSecret('X25519', SERVICE_SECRETS[service]);
  const cnf = pairFromSecret('X25519', TERMINAL_CNF_SECRET);
  // Derived as the service does it (its static secret, the ticket's cnf key); the test derives
  // it the terminal's way too.
  const keys = deriveSessionKeys(privateKeyObject('X25519', svc), cnf.public, unhex(SIDS[service]), DEFAULT_SERVICE_IDS[service])!;
  const raw = (k: SessionKey): string => hex(rawKey(k));
  return {
    hex: { sid: SIDS[service], aud: DEFAULT_SERVICE_IDS[service], terminalToServer: raw(keys.terminalToServer), serverToTerminal: raw(keys.serverToTerminal) },
    t2s: keys.terminalToServer,
    s2t: keys.serverToTerminal,
  };
}

// ---------------------------------------------------------------------------------------------
// Tickets.

function ticketFor(aud: SessionService): Buffer {
  const authd = pairFromSecret('Ed25519', AUTHD_SIGN_SEED);
  const cnf = pairFromSecret('X25519', TERMINAL_CNF_SECRET);
  return issueTicket(
    { locatorId: unhex(LOCATOR_ID), aud: DEFAULT_SERVICE_IDS[aud], iat: NOW_S, exp: NOW_S + TICKET_LIFETIME_S, cti: unhex(SIDS[aud]), cnf: cnf.public },
    unhex(AUTHD_KID),
    privateKeyObject('Ed25519', authd),
  );
}

function buildTicketJson(): object {
  const authd = pairFromSecret('Ed25519', AUTHD_SIGN_SEED);
  const cnf = pairFromSecret('X25519', TERMINAL_CNF_SECRET);
  const input = { locatorId: unhex(LOCATOR_ID), aud: DEFAULT_SERVICE_IDS.locatord, iat: NOW_S, exp: NOW_S + TICKET_LIFETIME_S, cti: unhex(SIDS.locatord), cnf: cnf.public };
  const ticket = ticketFor('locatord');
  const protectedBytes = encodeCbor(new Map([[1, COSE_ALG_EDDSA]]));
  const payload = encodeClaims(input);
  const sigStructure = encodeCbor(['Signature1', protectedBytes, new Uint8Array(0), payload]);
  return {
    description:
      'A devloc ticket: untagged COSE_Sign1 (RFC 9052) carrying CWT claims (RFC 8392), EdDSA/Ed25519. ' +
      'signature = Ed25519(authd.signSeed, sigStructure); sigStructure = ["Signature1", protected, h\'\', payload]. ' +
      'Verify with authd.signPublic at verifyAt (seconds since the epoch) for audience "' + DEFAULT_SERVICE_IDS.locatord + '".',
    authd: { kid: AUTHD_KID, signSeed: AUTHD_SIGN_SEED, signPublic: hex(authd.public) },
    terminal: { cnfSecret: TERMINAL_CNF_SECRET, cnfPublic: hex(cnf.public) },
    verifyAt: NOW_S + 60,
    claims: {
      iss: TICKET_ISSUER,
      sub: LOCATOR_ID,
      aud: DEFAULT_SERVICE_IDS.locatord,
      exp: NOW_S + TICKET_LIFETIME_S,
      iat: NOW_S,
      cti: SIDS.locatord,
      cnf: { kty: 1, crv: 4, x: hex(cnf.public) },
    },
    protectedHex: hex(protectedBytes),
    unprotected: { kid: AUTHD_KID },
    payloadHex: hex(payload),
    sigStructureHex: hex(sigStructure),
    signature: hex(ticket.subarray(ticket.length - 64)),
    hex: hex(ticket),
  };
}

// ---------------------------------------------------------------------------------------------
// The authentication exchange.

function authExchange(): { json: object; requestHex: string; requestMeaning: Json; responseHex: string; responseMeaning: Json } {
  const device = pairFromSecret('Ed25519', DEVICE_SIGN_SEED);
  const authdSeal = pairFromSecret('X25519', AUTHD_SEAL_SECRET);
  const eph = pairFromSecret('X25519', EPHEMERAL_SECRET);
  const cnf = pairFromSecret('X25519', TERMINAL_CNF_SECRET);
  const rid = unhex(AUTH_RID);
  const built = buildAuthRequestWith(
    {
      rid, deviceId: DEVICE_ID, deviceKey: privateKeyObject('Ed25519', device), authdKid: unhex(AUTHD_KID),
      authdSealPublic: authdSeal.public, audiences: AUTH_AUDIENCES, cnf: cnf.public, timeMs: TIME_MS,
    },
    eph,
    unhex(AUTH_NONCE),
  );
  const unsigned = { deviceId: DEVICE_ID, timeMs: TIME_MS, nonce: unhex(AUTH_NONCE), audiences: AUTH_AUDIENCES, cnf: cnf.public };
  const proof = proofInput(authdSeal.public, eph.public, unsigned);

  // Read the request back to report its parts (sealed bytes, padding, inner plaintext).
  const dg = built.datagram;
  const sealedAndPad = requestParts(dg, built.keys.request);
  const tickets = (['locatord', 'matchd'] as const).map((aud) => ({
    aud: DEFAULT_SERVICE_IDS[aud],
    ticket: hex(ticketFor(aud)),
    serviceKey: hex(pairFromSecret('X25519', SERVICE_SECRETS[aud]).public),
    exp: NOW_S + TICKET_LIFETIME_S,
    addr: `198.51.100.10:${DEFAULT_PORTS[aud]}`,
  }));
  const grantMeaning = { locatorId: LOCATOR_ID, tickets, nonce: AUTH_NONCE };
  const grant = fromJsonFields(authGrantFields, grantMeaning, 'grant');
  const grantCbor = encodeBody(authGrantFields, grant);
  // Fixed response nonce (authd draws a random one) so the vector is reproducible.
  const sealedGrant = sealAuthGrant(built.keys, rid, grant as never, unhex(RESPONSE_NONCE));
  const response = encodeDatagram('AUTH_RESPONSE', rid, { sealed: sealedGrant });

  const requestMeaning = {
    name: 'AUTH_REQUEST', type: MessageType.AUTH_REQUEST, rid: AUTH_RID,
    body: { authdKey: AUTHD_KID, ephemeral: hex(eph.public), sealed: hex(sealedAndPad.sealed), padding: hex(sealedAndPad.padding) },
  };
  const responseMeaning = { name: 'AUTH_RESPONSE', type: MessageType.AUTH_RESPONSE, rid: AUTH_RID, body: { sealed: hex(sealedGrant) } };
  const inner = {
    deviceId: DEVICE_ID, timeMs: TIME_MS, nonce: AUTH_NONCE, audiences: AUTH_AUDIENCES, cnf: hex(cnf.public),
    signature: hex(sealedAndPad.signature),
  };
  const json = {
    description:
      'The AUTH_REQUEST / AUTH_RESPONSE exchange (see src/wire/auth.ts, seal.ts). ' +
      'sealKeys = HKDF-SHA-256(ikm = X25519(ephemeral, authd seal key), salt = ephemeral.public || authdSeal.public, ' +
      'info = "devloc-auth-v1", 64 bytes) = request (32) || response (32). ' +
      'Request: sealed = ChaCha20-Poly1305(sealKeys.request, nonce 12 zero bytes, aad = requestAad, CBOR AuthInner). ' +
      'AuthInner.signature = Ed25519(device.signSeed, proofInput). ' +
      'Response: sealed = n || ChaCha20-Poly1305(sealKeys.response, nonce n, aad = rid, CBOR AuthGrant), n = 12 bytes authd draws at random for every response (fixed here: responseNonce). AuthGrant.nonce echoes inputs.nonce (16 bytes the terminal draws at random).',
    inputs: {
      rid: AUTH_RID,
      deviceId: DEVICE_ID,
      device: { signSeed: DEVICE_SIGN_SEED, signPublic: hex(device.public) },
      authd: { kid: AUTHD_KID, sealSecret: AUTHD_SEAL_SECRET, sealPublic: hex(authdSeal.public), signPublic: hex(pairFromSecret('Ed25519', AUTHD_SIGN_SEED).public) },
      ephemeral: { secret: EPHEMERAL_SECRET, public: hex(eph.public) },
      cnf: { secret: TERMINAL_CNF_SECRET, public: hex(cnf.public) },
      nonce: AUTH_NONCE,
      timeMs: TIME_MS,
      audiences: AUTH_AUDIENCES,
    },
    derived: {
      sealKeys: { request: hex(built.keys.request), response: hex(built.keys.response) },
      proofInputHex: hex(proof),
      inner,
      innerHex: hex(sealedAndPad.inner),
      requestAad: hex(Buffer.concat([rid, unhex(AUTHD_KID), eph.public])),
      responseNonce: RESPONSE_NONCE,
    },
    request: { hex: hex(dg), meaning: requestMeaning },
    grant: { meaning: grantMeaning, cborHex: hex(grantCbor) },
    response: { hex: hex(response), meaning: responseMeaning },
  };
  return { json, requestHex: hex(dg), requestMeaning, responseHex: hex(response), responseMeaning };
}

/** The parts of a built AUTH_REQUEST, read back with the request seal key. */
function requestParts(dg: Uint8Array, requestKey: Buffer): { sealed: Uint8Array; padding: Uint8Array; inner: Buffer; signature: Uint8Array } {
  const d = decodeDatagram(dg);
  if (!d.ok || d.msg.name !== 'AUTH_REQUEST') throw new Error('generated AUTH_REQUEST does not decode');
  const body = d.msg.body;
  const inner = openBytes(requestKey, body.sealed, Buffer.concat([d.msg.rid, body.authdKey, body.ephemeral]));
  const map = inner ? decodeStrict(inner) : null;
  if (!inner || !map?.ok || !(map.value instanceof Map)) throw new Error('generated AUTH_REQUEST does not open');
  return { sealed: body.sealed, padding: body.padding ?? new Uint8Array(0), inner, signature: map.value.get(6) as Uint8Array };
}

// ---------------------------------------------------------------------------------------------
// A peer channel: the channel key sealed for each end, punch keys, data keys.

interface PeerVectorKeys {
  /** The punch MAC keys in the session-key form (t2s = initiator to responder, s2t = responder to initiator). */
  punch: { hex: SessionVectorKeys; t2s: KeyObject; s2t: KeyObject };
  data: { hex: SessionVectorKeys; t2s: KeyObject; s2t: KeyObject; encI2R: Buffer; encR2I: Buffer };
  json: object;
}

function peerKeys(): PeerVectorKeys {
  const id = unhex(CHANNEL_ID);
  const key = unhex(CHANNEL_KEY);
  const ephI = pairFromSecret('X25519', INITIATOR_EPH_SECRET);
  const ephR = pairFromSecret('X25519', RESPONDER_EPH_SECRET);
  const pk = derivePunchKeys(key, id);
  // The responder's derivation; the test derives it the initiator's way.
  const dk = deriveDataKeys(privateKeyObject('X25519', ephR), ephI.public, key, id, ephI.public, ephR.public)!;
  const raw = (k: SessionKey): string => hex(rawKey(k));
  const punchHex = { sid: CHANNEL_ID, aud: 'peer-punch', terminalToServer: raw(pk.initiatorToResponder), serverToTerminal: raw(pk.responderToInitiator) };
  const dataHex = { sid: CHANNEL_ID, aud: 'peer-data', terminalToServer: raw(dk.initiatorToResponder.mac), serverToTerminal: raw(dk.responderToInitiator.mac) };
  return {
    punch: { hex: punchHex, t2s: pk.initiatorToResponder, s2t: pk.responderToInitiator },
    data: { hex: dataHex, t2s: dk.initiatorToResponder.mac, s2t: dk.responderToInitiator.mac, encI2R: dk.initiatorToResponder.enc, encR2I: dk.responderToInitiator.enc },
    json: {
      description:
        'A peer channel between LOCATOR_ID (the initiator, who sent INTRODUCE) and PEER_ID (the responder). ' +
        'Peer vectors are the responder\'s datagrams: MACed with the responder-to-initiator keys, stored as serverToTerminal of sessionKeys.peer (PUNCH, PUNCH_ACK) and sessionKeys.peerData (DATA, DATA_ACK). ' +
        'punch = HKDF-SHA-256(ikm = channelKey, salt = channelId, info = "devloc-punch-v1", 64) = i2r || r2i. ' +
        'data = HKDF-SHA-256(ikm = X25519(initiator eph, responder eph), salt = channelKey, info = "devloc-peer-data-v1" || channelId || initiator eph public || responder eph public, 128) = i2r enc || i2r mac || r2i enc || r2i mac. ' +
        'DATA payload = ChaCha20(enc key, counter 0, nonce = 4 zero bytes || seq as 8-byte big-endian, plaintext). ' +
        'sealedKey in INTRODUCE_ACK / INTRO = ChaCha20-Poly1305(HKDF-SHA-256(ikm = t2s || s2t of the recipient\'s locatord session, salt = channelId, info = "devloc-intro-v1", 32), 12 zero bytes, aad = channelId || the other terminal\'s locator ID, channelKey).',
      channelId: CHANNEL_ID,
      channelKey: CHANNEL_KEY,
      initiatorEph: { secret: INITIATOR_EPH_SECRET, public: hex(ephI.public) },
      responderEph: { secret: RESPONDER_EPH_SECRET, public: hex(ephR.public) },
      punchKeys: { initiatorToResponder: punchHex.terminalToServer, responderToInitiator: punchHex.serverToTerminal },
      dataKeys: {
        initiatorToResponder: { enc: hex(dk.initiatorToResponder.enc), mac: dataHex.terminalToServer },
        responderToInitiator: { enc: hex(dk.responderToInitiator.enc), mac: dataHex.serverToTerminal },
      },
    },
  };
}

/** The channel key sealed for the terminal of the locatord session (the vectors' only terminal session). */
function sealedForLocatordSession(peer: string): string {
  const s = sessionKeysFor('locatord');
  return hex(sealChannelKey({ terminalToServer: s.t2s, serverToTerminal: s.s2t }, unhex(CHANNEL_ID), unhex(peer), unhex(CHANNEL_KEY)));
}

/** Join-code fields in the locatord session: GROUP_CREATE's sealed code key, a join proof (fixed nonces). */
const CODE_NONCE = '0c0de0c0de0c0de0c0de0c0de0c0de00';
function groupCodeFields(): { create: { nonce: string; sealedCodeKey: string }; join: { nonce: string; proof: string } } {
  const s = sessionKeysFor('locatord');
  const keys = { terminalToServer: s.t2s, serverToTerminal: s.s2t };
  const c = sealCodeKey(keys, 'k1ng', unhex(CODE_NONCE));
  const j = joinProof(keys, unhex(SIDS.locatord), unhex(GROUP_ID), 'k1ng', unhex(CODE_NONCE));
  return { create: { nonce: hex(c.nonce), sealedCodeKey: hex(c.sealedCodeKey) }, join: { nonce: hex(j.nonce), proof: hex(j.proof) } };
}

// ---------------------------------------------------------------------------------------------
// The message vectors.

/** Session-like keys of a vector: the services' sessions, and a peer channel's punch and data MAC keys. */
type VectorSession = SessionService | 'peer' | 'peerData';

interface VectorSpec {
  name: MessageName;
  rid: string;
  body: Json;
  /** Session-authenticated: which session (or channel keys), and the sender's sequence number. */
  session?: { service: VectorSession; seq: number };
  note: string;
}

/** Request IDs: a request and its answer share one. */
const rid = (n: number): string => `5eed${n.toString(16).padStart(12, '0')}`;

function messageSpecs(ticketHex: string, peer: PeerVectorKeys): VectorSpec[] {
  const L = (seq: number) => ({ service: 'locatord' as const, seq });
  const codes = groupCodeFields();
  const M = (seq: number) => ({ service: 'matchd' as const, seq });
  const P = (seq: number) => ({ service: 'peer' as const, seq });
  const D = (seq: number) => ({ service: 'peerData' as const, seq });
  const ephR = hex(pairFromSecret('X25519', RESPONDER_EPH_SECRET).public);
  const dataSeq = 4;
  const dataPayload = hex(channelCipher(peer.data.encR2I, dataSeq, Buffer.from('hello, initiator')));
  const member = (id: string, nickname: string, addr: string, netMode: number) => ({ id, nickname, netMode, addr });
  // issue 19: REVOKE, signed with authd's ticket-signing key (src/wire/revoke.ts).
  const revokeFields = { locatorId: unhex(LOCATOR_ID), code: ErrorCode.REVOKED, untilS: NOW_S + 3600, timeMs: TIME_MS };
  const revokeBody = signRevoke(Buffer.from(rid(0x08), 'hex'), revokeFields, AUTHD_KID, privateKeyObject('Ed25519', pairFromSecret('Ed25519', AUTHD_SIGN_SEED)));
  return [
    {
      name: 'REVOKE', rid: rid(0x08),
      body: { locatorId: LOCATOR_ID, code: ErrorCode.REVOKED, untilS: NOW_S + 3600, timeMs: TIME_MS, kid: AUTHD_KID, signature: hex(revokeBody.signature) },
      note: 'authd to locatord: end LOCATOR_ID (device revoked) and refuse its tickets for an hour; signed by the authd key AUTHD_KID.',
    },
    { name: 'REVOKE_ACK', rid: rid(0x08), body: {}, note: 'The service acknowledges (same rid).' },
    {
      name: 'REGISTER', rid: rid(0x10), session: L(1),
      body: {
        ticket: ticketHex,
        timeMs: TIME_MS,
        localAddrs: ['192.168.1.20:4800', '[2001:db8::20]:4800'],
        netMode: 4,
        nickname: 'Zoë',
        mediaId: 'chess/standard',
        community: { lang: 'en', level: 7, ranked: true, elo: -1, tz: 'Europe/Paris' },
        visibility: 1,
        allow: [PEER_ID],
        joinGroups: [{ groupId: GROUP_ID, ...codes.join }],
        ttlS: 90,
      },
      note: 'First REGISTER of a session: carries the locatord ticket of ticket.json (its cti is the sid). Every optional field is present; the nickname has a non-ASCII letter; community shows text, int, negative int and bool properties, its keys in deterministic order: shorter first, so "tz" precedes "elo".',
    },
    {
      name: 'REGISTER_ACK', rid: rid(0x10), session: L(1),
      body: { observed: '203.0.113.7:61234', ttlS: 90, refreshS: 25, locatorId: LOCATOR_ID },
      note: 'Answer to REGISTER (same rid), MACed with the server-to-terminal key; the server counts its own sequence numbers.',
    },
    {
      name: 'REFRESH', rid: rid(0x12), session: L(2),
      body: { ttlS: 90, netMode: 2, localAddrs: ['10.0.0.5:4800'] },
      note: 'Refresh with a changed network mode and LAN address.',
    },
    {
      name: 'REFRESH_ACK', rid: rid(0x12), session: L(2),
      body: { observed: '[2001:db8:85a3::8a2e:370:7334]:4800', ttlS: 90, refreshS: 25, locatorId: LOCATOR_ID },
      note: 'IPv6 observed address (16 bytes on the wire, RFC 5952 text here).',
    },
    { name: 'UNREGISTER', rid: rid(0x14), session: L(3), body: {}, note: 'Empty body: an empty map (a0).' },
    { name: 'UNREGISTER_ACK', rid: rid(0x14), session: L(3), body: {}, note: 'Empty body.' },
    {
      name: 'QUERY_ADDR', rid: rid(0x20), session: L(4),
      body: { ids: [PEER_ID, PEER2_ID], cursor: 0 },
      note: 'Two locator IDs, cursor 0 given explicitly.',
    },
    {
      name: 'QUERY_ADDR_RESULT', rid: rid(0x20), session: L(4),
      body: {
        entries: [
          { id: PEER_ID, online: true, addr: '198.51.100.23:40000', localAddrs: ['192.168.0.9:4800'], netMode: 1, nickname: 'bob', mediaId: 'chess/standard' },
          { id: PEER2_ID, online: false },
        ],
        nextCursor: 2,
      },
      note: 'One online entry with every field, one offline entry (unknown, expired and invisible look the same).',
    },
    {
      name: 'QUERY_STATUS', rid: rid(0x22), session: L(0x100000005),
      body: { ids: [PEER_ID, PEER2_ID] },
      note: 'Sequence number 2^32+5: a uint64 head (1b) inside the auth array.',
    },
    {
      name: 'QUERY_STATUS_RESULT', rid: rid(0x22), session: L(5),
      body: { online: [true, false] },
      note: 'One boolean per ID; no nextCursor (nothing left).',
    },
    {
      name: 'WATCH', rid: rid(0x24), session: L(0x100000020),
      body: { ids: [PEER_ID, PEER2_ID] },
      note: 'Watch two locator IDs (presence pushed when they change).',
    },
    {
      name: 'WATCH_ACK', rid: rid(0x24), session: L(0x20),
      body: {
        entries: [
          { id: PEER_ID, online: true, nickname: 'bob', presence: { mediaId: 'chess/standard', lookingForPartner: true, wants: { level: 3 }, status: 'up for a game' } },
          { id: PEER2_ID, online: false },
        ],
        watching: 2,
      },
      note: 'Their status now (unknown, offline and hidden look the same) and the count watched.',
    },
    { name: 'UNWATCH', rid: rid(0x26), session: L(0x100000021), body: { ids: [PEER2_ID] }, note: 'Stop watching one ID.' },
    { name: 'UNWATCH_ACK', rid: rid(0x26), session: L(0x21), body: { watching: 1 }, note: 'One still watched.' },
    {
      name: 'PRESENCE_SET', rid: rid(0x28), session: L(0x100000022),
      body: { presence: { mediaId: 'chess/standard', lookingForPartner: true, wants: { level: 3 }, status: 'up for a game' } },
      note: 'Replace the presence record without re-registering.',
    },
    { name: 'PRESENCE_SET_ACK', rid: rid(0x28), session: L(0x22), body: {}, note: 'Empty body.' },
    {
      name: 'PRESENCE', rid: rid(0x2a), session: L(0x23),
      body: { id: PEER_ID, online: true, nickname: 'bob', presence: { status: 'away' } },
      note: 'Server-initiated push to a watcher: PEER_ID changed its status text.',
    },
    { name: 'PRESENCE_ACK', rid: rid(0x2a), session: L(0x100000023), body: { id: PEER_ID }, note: 'Receipt of the push (same rid).' },
    {
      name: 'SEARCH', rid: rid(0x2c), session: L(0x100000024),
      body: { mediaId: 'chess/standard', requirements: [{ attr: 'level', op: 1, min: 2, max: 4, mandatory: true }] },
      note: 'Partner search: terminals playing chess/standard whose wanted partner has a level in 2..4.',
    },
    {
      name: 'SEARCH_RESULT', rid: rid(0x2c), session: L(0x24),
      body: {
        entries: [{ id: PEER_ID, online: true, nickname: 'bob', presence: { mediaId: 'chess/standard', lookingForPartner: true, wants: { level: 3 } } }],
        next: PEER_ID,
      },
      note: 'One candidate found; candidates remain after PEER_ID (send SEARCH again with after = next).',
    },
    {
      name: 'GROUP_CREATE', rid: rid(0x30), session: L(0x100000006),
      body: { name: 'Friday chess', ...codes.create },
      note: 'A closed group with join code "k1ng": its code key sealed under the locatord session with the nonce given (see GROUP CODES).',
    },
    { name: 'GROUP_CREATE_ACK', rid: rid(0x30), session: L(6), body: { groupId: GROUP_ID }, note: 'New group ID (16 bytes).' },
    { name: 'GROUP_JOIN', rid: rid(0x32), session: L(0x100000007), body: { groupId: GROUP_ID, ...codes.join }, note: 'Join a closed group: proof of "k1ng" for GROUP_ID in the locatord session, with the nonce given.' },
    { name: 'GROUP_JOIN_ACK', rid: rid(0x32), session: L(7), body: { groupId: GROUP_ID }, note: 'Joined.' },
    { name: 'GROUP_LEAVE', rid: rid(0x34), session: L(0x100000008), body: { groupId: GROUP_ID }, note: 'Leave.' },
    { name: 'GROUP_LEAVE_ACK', rid: rid(0x34), session: L(8), body: {}, note: 'Empty body.' },
    {
      name: 'GROUP_MEMBERS', rid: rid(0x36), session: L(0x100000009),
      body: { groupId: GROUP_ID, cursor: 24 },
      note: 'Cursor 24: the first uint with a one-byte argument (18 18).',
    },
    {
      name: 'GROUP_MEMBERS_RESULT', rid: rid(0x36), session: L(9),
      body: {
        members: [
          { id: PEER_ID, online: true, addr: '198.51.100.23:40000', nickname: 'bob', netMode: 1 },
          { id: PEER2_ID, online: false },
        ],
        nextCursor: 26,
        total: 300,
        name: 'Friday chess',
      },
      note: 'A page of two members out of 300 (a two-byte uint, 19 01 2c).',
    },
    { name: 'PROBE', rid: rid(0x40), session: L(10), body: {}, note: 'Server-initiated: MACed with the server-to-terminal key.' },
    { name: 'PROBE_ACK', rid: rid(0x40), session: L(0x10000000a), body: {}, note: 'Terminal answers the probe with the same rid.' },
    {
      name: 'INTRODUCE', rid: rid(0x42), session: L(0x10000000b),
      body: { target: PEER_ID, netMode: 4, localAddrs: ['192.168.1.20:4800'] },
      note: 'Ask locatord for an introduction to PEER_ID, restating our mode and LAN address.',
    },
    {
      name: 'INTRODUCE_ACK', rid: rid(0x42), session: L(12),
      body: {
        channelId: CHANNEL_ID, peer: PEER_ID, addr: '203.0.113.7:40000', localAddrs: ['192.168.0.9:4800'], netMode: 4, nickname: 'bob',
        sealedKey: sealedForLocatordSession(PEER_ID), observed: '203.0.113.7:61234',
      },
      note: 'The introduction for the asker: the peer\'s addresses and mode, and the channel key of peerChannel sealed under this session (aad = channelId || PEER_ID). The peer is seen at the asker\'s own public IP (behind the same NAT), so its LAN addresses are passed on (see Punching).',
    },
    {
      name: 'INTRO', rid: rid(0x44), session: L(13),
      body: {
        channelId: CHANNEL_ID, peer: PEER2_ID, addr: '198.51.100.24:50000', netMode: 2,
        sealedKey: sealedForLocatordSession(PEER2_ID), observed: '203.0.113.7:61234',
      },
      note: 'Pushed to this terminal as the target of PEER2_ID\'s INTRODUCE (aad = channelId || PEER2_ID); no LAN addresses, no nickname.',
    },
    { name: 'INTRO_ACK', rid: rid(0x44), session: L(0x10000000c), body: { channelId: CHANNEL_ID }, note: 'Receipt of the INTRO (same rid).' },
    {
      name: 'REFLECT', rid: rid(0x50),
      body: { change: 1, padding: '00'.repeat(61) },
      note: `Unauthenticated; padded with zero bytes to exactly ${MAX_REFLECT_RESULT} bytes, the largest REFLECT_RESULT, so no answer is larger than the request.`,
    },
    {
      name: 'REFLECT_RESULT', rid: rid(0x50),
      body: { observed: '203.0.113.7:61234', from: '192.0.2.1:4703', otherPort: 4704, otherIp: 'c0000202' },
      note: 'Unauthenticated. otherIp is raw bytes (192.0.2.2), not an addr.',
    },
    {
      name: 'MATCH_SUBMIT', rid: rid(0x60), session: M(2),
      body: {
        timeMs: TIME_MS,
        mediaId: 'chess/standard',
        appType: 'game',
        minParty: 2,
        maxParty: 4,
        attrs: { age: 30, region: 'eu' },
        requirements: [
          { attr: 'region', op: 0, value: 'eu', mandatory: true },
          { attr: 'level', op: 1, min: 5, max: 10 },
          { attr: 'lang', op: 2, set: ['en', 'fr'], mandatory: false },
        ],
        netMode: 4,
        maxWaitS: 60,
        nickname: 'Zoë',
      },
      note: 'A later submit in an open matchd session (its own sid and keys; the first MATCH_SUBMIT of a session also carries the ticket, as the REGISTER example does for locatord). One requirement of each op.',
    },
    { name: 'MATCH_SUBMIT_ACK', rid: rid(0x60), session: M(1), body: { matchId: MATCH_ID, deadlineS: NOW_S + 60 }, note: 'Queued until deadlineS.' },
    { name: 'MATCH_STATUS', rid: rid(0x62), session: M(3), body: { matchId: MATCH_ID }, note: 'Poll.' },
    {
      name: 'MATCH_STATUS_RESULT', rid: rid(0x62), session: M(2),
      body: {
        matchId: MATCH_ID, state: 1,
        members: [{ ...member(LOCATOR_ID, 'Zoë', '203.0.113.7:61234', 4), path: 2 }, member(PEER_ID, 'bob', '198.51.100.23:40000', 1)],
        host: 1,
      },
      note: 'Matched: the party and its host (index 1, the member with the open address, which carries no path); the other member reaches the host directly (path 2).',
    },
    { name: 'MATCH_CANCEL', rid: rid(0x64), session: M(4), body: { matchId: MATCH_ID }, note: 'Withdraw.' },
    { name: 'MATCH_CANCEL_ACK', rid: rid(0x64), session: M(3), body: { matchId: MATCH_ID, state: 3 }, note: 'Cancelled.' },
    {
      name: 'MATCH_RESULT', rid: rid(0x66), session: M(4),
      body: { matchId: MATCH_ID, state: 2 },
      note: 'Server-initiated push: no match before the deadline (no members, no host).',
    },
    { name: 'MATCH_RESULT_ACK', rid: rid(0x66), session: M(5), body: { matchId: MATCH_ID }, note: 'Terminal acknowledges the push.' },
    {
      name: 'PUNCH', rid: rid(0x70), session: P(1), body: { eph: ephR },
      note: 'Peer channel (peerChannel): the responder\'s first PUNCH, to one of the initiator\'s candidate addresses; the sid slot holds the channel ID.',
    },
    {
      name: 'PUNCH_ACK', rid: rid(0x71), session: P(2), body: { eph: ephR, observed: '203.0.113.7:61234' },
      note: 'The responder answers an initiator\'s PUNCH (whose rid it echoes), telling where it came from.',
    },
    { name: 'PUNCH', rid: rid(0x72), session: P(3), body: { eph: ephR, close: true }, note: 'The responder closes the channel.' },
    {
      name: 'DATA', rid: rid(0x73), session: D(dataSeq), body: { n: 1, payload: dataPayload },
      note: 'First message of the responder: "hello, initiator" under ChaCha20 (r2i enc key of peerChannel, nonce 0 || seq 4), MACed with the r2i data MAC key.',
    },
    { name: 'DATA', rid: rid(0x74), session: D(5), body: { n: 2, payload: '', ack: true }, note: 'A ping: empty payload, acknowledgement asked.' },
    { name: 'DATA_ACK', rid: rid(0x75), session: D(6), body: { n: 7 }, note: 'The responder acknowledges the initiator\'s DATA number 7 (same rid as that DATA).' },
    {
      name: 'ADDR_CHALLENGE', rid: rid(0x10), session: L(14),
      body: { token: 'a11d7e57000000000000000000000001' },
      note: 'In place of the REGISTER_ACK: the REGISTER came from an address not validated for the session (same rid; MACed).',
    },
    {
      name: 'ADDR_PROOF', rid: rid(0x11),
      body: { sid: SIDS.locatord, token: 'a11d7e57000000000000000000000001' },
      note: 'The terminal echoes the session ID and token, unauthenticated, from the challenged address, under a new request ID (the server reads only sid and token); never answered.',
    },
    {
      name: 'ERROR', rid: rid(0x50),
      body: { code: ErrorCode.RATE_LIMITED, retryAfterMs: 2000 },
      note: 'Unauthenticated refusal of a REFLECT (its rid): RATE_LIMITED, no message so the reply stays small.',
    },
    {
      name: 'ERROR', rid: rid(0x36), session: L(11),
      body: { code: ErrorCode.FORBIDDEN, message: 'not a member of this group' },
      note: 'A refusal of a session request (here GROUP_MEMBERS of a group the terminal is not in, or that does not exist: the same answer) is MACed like any server-to-terminal message.',
    },
    {
      name: 'ERROR', rid: AUTH_RID,
      body: { code: ErrorCode.COOKIE_REQUIRED, cookie: 'c00c1e00000000000000000000000001' },
      note: 'authd asks for address validation with a 16-byte cookie: send a new AUTH_REQUEST with this cookie (body key 4).',
    },
  ];
}

export interface Vectors {
  messages: string;
  ticket: string;
  auth: string;
}

/** Build the three files' contents. Pure and deterministic. */
export function buildVectors(): Vectors {
  const peer = peerKeys();
  const sessions = { locatord: sessionKeysFor('locatord'), matchd: sessionKeysFor('matchd'), peer: peer.punch, peerData: peer.data };
  const exchange = authExchange();
  const ticketJson = buildTicketJson() as { hex: string };
  const vectors: object[] = [
    { name: 'AUTH_REQUEST', hex: exchange.requestHex, meaning: exchange.requestMeaning, note: 'The request of auth.json: exactly 1200 bytes, padding makes up the rest. sealed opens with auth.json derived.sealKeys.request.' },
    { name: 'AUTH_RESPONSE', hex: exchange.responseHex, meaning: exchange.responseMeaning, note: 'The response of auth.json: opens with derived.sealKeys.response, aad = rid.' },
  ];
  for (const v of messageSpecs(ticketJson.hex, peer)) {
    const type = MessageType[v.name];
    const spec = catalog[type];
    const body = fromJsonFields(spec.fields, v.body, v.name);
    let meaning: Record<string, Json> = { name: v.name, type, rid: v.rid, body: v.body };
    let dg: Buffer;
    const extra: Record<string, string> = {};
    if (v.session) {
      const s = sessions[v.session.service];
      const sid = unhex(s.hex.sid);
      const toServer = spec.direction === 'terminal->server';
      dg = sealDatagram(toServer ? s.t2s : s.s2t, encodeDatagram(v.name, unhex(v.rid), body as never, { sid, seq: v.session.seq }));
      meaning = { ...meaning, auth: { sid: s.hex.sid, seq: v.session.seq, mac: hex(dg.subarray(dg.length - 16)) } };
      extra['session'] = v.session.service;
      extra['macKey'] = toServer ? 'terminalToServer' : 'serverToTerminal';
    } else {
      dg = encodeDatagram(v.name, unhex(v.rid), body as never);
    }
    if (v.name === 'REFLECT' && dg.length !== MAX_REFLECT_RESULT) throw new Error(`REFLECT vector is ${dg.length} B, want ${MAX_REFLECT_RESULT}`);
    vectors.push({ name: v.name, hex: hex(dg), meaning, ...extra, note: v.note });
  }
  const messages = {
    description:
      'One or more vectors per devloc message type (src/wire/catalog.ts). hex is the whole UDP payload. ' +
      'meaning: bytes as lowercase hex, addresses as "ip:port" or "[ipv6]:port", body fields by catalog name. ' +
      'Session vectors end with [sid, seq, mac]: mac = HMAC-SHA-256(sessionKeys[session][macKey], hex minus its last 16 bytes), first 16 bytes. ' +
      'Session keys = HKDF-SHA-256(ikm = X25519(service secret, terminal cnf public) = X25519(cnf secret, service public), ' +
      'salt = sid, info = "devloc-session-v1 " + aud, 64 bytes) = terminalToServer (32) || serverToTerminal (32).',
    sessionKeys: { locatord: sessions.locatord.hex, matchd: sessions.matchd.hex, peer: sessions.peer.hex, peerData: sessions.peerData.hex },
    sessionDerivation: {
      terminalCnf: { secret: TERMINAL_CNF_SECRET, public: hex(pairFromSecret('X25519', TERMINAL_CNF_SECRET).public) },
      services: Object.fromEntries(
        (Object.keys(SERVICE_SECRETS) as SessionService[]).map((s) => [s, { secret: SERVICE_SECRETS[s], public: hex(pairFromSecret('X25519', SERVICE_SECRETS[s]).public) }]),
      ),
    },
    peerChannel: peer.json,
    vectors,
  };
  const out = (o: object): string => JSON.stringify(o, null, 2) + '\n';
  return { messages: out(messages), ticket: out(ticketJson), auth: out(exchange.json) };
}

const files = { messages: 'messages.json', ticket: 'ticket.json', auth: 'auth.json' } as const;
export const vectorPath = (name: keyof typeof files): string => fileURLToPath(new URL(files[name], import.meta.url));

function main(): void {
  const v = buildVectors();
  const check = process.argv.includes('--check');
  let stale = false;
  for (const k of Object.keys(files) as (keyof typeof files)[]) {
    const path = vectorPath(k);
    if (check) {
      let current = '';
      try {
        current = readFileSync(path, 'utf8');
      } catch {
        /* missing counts as stale */
      }
      if (current !== v[k]) {
        stale = true;
        console.error(`${files[k]} is not what generate.ts writes`);
      }
    } else {
      writeFileSync(path, v[k]);
      console.log(`wrote ${path}`);
    }
  }
  if (stale) process.exitCode = 1;
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) main();
