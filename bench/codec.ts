// The codec section: encode/decode per message type (the wire vectors when present, else
// generated bodies), ticket verification uncached and cached, session MAC, session opening
// (X25519 + HKDF), the authd side of the auth exchange, and Ed25519 sign/verify in
// node:crypto against @noble/curves (the README's reason for node:crypto).
import { randomBytes } from 'node:crypto';
import { ed25519 } from '@noble/curves/ed25519.js';
import { buildWorld } from '../fuzz/world.js';
import { openAuthRequest } from '../src/wire/auth.js';
import type { MessageName } from '../src/wire/catalog.js';
import { decodeDatagram, encodeDatagram } from '../src/wire/envelope.js';
import { ErrorCode } from '../src/wire/errors.js';
import { ed25519Sign, ed25519Verify, generatePair, privateKeyObject, publicKeyObject } from '../src/wire/keys.js';
import { SessionMacs } from '../src/wire/hmac-sha256.js';
import { deriveSessionKeys, rawKey, sealDatagram, verifyDatagram } from '../src/wire/session.js';
import { issueTicket, TicketVerifier } from '../src/wire/ticket.js';
import { measure } from './micro.js';
import type { BenchContext, BenchResult } from './types.js';

export async function runCodec(ctx: BenchContext): Promise<BenchResult[]> {
  const w = buildWorld();
  const out: BenchResult[] = [];
  const row = (name: string, opsPerS: number, extra?: Record<string, unknown>): void => {
    out.push({ section: 'codec', name, value: opsPerS, unit: 'ops/s', ...(extra ? { extra } : {}) });
  };
  const perType = ctx.seconds / 12;
  const perItem = ctx.seconds / 3;

  // One datagram per message type: the first vector of each (or a generated one).
  const byName = new Map<MessageName, Buffer>();
  for (const d of w.datagrams) {
    const r = decodeDatagram(d);
    if (r.ok && !byName.has(r.msg.name)) byName.set(r.msg.name, d);
  }
  ctx.log(`codec: ${byName.size} message types from ${w.source}, ${perType.toFixed(2)} s each way`);
  for (const [name, bytes] of byName) {
    const r = decodeDatagram(bytes);
    if (!r.ok) continue;
    const m = r.msg;
    row(`decode ${name} (${bytes.length} B)`, measure(() => decodeDatagram(bytes), perType).opsPerS, { bytes: bytes.length });
    row(`encode ${name} (${bytes.length} B)`, measure(() => encodeDatagram(m.name, m.rid, m.body as never, m.auth), perType).opsPerS, { bytes: bytes.length });
  }

  // Tickets: a fresh signature check each time (distinct tickets, a one-entry cache), then hits.
  const tickets = Array.from({ length: 256 }, () =>
    issueTicket({ locatorId: randomBytes(16), aud: w.ticket.audience, iat: w.ticket.verifyAt - 60, exp: w.ticket.verifyAt + 3540, cti: randomBytes(16), cnf: randomBytes(32) }, w.ticket.kid, w.ticket.signKey));
  const uncached = new TicketVerifier({ keys: w.ticket.verifyKeys, audience: w.ticket.audience, now: () => w.ticket.verifyAt, cacheMax: 1 });
  let i = 0;
  const u = measure(() => uncached.verify(tickets[i++ % tickets.length]!), perItem);
  if (!uncached.verify(tickets[0]!).ok) throw new Error('bench tickets do not verify');
  row(`ticket verify, uncached (${tickets[0]!.length} B)`, u.opsPerS, { signatureChecks: uncached.signatureChecks });
  const cached = new TicketVerifier({ keys: w.ticket.verifyKeys, audience: w.ticket.audience, now: () => w.ticket.verifyAt });
  row('ticket verify, cached', measure(() => cached.verify(tickets[0]!), perItem).opsPerS, { signatureChecks: cached.signatureChecks });

  // Session MAC: seal and verify one REFRESH-sized datagram.
  const s = w.sessions[0]!;
  const refresh = encodeDatagram('REFRESH', randomBytes(8), {}, { sid: s.sid, seq: 7 });
  row(`session MAC seal + verify (${refresh.length} B), node:crypto createHmac (terminals)`, measure(() => verifyDatagram(s.keys.terminalToServer, sealDatagram(s.keys.terminalToServer, refresh)), perItem).opsPerS);
  // What locatord uses (wire/hmac-sha256.ts): one key, so its pads stay cached.
  const macs = new SessionMacs(16);
  const key = rawKey(s.keys.terminalToServer);
  row(`session MAC seal + verify (${refresh.length} B), SessionMacs, pads cached (locatord)`, measure(() => {
    macs.seal(key, refresh);
    if (!macs.verify(key, refresh)) throw new Error('SessionMacs does not verify its own MAC');
  }, perItem).opsPerS);
  const service = generatePair('x25519');
  const serviceSecret = privateKeyObject('X25519', service);
  const cnf = randomBytes(32);
  cnf[31] = cnf[31]! & 0x7f;
  const cti = randomBytes(16);
  row('session open: X25519 + HKDF', measure(() => deriveSessionKeys(serviceSecret, cnf, cti, 'locatord'), perItem).opsPerS);

  // authd's work per request (before its own database lookups): X25519, HKDF, ChaCha20-Poly1305, Ed25519 verify.
  const req = decodeDatagram(w.auth.requests[0]!);
  if (req.ok && req.msg.name === 'AUTH_REQUEST') {
    const body = req.msg.body;
    const rid = req.msg.rid;
    const lookup = (id: string) => (id === w.auth.deviceId ? { ok: true as const, key: w.auth.deviceKey } : { ok: false as const, code: ErrorCode.UNKNOWN_DEVICE, reason: '' });
    if (!openAuthRequest(rid, body, w.auth.sealSecret, lookup).ok) throw new Error('auth vector does not open');
    row('auth request open (authd side)', measure(() => openAuthRequest(rid, body, w.auth.sealSecret, lookup), perItem).opsPerS);
  }

  // Ed25519: node:crypto (OpenSSL) against @noble/curves (pure JS), same key and message.
  const pair = generatePair('ed25519');
  const sk = privateKeyObject('Ed25519', pair);
  const pk = publicKeyObject('Ed25519', pair.public);
  const msg = tickets[0]!.subarray(0, 180);
  const sig = ed25519Sign(sk, msg);
  const nobleSig = ed25519.sign(msg, pair.secret);
  if (!Buffer.from(nobleSig).equals(sig) || !ed25519.verify(sig, msg, pair.public) || !ed25519Verify(pk, msg, nobleSig)) {
    throw new Error('node:crypto and @noble/curves disagree on Ed25519');
  }
  const nodeSign = measure(() => ed25519Sign(sk, msg), perItem).opsPerS;
  const nodeVerify = measure(() => ed25519Verify(pk, msg, sig), perItem).opsPerS;
  const nobleSign = measure(() => ed25519.sign(msg, pair.secret), perItem).opsPerS;
  const nobleVerify = measure(() => ed25519.verify(sig, msg, pair.public), perItem).opsPerS;
  row('Ed25519 sign, node:crypto', nodeSign, { vsNoble: nodeSign / nobleSign });
  row('Ed25519 sign, @noble/curves', nobleSign);
  row('Ed25519 verify, node:crypto', nodeVerify, { vsNoble: nodeVerify / nobleVerify });
  row('Ed25519 verify, @noble/curves', nobleVerify);
  return out;
}
