// Everything the fuzz targets (and the codec benchmark) need: keys, tickets, the sealed auth
// exchange, session keys and seed datagrams of every message type. Taken from the wire test
// vectors (test/vectors/*.json) when they are there, so seeds are the protocol's reference
// bytes; otherwise generated, so fuzzing never depends on them.
import type { KeyObject } from 'node:crypto';
import { createHmac, createSecretKey } from 'node:crypto';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { ClientSession } from '../src/net/clientsession.js';
import { buildAuthRequestWith, sealAuthGrant } from '../src/wire/auth.js';
import type { AuthGrant, MessageName } from '../src/wire/catalog.js';
import { authGrantFields, catalog, MessageType } from '../src/wire/catalog.js';
import { decodeDatagram, encodeDatagram } from '../src/wire/envelope.js';
import { encodeBody } from '../src/wire/schema.js';
import { generatePair, keyFileToJson, newAuthdKey, newDeviceKey, newServiceKey, privateKeyObject, publicKeyObject, publicOf, publicToJson } from '../src/wire/keys.js';
import type { SealKeys } from '../src/wire/seal.js';
import { deriveSealKeys, openBytes } from '../src/wire/seal.js';
import type { SessionKeys } from '../src/wire/session.js';
import { deriveSessionKeys, rawKey, sealDatagram } from '../src/wire/session.js';
import { encodeClaims, issueTicket } from '../src/wire/ticket.js';
import { messageNames, sampleBody } from './samples.js';

export interface WorldSession {
  sid: Buffer;
  aud: string;
  keys: SessionKeys;
  /** Raw key bytes, for a MAC computed without KeyObjects. */
  t2sRaw: Buffer;
}

export interface World {
  /** Where the seeds came from. */
  source: 'vectors' | 'generated';
  /** Seed datagrams: every catalog type, valid (session ones MACed for `sessions`). */
  datagrams: Buffer[];
  ticket: {
    seeds: Buffer[];
    claims: Buffer[];
    kid: Buffer;
    signKey: KeyObject;
    verifyKeys: Map<string, KeyObject>;
    /** Seconds since the epoch at which the seeds are valid. */
    verifyAt: number;
    audience: string;
  };
  auth: {
    rid: Buffer;
    kid: Buffer;
    ephemeralPublic: Buffer;
    sealSecret: KeyObject;
    sealKeys: SealKeys;
    nonce: Buffer;
    deviceId: string;
    deviceKey: KeyObject;
    requests: Buffer[];
    inners: Buffer[];
    grants: Buffer[];
  };
  /** Sessions a server knows (restored), for MACed seeds to verify. */
  sessions: WorldSession[];
  /** The service's X25519 secret that opens sessions from `ticket.seeds`. */
  serviceSecret: KeyObject;
  /** A terminal's view of the first session (from the ticket grant and the cnf secret). */
  clientSession(): ClientSession | null;
  keyFiles: string[];
}

const hex = (s: unknown): Buffer | null => (typeof s === 'string' && /^([0-9a-f]{2})*$/i.test(s) ? Buffer.from(s, 'hex') : null);

/** The test vector directory, found from this module (fuzz/ or build/fuzz/) or the cwd. */
export function vectorsDir(): string | null {
  const here = path.dirname(fileURLToPath(import.meta.url));
  for (const d of [path.resolve(here, '../test/vectors'), path.resolve(here, '../../test/vectors'), path.resolve(process.cwd(), 'test/vectors')]) {
    if (existsSync(d)) return d;
  }
  return null;
}

function readJson(dir: string, name: string): Record<string, unknown> | null {
  try {
    return JSON.parse(readFileSync(path.join(dir, name), 'utf8')) as Record<string, unknown>;
  } catch {
    return null;
  }
}

/** Every `hex`-named string in a JSON document (any depth): the vectors' wire bytes. */
export function hexStrings(doc: unknown, out: Buffer[] = []): Buffer[] {
  if (Array.isArray(doc)) for (const x of doc) hexStrings(x, out);
  else if (doc && typeof doc === 'object') {
    for (const [k, v] of Object.entries(doc)) {
      if ((k === 'hex' || k.endsWith('Hex')) && typeof v === 'string') {
        const b = hex(v);
        if (b && b.length > 0) out.push(b);
      } else hexStrings(v, out);
    }
  }
  return out;
}

const get = (o: unknown, ...p: string[]): unknown => p.reduce<unknown>((x, k) => (x && typeof x === 'object' ? (x as Record<string, unknown>)[k] : undefined), o);

function x25519Key(secretHex: unknown, publicHex: unknown): KeyObject | null {
  const s = hex(secretHex), p = hex(publicHex);
  if (!s || !p || s.length !== 32 || p.length !== 32) return null;
  try {
    return privateKeyObject('X25519', { secret: s, public: p });
  } catch {
    return null;
  }
}

function ed25519Key(seedHex: unknown, publicHex: unknown): KeyObject | null {
  const s = hex(seedHex), p = hex(publicHex);
  if (!s || !p || s.length !== 32 || p.length !== 32) return null;
  try {
    return privateKeyObject('Ed25519', { secret: s, public: p });
  } catch {
    return null;
  }
}

/** Build the world from vectors where complete, generating what is missing. */
export function buildWorld(opts: { useVectors?: boolean } = {}): World {
  const dir = opts.useVectors === false ? null : vectorsDir();
  const fromVectors = dir ? tryVectors(dir) : null;
  const w = fromVectors ?? generatedWorld();
  // Generated bodies of every type, MACed under the world's sessions, join the seeds either
  // way: vectors hold one example per type, these add the full-field variants.
  w.datagrams.push(...sampleDatagrams(w.sessions));
  w.keyFiles.push(...sampleKeyFiles());
  return w;
}

function tryVectors(dir: string): World | null {
  const messages = readJson(dir, 'messages.json');
  const ticket = readJson(dir, 'ticket.json');
  const auth = readJson(dir, 'auth.json');
  if (!messages || !ticket || !auth) return null;
  const sessions: WorldSession[] = [];
  const sk = get(messages, 'sessionKeys');
  if (sk && typeof sk === 'object') {
    for (const v of Object.values(sk)) {
      const sid = hex(get(v, 'sid')), t2s = hex(get(v, 'terminalToServer')), s2t = hex(get(v, 'serverToTerminal'));
      const aud = get(v, 'aud');
      if (!sid || !t2s || !s2t || typeof aud !== 'string') return null;
      sessions.push({ sid, aud, t2sRaw: t2s, keys: { terminalToServer: secretKey(t2s), serverToTerminal: secretKey(s2t) } });
    }
  }
  const services = get(messages, 'sessionDerivation', 'services');
  const firstService = services && typeof services === 'object' ? Object.values(services)[0] : undefined;
  const serviceSecret = x25519Key(get(firstService, 'secret'), get(firstService, 'public'));
  const servicePublic = hex(get(firstService, 'public'));
  const cnfSecret = x25519Key(get(ticket, 'terminal', 'cnfSecret'), get(ticket, 'terminal', 'cnfPublic'));
  const signKey = ed25519Key(get(ticket, 'authd', 'signSeed'), get(ticket, 'authd', 'signPublic'));
  const kid = hex(get(ticket, 'authd', 'kid'));
  const ticketBytes = hex(get(ticket, 'hex'));
  const claims = hex(get(ticket, 'payloadHex'));
  const verifyAt = get(ticket, 'verifyAt');
  const audience = get(ticket, 'claims', 'aud');
  const sealSecret = x25519Key(get(auth, 'inputs', 'authd', 'sealSecret'), get(auth, 'inputs', 'authd', 'sealPublic'));
  const eph = hex(get(auth, 'inputs', 'ephemeral', 'public'));
  const rid = hex(get(auth, 'inputs', 'rid'));
  const authKid = hex(get(auth, 'inputs', 'authd', 'kid'));
  const nonce = hex(get(auth, 'inputs', 'nonce'));
  const deviceId = get(auth, 'inputs', 'deviceId');
  const devicePub = hex(get(auth, 'inputs', 'device', 'signPublic'));
  const req = hex(get(auth, 'derived', 'sealKeys', 'request'));
  const resp = hex(get(auth, 'derived', 'sealKeys', 'response'));
  const inner = hex(get(auth, 'derived', 'innerHex'));
  const grant = hex(get(auth, 'grant', 'cborHex'));
  const request = hex(get(auth, 'request', 'hex'));
  if (!serviceSecret || !servicePublic || !cnfSecret || !signKey || !kid || !ticketBytes || !claims || typeof verifyAt !== 'number' || typeof audience !== 'string') return null;
  if (!sealSecret || !eph || !rid || !authKid || !nonce || typeof deviceId !== 'string' || !devicePub || !req || !resp || !inner || !grant || !request) return null;
  const datagrams: Buffer[] = [];
  for (const v of (get(messages, 'vectors') as unknown[] | undefined) ?? []) {
    const b = hex(get(v, 'hex'));
    if (b) datagrams.push(b);
  }
  const response = hex(get(auth, 'response', 'hex'));
  if (response) datagrams.push(response);
  datagrams.push(request);
  let deviceKey: KeyObject;
  try {
    deviceKey = publicKeyObject('Ed25519', devicePub);
  } catch {
    return null;
  }
  const extra: Buffer[] = [];
  for (const f of readdirSync(dir).filter((n) => n.endsWith('.json') && !['messages.json', 'ticket.json', 'auth.json'].includes(n))) {
    hexStrings(readJson(dir, f), extra);
  }
  return {
    source: 'vectors',
    datagrams: [...datagrams, ...extra.filter((b) => b.length <= 1400)],
    ticket: {
      seeds: [ticketBytes], claims: [claims], kid, signKey,
      verifyKeys: new Map([[kid.toString('hex'), publicKeyObject('Ed25519', hex(get(ticket, 'authd', 'signPublic'))!)]]),
      verifyAt, audience,
    },
    auth: {
      rid, kid: authKid, ephemeralPublic: eph, sealSecret, sealKeys: { request: req, response: resp }, nonce, deviceId, deviceKey,
      requests: [request], inners: [inner], grants: [grant],
    },
    sessions,
    serviceSecret,
    clientSession: () => ClientSession.fromGrant({ aud: audience, ticket: ticketBytes, serviceKey: servicePublic, exp: verifyAt + 3600 }, cnfSecret),
    keyFiles: [],
  };
}

/** A session key as deriveSessionKeys makes it (an HMAC secret KeyObject). */
function secretKey(raw: Buffer): KeyObject {
  return createSecretKey(raw);
}

function generatedWorld(): World {
  const authd = newAuthdKey() as Extract<ReturnType<typeof newAuthdKey>, { kind: 'authd' }>;
  const service = generatePair('x25519');
  const cnf = generatePair('x25519');
  const device = newDeviceKey('DEVLOC-FUZZ-0001') as Extract<ReturnType<typeof newDeviceKey>, { kind: 'device' }>;
  const verifyAt = 1_767_225_660;
  const kid = Buffer.from(authd.kid, 'hex');
  const signKey = privateKeyObject('Ed25519', authd.sign);
  const cti = Buffer.from('51d0000000000000000000000000000a', 'hex');
  const locatorId = Buffer.from('5ca1ab1e0123456789abcdef00c0ffee', 'hex');
  const input = { locatorId, aud: 'locatord', iat: verifyAt - 60, exp: verifyAt + 3540, cti, cnf: cnf.public };
  const ticket = issueTicket(input, kid, signKey);
  const serviceSecret = privateKeyObject('X25519', service);
  const keys = deriveSessionKeys(privateKeyObject('X25519', cnf), service.public, cti, 'locatord')!;
  const t2sRaw = Buffer.from(rawKey(keys.terminalToServer));
  const sealSecret = privateKeyObject('X25519', authd.seal);
  const rid = Buffer.from('a0a0000000000002', 'hex');
  const eph = generatePair('x25519');
  const nonce = Buffer.from('6e6f6e63652d30303030303030303031', 'hex');
  const built = buildAuthRequestWith({
    rid, deviceId: device.deviceId, deviceKey: privateKeyObject('Ed25519', device.sign), authdKid: kid, authdSealPublic: authd.seal.public,
    audiences: ['locatord'], cnf: cnf.public, timeMs: verifyAt * 1000,
  }, eph, nonce);
  const sealKeys = deriveSealKeys(privateKeyObject('X25519', eph), authd.seal.public, eph.public, authd.seal.public)!;
  const grant: AuthGrant = { locatorId, tickets: [{ aud: 'locatord', ticket, serviceKey: service.public, exp: input.exp }], nonce };
  const sealedGrant = sealAuthGrant(sealKeys, rid, grant);
  // The plaintexts, for the targets that mutate them and seal them again.
  const grantPlain = encodeBody(authGrantFields, grant as unknown as Record<string, unknown>);
  const req = decodeDatagram(built.datagram);
  const innerPlain = req.ok && req.msg.name === 'AUTH_REQUEST'
    ? openBytes(sealKeys.request, req.msg.body.sealed, Buffer.concat([rid, kid, eph.public]))
    : null;
  return {
    source: 'generated',
    datagrams: [built.datagram, encodeDatagram('AUTH_RESPONSE', rid, { sealed: sealedGrant })],
    ticket: {
      seeds: [ticket], claims: [encodeClaims(input)], kid, signKey,
      verifyKeys: new Map([[authd.kid, publicKeyObject('Ed25519', authd.sign.public)]]), verifyAt, audience: 'locatord',
    },
    auth: {
      rid, kid, ephemeralPublic: eph.public, sealSecret, sealKeys, nonce, deviceId: device.deviceId,
      deviceKey: publicKeyObject('Ed25519', device.sign.public), requests: [built.datagram],
      inners: innerPlain ? [innerPlain] : [], grants: [grantPlain],
    },
    sessions: [{ sid: cti, aud: 'locatord', keys, t2sRaw }],
    serviceSecret,
    clientSession: () => ClientSession.fromGrant({ aud: 'locatord', ticket, serviceKey: service.public, exp: input.exp }, privateKeyObject('X25519', cnf)),
    keyFiles: [],
  };
}

/** Valid datagrams of every catalog type (minimal and full bodies), MACed where the type is. */
export function sampleDatagrams(sessions: WorldSession[], seq = 1): Buffer[] {
  const out: Buffer[] = [];
  const rid = Buffer.from('5eed00000000fff0', 'hex');
  for (const name of messageNames) {
    const spec = catalog[MessageType[name]];
    for (const full of [false, true]) {
      const body = sampleBody(name, full);
      if (spec.auth === 'session' && sessions[0]) {
        const s = sessions[0];
        const key = spec.direction === 'server->terminal' ? s.keys.serverToTerminal : s.keys.terminalToServer;
        out.push(sealDatagram(key, encodeDatagram(name as MessageName, rid, body as never, { sid: s.sid, seq: seq++ })));
      } else {
        out.push(encodeDatagram(name as MessageName, rid, body as never));
      }
    }
  }
  return out.filter((d) => d.length <= 1200);
}

/** Key files of every kind, private and public, as text. */
export function sampleKeyFiles(): string[] {
  const keys = [newAuthdKey(), newServiceKey('locatord'), newDeviceKey('DEVLOC-FUZZ-0002')];
  return [...keys.map(keyFileToJson), ...keys.map((k) => publicToJson(publicOf(k)))];
}

/** HMAC of a session datagram with a raw key (the fuzzer reseals mutated datagrams). */
export function macWithRaw(key: Buffer, datagram: Buffer): Buffer {
  const tag = createHmac('sha256', key).update(datagram.subarray(0, datagram.length - 16)).digest().subarray(0, 16);
  tag.copy(datagram, datagram.length - 16);
  return datagram;
}
