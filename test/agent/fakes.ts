// In-process stand-ins for authd and locatord (with its reflector), built on the real
// DatagramServer and ServerSessions, for agent tests that need to provoke what a real server
// rarely does on demand: COOKIE_REQUIRED, RATE_LIMITED, lost sessions, PROBE, short tickets.
// Test-only code.
import type dgram from 'node:dgram';
import { createHash, randomBytes } from 'node:crypto';
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Logger } from '../../src/common/log.js';
import { Metrics } from '../../src/common/metrics.js';
import type { Refusal } from '../../src/net/server.js';
import { bindUdp, DatagramServer } from '../../src/net/server.js';
import { ServerSessions } from '../../src/net/sessions.js';
import type { Address } from '../../src/wire/addr.js';
import { openAuthRequest, sealAuthGrant } from '../../src/wire/auth.js';
import type { MemberEntry } from '../../src/wire/catalog.js';
import { decodeDatagram, encodeDatagram } from '../../src/wire/envelope.js';
import { ErrorCode } from '../../src/wire/errors.js';
import type { KeyFile, RawPair } from '../../src/wire/keys.js';
import { generatePair, keyFileToJson, newDeviceKey, privateKeyObject, publicKeyObject, publicToJson } from '../../src/wire/keys.js';
import { issueTicket, TicketVerifier } from '../../src/wire/ticket.js';

const quietLogger = (lines?: string[]): Logger => new Logger({ service: 'fake', write: (l) => lines?.push(l) });

export interface FakeAuthd {
  addr: Address;
  kid: string;
  sign: RawPair;
  seal: RawPair;
  /** Devices by ID: their Ed25519 public key. */
  devices: Map<string, Buffer>;
  requests: number;
  /** Ask for a cookie before answering (COOKIE_REQUIRED once per source). */
  requireCookie: boolean;
  /** Answer nothing (an authd down or out of reach); requests are still counted. */
  silent: boolean;
  /** Refuse the next N requests with this code. */
  refuseNext: { code: number; count: number; retryAfterMs?: number } | null;
  ticketLifetimeS: number;
  locatordAddr: Address | undefined;
  /** Service public keys by audience (fakeLocatord fills in "locator"). */
  serviceKeys: Map<string, Buffer>;
  locatorIdOf(deviceId: string): Buffer;
  publicKeyJson(): string;
  close(): Promise<void>;
}

export async function fakeAuthd(o: { locatordAddr?: Address; ticketLifetimeS?: number } = {}): Promise<FakeAuthd> {
  const socket = await bindUdp({ host: '127.0.0.1', port: 0 });
  const sign = generatePair('ed25519');
  const seal = generatePair('x25519');
  const kid = randomBytes(4).toString('hex');
  const signKey = privateKeyObject('Ed25519', sign);
  const sealSecret = privateKeyObject('X25519', seal);
  const cookies = new Set<string>();
  const f: FakeAuthd = {
    addr: { ip: '127.0.0.1', port: socket.address().port }, kid, sign, seal, devices: new Map(), requests: 0,
    requireCookie: false, silent: false, refuseNext: null, ticketLifetimeS: o.ticketLifetimeS ?? 3600, locatordAddr: o.locatordAddr, serviceKeys: new Map(),
    locatorIdOf: (id) => createHash('sha256').update(`loc:${id}`).digest().subarray(0, 16),
    publicKeyJson: () => publicToJson({ kind: 'authd-public', kid, sign: sign.public, seal: seal.public }),
    close: () => server.close(),
  };
  const server = new DatagramServer({
    service: 'authd', socket, logger: quietLogger(), metrics: new Metrics(),
    handlers: {
      AUTH_REQUEST: (ctx) => {
        f.requests++;
        if (f.silent) return null;
        if (f.refuseNext && f.refuseNext.count > 0) {
          f.refuseNext.count--;
          const r: Refusal = { error: f.refuseNext.code as Refusal['error'] };
          if (f.refuseNext.retryAfterMs !== undefined) r.retryAfterMs = f.refuseNext.retryAfterMs;
          return r;
        }
        if (f.requireCookie) {
          const have = ctx.msg.body.cookie ? Buffer.from(ctx.msg.body.cookie).toString('hex') : '';
          if (!cookies.has(have)) {
            const c = randomBytes(16);
            cookies.add(c.toString('hex'));
            return { error: ErrorCode.COOKIE_REQUIRED, cookie: c };
          }
        }
        const opened = openAuthRequest(ctx.msg.rid, ctx.msg.body, sealSecret, (deviceId) => {
          const pub = f.devices.get(deviceId);
          return pub ? { ok: true, key: publicKeyObject('Ed25519', pub) } : { ok: false, code: ErrorCode.UNKNOWN_DEVICE, reason: 'unknown device' };
        });
        if (!opened.ok) return { error: opened.code, message: opened.reason };
        const locatorId = f.locatorIdOf(opened.inner.deviceId);
        const now = Math.floor(Date.now() / 1000);
        const tickets = opened.inner.audiences.map((aud) => ({
          aud,
          ticket: issueTicket({ locatorId, aud, iat: now, exp: now + f.ticketLifetimeS, cti: randomBytes(16), cnf: opened.inner.cnf }, Buffer.from(kid, 'hex'), signKey),
          serviceKey: f.serviceKeys.get(aud) ?? Buffer.alloc(32, 9),
          exp: now + f.ticketLifetimeS,
          ...(f.locatordAddr ? { addr: f.locatordAddr } : {}),
        }));
        const sealed = sealAuthGrant(opened.keys, ctx.msg.rid, { locatorId, tickets, nonce: opened.inner.nonce });
        return encodeDatagram('AUTH_RESPONSE', ctx.msg.rid, { sealed });
      },
    },
  });
  return f;
}

interface Registration {
  addr: Address;
  netMode: number;
  nickname?: string;
  sid: string;
  expiresAt: number;
  localAddrs?: Address[];
}

export interface FakeLocatord {
  addr: Address;
  reflector: Address;
  table: Map<string, Registration>;
  groups: Map<string, { name: string; members: Set<string> }>;
  counts: Record<string, number>;
  /** Refuse the next N requests of a type. */
  refuseNext: Map<string, { code: number; count: number; retryAfterMs?: number }>;
  /** Forget every session (as after a crash): the next session message gets NO_SESSION. */
  dropSessions(): void;
  /** Send a PROBE to a registered terminal; resolves when its PROBE_ACK arrives. */
  probe(locatorHex: string, timeoutMs?: number): Promise<boolean>;
  /** Send raw bytes from locatord's socket (forged pushes). */
  sendRaw(bytes: Buffer, to: Address): void;
  /** Leave REFLECT unanswered (udp-blocked / unreachable reflector). */
  reflectorSilent: boolean;
  /** Queries (QUERY_ADDR, QUERY_STATUS) left unanswered, still counted: a locatord gone silent for them. */
  unansweredQueries: boolean;
  /** Answer change-port requests (false: behave like a port-restricted NAT dropped them). */
  answerChangePort: boolean;
  ttlS: number;
  refreshS: number;
  close(): Promise<void>;
}

export async function fakeLocatord(authd: FakeAuthd, o: { ttlS?: number; refreshS?: number; port?: number } = {}): Promise<FakeLocatord> {
  const socket = await bindUdp({ host: '127.0.0.1', port: o.port ?? 0 });
  const reflectSock = await bindUdp({ host: '127.0.0.1', port: 0 });
  const reflectAlt = await bindUdp({ host: '127.0.0.1', port: 0 });
  const service = generatePair('x25519');
  authd.serviceKeys.set('locator', service.public);
  const verifier = new TicketVerifier({ keys: new Map([[authd.kid, publicKeyObject('Ed25519', authd.sign.public)]]), audience: 'locator' });
  let sessions = new ServerSessions({ verifier, serviceSecret: privateKeyObject('X25519', service) });
  const probeWaiters = new Map<string, () => void>();
  const f: FakeLocatord = {
    addr: { ip: '127.0.0.1', port: socket.address().port },
    reflector: { ip: '127.0.0.1', port: reflectSock.address().port },
    table: new Map(), groups: new Map(), counts: {}, refuseNext: new Map(),
    reflectorSilent: false, unansweredQueries: false, answerChangePort: true, ttlS: o.ttlS ?? 60, refreshS: o.refreshS ?? 25,
    dropSessions: () => {
      sessions = new ServerSessions({ verifier, serviceSecret: privateKeyObject('X25519', service) });
      (server as unknown as { opts: { sessions: ServerSessions } }).opts.sessions = sessions;
    },
    probe: (locatorHex, timeoutMs = 3000) => {
      const reg = f.table.get(locatorHex);
      const s = reg ? sessions.get(reg.sid) : undefined;
      if (!reg || !s) return Promise.resolve(false);
      const rid = randomBytes(8);
      const bytes = sessions.encode(s, 'PROBE', rid, {});
      return new Promise((resolve) => {
        const timer = setTimeout(() => resolve(false), timeoutMs);
        probeWaiters.set(rid.toString('hex'), () => {
          clearTimeout(timer);
          resolve(true);
        });
        socket.send(bytes, reg.addr.port, reg.addr.ip);
      });
    },
    sendRaw: (bytes, to) => socket.send(bytes, to.port, to.ip),
    close: async () => {
      await server.close();
      await reflector.close();
      await new Promise<void>((r) => reflectAlt.close(() => r()));
    },
  };
  const count = (n: string): void => {
    f.counts[n] = (f.counts[n] ?? 0) + 1;
  };
  const refused = (n: string): Refusal | null => {
    const r = f.refuseNext.get(n);
    if (!r || r.count <= 0) return null;
    r.count--;
    return { error: r.code as Refusal['error'], ...(r.retryAfterMs !== undefined ? { retryAfterMs: r.retryAfterMs } : {}) };
  };
  const ack = (from: Address, locatorId: Buffer) => ({ observed: from, ttlS: f.ttlS, refreshS: f.refreshS, locatorId });
  const memberOf = (hex: string): MemberEntry => {
    const reg = f.table.get(hex);
    const online = !!reg && reg.expiresAt > Date.now();
    return { id: Buffer.from(hex, 'hex'), online, ...(online && reg ? { addr: reg.addr, netMode: reg.netMode, ...(reg.nickname ? { nickname: reg.nickname } : {}) } : {}) };
  };
  const server: DatagramServer = new DatagramServer({
    service: 'locatord', socket, logger: quietLogger(), metrics: new Metrics(), sessions,
    handlers: {
      REGISTER: (ctx) => {
        count('REGISTER');
        const r = refused('REGISTER');
        if (r) return r;
        const s = ctx.session!;
        const b = ctx.msg.body;
        f.table.set(s.locatorHex, {
          addr: ctx.from, netMode: b.netMode ?? 0, sid: s.sidHex, expiresAt: Date.now() + f.ttlS * 1000,
          ...(b.nickname ? { nickname: b.nickname } : {}), ...(b.localAddrs ? { localAddrs: b.localAddrs } : {}),
        });
        return ctx.reply('REGISTER_ACK', ack(ctx.from, s.locatorId));
      },
      REFRESH: (ctx) => {
        count('REFRESH');
        const r = refused('REFRESH');
        if (r) return r;
        const s = ctx.session!;
        const reg = f.table.get(s.locatorHex);
        if (!reg) return { error: ErrorCode.NO_SESSION, message: 'not registered' };
        reg.addr = ctx.from;
        reg.expiresAt = Date.now() + f.ttlS * 1000;
        if (ctx.msg.body.netMode !== undefined) reg.netMode = ctx.msg.body.netMode;
        return ctx.reply('REFRESH_ACK', ack(ctx.from, s.locatorId));
      },
      UNREGISTER: (ctx) => {
        count('UNREGISTER');
        f.table.delete(ctx.session!.locatorHex);
        return ctx.reply('UNREGISTER_ACK', {});
      },
      QUERY_ADDR: (ctx) => {
        count('QUERY_ADDR');
        if (f.unansweredQueries) return null;
        const start = ctx.msg.body.cursor ?? 0;
        const ids = ctx.msg.body.ids.slice(start);
        // Two entries per page, to exercise paging.
        const page = ids.slice(0, 2);
        const entries = page.map((id) => {
          const hex = Buffer.from(id).toString('hex');
          const reg = f.table.get(hex);
          const online = !!reg && reg.expiresAt > Date.now();
          return {
            id, online,
            ...(online && reg ? { addr: reg.addr, netMode: reg.netMode, ...(reg.nickname ? { nickname: reg.nickname } : {}), ...(reg.localAddrs ? { localAddrs: reg.localAddrs } : {}) } : {}),
          };
        });
        const next = start + page.length;
        return ctx.reply('QUERY_ADDR_RESULT', { entries, ...(next < ctx.msg.body.ids.length ? { nextCursor: next } : {}) });
      },
      QUERY_STATUS: (ctx) => {
        count('QUERY_STATUS');
        if (f.unansweredQueries) return null;
        const online = ctx.msg.body.ids.map((id) => {
          const reg = f.table.get(Buffer.from(id).toString('hex'));
          return !!reg && reg.expiresAt > Date.now();
        });
        return ctx.reply('QUERY_STATUS_RESULT', { online });
      },
      GROUP_CREATE: (ctx) => {
        const gid = randomBytes(16);
        f.groups.set(gid.toString('hex'), { name: ctx.msg.body.name, members: new Set([ctx.session!.locatorHex]) });
        return ctx.reply('GROUP_CREATE_ACK', { groupId: gid });
      },
      GROUP_JOIN: (ctx) => {
        const g = f.groups.get(Buffer.from(ctx.msg.body.groupId).toString('hex'));
        if (!g) return { error: ErrorCode.NOT_FOUND, message: 'no such group' };
        g.members.add(ctx.session!.locatorHex);
        return ctx.reply('GROUP_JOIN_ACK', { groupId: ctx.msg.body.groupId });
      },
      GROUP_LEAVE: (ctx) => {
        f.groups.get(Buffer.from(ctx.msg.body.groupId).toString('hex'))?.members.delete(ctx.session!.locatorHex);
        return ctx.reply('GROUP_LEAVE_ACK', {});
      },
      GROUP_MEMBERS: (ctx) => {
        const g = f.groups.get(Buffer.from(ctx.msg.body.groupId).toString('hex'));
        if (!g) return { error: ErrorCode.NOT_FOUND, message: 'no such group' };
        if (!g.members.has(ctx.session!.locatorHex)) return { error: ErrorCode.FORBIDDEN, message: 'not a member' };
        const members = [...g.members].map(memberOf);
        return ctx.reply('GROUP_MEMBERS_RESULT', { members, total: members.length, name: g.name });
      },
      PROBE_ACK: (ctx) => {
        count('PROBE_ACK');
        const w = probeWaiters.get(Buffer.from(ctx.msg.rid).toString('hex'));
        w?.();
        const reg = f.table.get(ctx.session!.locatorHex);
        if (reg) reg.expiresAt = Date.now() + f.ttlS * 1000;
        return null;
      },
    },
  });
  const reflector = new DatagramServer({
    service: 'reflector', socket: reflectSock, logger: quietLogger(), metrics: new Metrics(),
    handlers: {
      REFLECT: (ctx) => {
        count('REFLECT');
        if (f.reflectorSilent) return null;
        const change = ctx.msg.body.change ?? 0;
        if (change & 2) return null; // no alternate address on loopback
        const altPort = reflectAlt.address().port;
        if (change & 1) {
          if (!f.answerChangePort) return null;
          const bytes = encodeDatagram('REFLECT_RESULT', ctx.msg.rid, { observed: ctx.from, from: { ip: '127.0.0.1', port: altPort }, otherPort: altPort });
          reflectAlt.send(bytes, ctx.from.port, ctx.from.ip);
          return null;
        }
        return ctx.reply('REFLECT_RESULT', { observed: ctx.from, from: f.reflector, otherPort: altPort });
      },
    },
  });
  // The alternate port answers plain REFLECTs too (the mapping test).
  reflectAlt.on('message', (raw: Buffer, rinfo: dgram.RemoteInfo) => {
    if (f.reflectorSilent) return;
    const d = decodeDatagram(raw);
    if (!d.ok || d.msg.name !== 'REFLECT') return;
    const from = { ip: '127.0.0.1', port: reflectAlt.address().port };
    const bytes = encodeDatagram('REFLECT_RESULT', d.msg.rid, { observed: { ip: rinfo.address, port: rinfo.port }, from, otherPort: from.port });
    reflectAlt.send(bytes, rinfo.port, rinfo.address);
  });
  return f;
}

export interface Fixture {
  dir: string;
  identityPath: string;
  authdKeyPath: string;
  device: KeyFile & { kind: 'device' };
  cleanup(): void;
}

/** A temporary directory with a device identity (0600) enrolled in `authd` and authd's public key. */
export function fixture(authd?: FakeAuthd, name = 'dev'): Fixture {
  const dir = mkdtempSync(join(tmpdir(), 'devloc-agent-'));
  const device = newDeviceKey(`${name.toUpperCase()}-${randomBytes(6).toString('hex').toUpperCase()}`) as KeyFile & { kind: 'device' };
  const identityPath = join(dir, 'device.key');
  writeFileSync(identityPath, keyFileToJson(device), { mode: 0o600 });
  chmodSync(identityPath, 0o600);
  const authdKeyPath = join(dir, 'authd.pub');
  if (authd) {
    writeFileSync(authdKeyPath, authd.publicKeyJson());
    authd.devices.set(device.deviceId, device.sign.public);
  }
  return { dir, identityPath, authdKeyPath, device, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

/** Resolve when `pred` holds, polling; reject after `ms`. */
export async function until(pred: () => boolean | Promise<boolean>, ms = 10_000, what = 'condition'): Promise<void> {
  const end = Date.now() + ms;
  for (;;) {
    if (await pred()) return;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}
