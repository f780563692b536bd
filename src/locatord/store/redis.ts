// The Redis backend of the locator store, shared by every locatord instance using it.
//
// Keys (prefix "dl:" by default; "{...}" is the Redis Cluster hash tag, so a terminal's keys
// share one slot and a group's keys another):
//   dl:p:{<locator hex>}  presence: one compact CBOR value (codec.ts), PX = the registration's
//                         remaining TTL: Redis frees expired registrations itself;
//   dl:s:{<sid hex>}      session: locator ID, audience, ticket expiry, authd kid and the two
//                         session keys, sealed (codec.ts), PX = until the ticket expires (+ skew);
//   dl:g:{<group hex>}    group metadata (hash: name, owner, code salt/hash, created, join seq);
//   dl:gm:{<group hex>}   members (sorted set scored by join order: pages are rank ranges);
//   dl:tg:{<locator hex>} the groups a terminal is in (set: limits, shared-group checks);
//   dl:r:{<locator hex>}  a revoked terminal (JSON: code, message, untilMs), PX = until its
//                         last ticket expires: every instance refuses its sessions (issue 19).
//
// Every call is pipelined on its node's connection by the client (redis-client.ts): commands
// go out as they come, without waiting for earlier replies. A query of n IDs is one MGET
// (standalone) or n GETs in flight at once (Cluster, where MGET across slots is refused). Every
// other command names one key, or keys of one hash tag: nothing crosses slots.
//
// An update of a presence record (REFRESH, PROBE_ACK, REGISTER over an existing record,
// UNREGISTER) is a GET, a decision in JavaScript (staleness by session and sequence number, TTL
// grant), and a compare-and-set Lua script (CAS_PRESENCE: write only if the value is still the
// one read), retried on conflict: two instances updating one terminal at once cannot undo each
// other's newer update.
//
// Groups are hard state: run Redis with appendonly (see devloc-locatord(8)) when groups matter;
// group changes are several commands, not a transaction (keys live in different slots), so two
// concurrent joins at a limit may overshoot it by one.
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { DevlocError, ErrorCode } from '../../wire/errors.js';
import type { GroupInfo, GroupLimits } from '../groups.js';
import { GROUP_ID_BYTES } from '../groups.js';
import { decodePresence, decodeSession, encodePresence, encodeSession } from './codec.js';
import type { RedisClientOptions, RedisReply } from './redis-client.js';
import { LuaScript, RedisClient, RedisUnavailable } from './redis-client.js';
import type { GroupBackend, LocatorStore, Presence, PresenceChange, Refused, StoredSession } from './types.js';

export interface RedisStoreOptions extends RedisClientOptions {
  prefix?: string;
  limits: GroupLimits;
  /** Added to session lifetimes (ticket clock skew), ms. */
  sessionGraceMs?: number;
  /** Seals sessions at rest (codec.ts sessionSealKey); every instance must use the same. */
  sessionSealKey: Buffer;
  /** Stamped on every presence record this store writes (Presence.inst). */
  instanceId?: string;
  now?: () => number;
}

/** KEYS[1] presence key; ARGV: expected value ("" = absent), "set" or "del", new value, PX ms. */
const CAS_PRESENCE = new LuaScript(`local cur = redis.call('GET', KEYS[1])
if (cur or '') ~= ARGV[1] then return 0 end
if ARGV[2] == 'del' then redis.call('DEL', KEYS[1]) else redis.call('SET', KEYS[1], ARGV[3], 'PX', ARGV[4]) end
return 1`);

/** Compare-and-set attempts before giving up (TRY_LATER): only a storm of updates to one terminal gets there. */
const CAS_ATTEMPTS = 8;

function hashCode(salt: Uint8Array, code: string): Buffer {
  return createHash('sha256').update(salt).update(code, 'utf8').digest();
}

const asBuf = (v: RedisReply): Buffer | undefined => (Buffer.isBuffer(v) ? v : undefined);

export class RedisStore implements LocatorStore {
  readonly kind = 'redis' as const;
  readonly client: RedisClient;
  readonly groups: GroupBackend;
  private readonly prefix: string;
  private readonly now: () => number;
  private readonly graceMs: number;
  private readonly sealKey: Buffer;
  readonly instanceId: string | undefined;
  /** Compare-and-set conflicts (another instance changed the record in between): retried. */
  casConflicts = 0;

  constructor(o: RedisStoreOptions) {
    this.client = new RedisClient(o);
    this.prefix = o.prefix ?? 'dl:';
    this.now = o.now ?? Date.now;
    this.graceMs = o.sessionGraceMs ?? 0;
    if (o.sessionSealKey.length !== 32) throw new Error('sessionSealKey must be 32 bytes');
    this.sealKey = o.sessionSealKey;
    this.instanceId = o.instanceId;
    this.groups = new RedisGroups(this.client, this.prefix, o.limits, this.now);
  }

  get pending(): number {
    return this.client.pending;
  }

  set limits(l: GroupLimits) {
    (this.groups as RedisGroups).limits = l;
  }

  presenceKey(idHex: string): string {
    return `${this.prefix}p:{${idHex}}`;
  }

  async getPresence(idHex: string): Promise<Presence | undefined> {
    const k = this.presenceKey(idHex);
    const v = asBuf(await this.client.call(['GET', k], k));
    return v ? this.live(decodePresence(v)) : undefined;
  }

  /** Redis expires at ms resolution, but a value read in the last ms must still not be served. */
  private live(p: Presence | undefined): Presence | undefined {
    return p && p.expMs > this.now() ? p : undefined;
  }

  async getPresences(idHexes: readonly string[]): Promise<(Presence | undefined)[]> {
    if (idHexes.length === 0) return [];
    const keys = idHexes.map((h) => this.presenceKey(h));
    let values: RedisReply[];
    if (this.client.cluster) values = await Promise.all(keys.map((k) => this.client.call(['GET', k], k)));
    else {
      const r = await this.client.call(['MGET', ...keys]);
      values = Array.isArray(r) ? r : [];
    }
    return idHexes.map((_, i) => {
      const v = asBuf(values[i] ?? null);
      return v ? this.live(decodePresence(v)) : undefined;
    });
  }

  private encode(p: Presence): Buffer {
    return encodePresence(this.instanceId ? { ...p, inst: this.instanceId } : p);
  }

  async putPresence(idHex: string, p: Presence): Promise<void> {
    const k = this.presenceKey(idHex);
    const ttl = Math.max(1, p.expMs - this.now());
    await this.client.call(['SET', k, this.encode(p), 'PX', ttl], k);
  }

  async updatePresence<T>(idHex: string, change: (cur: Presence | undefined) => PresenceChange<T>): Promise<T> {
    const k = this.presenceKey(idHex);
    for (let attempt = 0; attempt < CAS_ATTEMPTS; attempt++) {
      const raw = asBuf(await this.client.call(['GET', k], k));
      const d = change(raw ? this.live(decodePresence(raw)) : undefined);
      if (!d.put && !d.remove) return d.result;
      if (d.remove && !raw) return d.result;
      const args = d.remove
        ? [raw ?? '', 'del', '', 0]
        : [raw ?? '', 'set', this.encode(d.put!), Math.max(1, d.put!.expMs - this.now())];
      if ((await this.client.eval(CAS_PRESENCE, k, args)) === 1) return d.result;
      this.casConflicts++;
    }
    throw new RedisUnavailable(`presence ${idHex}: changed concurrently ${CAS_ATTEMPTS} times`, 100);
  }

  async deletePresence(idHex: string): Promise<boolean> {
    const k = this.presenceKey(idHex);
    return (await this.client.call(['DEL', k], k)) === 1;
  }

  async refuse(idHex: string, r: Refused): Promise<void> {
    const k = `${this.prefix}r:{${idHex}}`;
    const ttl = Math.ceil(r.untilMs - this.now());
    if (ttl <= 0) return;
    await this.client.call(['SET', k, JSON.stringify(r), 'PX', ttl], k);
  }

  async refusal(idHex: string): Promise<Refused | undefined> {
    const k = `${this.prefix}r:{${idHex}}`;
    const v = asBuf(await this.client.call(['GET', k], k));
    if (!v) return undefined;
    try {
      const o = JSON.parse(v.toString('utf8')) as Refused;
      return typeof o.code === 'number' && typeof o.untilMs === 'number' ? { code: o.code, message: String(o.message ?? ''), untilMs: o.untilMs } : undefined;
    } catch {
      return undefined;
    }
  }

  async saveSession(s: StoredSession): Promise<void> {
    const k = `${this.prefix}s:{${s.sidHex}}`;
    const ttl = s.exp * 1000 + this.graceMs - this.now();
    if (ttl <= 0) return;
    await this.client.call(['SET', k, encodeSession(s, this.sealKey), 'PX', ttl], k);
  }

  async loadSession(sidHex: string): Promise<StoredSession | undefined> {
    const k = `${this.prefix}s:{${sidHex}}`;
    const v = asBuf(await this.client.call(['GET', k], k));
    return v ? decodeSession(sidHex, v, this.sealKey) : undefined;
  }

  /** Bytes Redis uses in all (INFO memory used_memory), for the bench. */
  async usedMemory(): Promise<number> {
    const r = asBuf(await this.client.call(['INFO', 'memory']));
    const m = /used_memory:(\d+)/.exec(r?.toString() ?? '');
    return m ? Number(m[1]) : 0;
  }

  async close(): Promise<void> {
    this.client.close();
  }
}

class RedisGroups implements GroupBackend {
  constructor(
    private readonly r: RedisClient,
    private readonly prefix: string,
    public limits: GroupLimits,
    private readonly now: () => number,
  ) {}

  private meta(gid: Buffer): string {
    return `${this.prefix}g:{${gid.toString('hex')}}`;
  }

  private mem(gid: Buffer): string {
    return `${this.prefix}gm:{${gid.toString('hex')}}`;
  }

  private of(loc: Buffer): string {
    return `${this.prefix}tg:{${loc.toString('hex')}}`;
  }

  private async checkRoomFor(loc: Buffer): Promise<void> {
    const k = this.of(loc);
    if (((await this.r.call(['SCARD', k], k)) as number) >= this.limits.maxGroupsPerTerminal) {
      throw new DevlocError(ErrorCode.FULL, `terminal is in ${this.limits.maxGroupsPerTerminal} groups already`);
    }
  }

  private async addMember(gid: Buffer, loc: Buffer): Promise<void> {
    const mk = this.meta(gid);
    const seq = (await this.r.call(['HINCRBY', mk, 'seq', 1], mk)) as number;
    const gm = this.mem(gid);
    const tg = this.of(loc);
    await Promise.all([this.r.call(['ZADD', gm, 'NX', seq, loc], gm), this.r.call(['SADD', tg, gid], tg)]);
  }

  /** Create `gid`; false when it exists already (created concurrently). */
  private async insertGroup(gid: Buffer, owner: Buffer, name: string, joinCode: string | undefined): Promise<boolean> {
    await this.checkRoomFor(owner);
    const mk = this.meta(gid);
    // The owner field is the creation lock: only one creator of a given group ID wins.
    if ((await this.r.call(['HSETNX', mk, 'owner', owner], mk)) !== 1) return false;
    const fields: (string | Buffer | number)[] = ['name', name, 'created', this.now()];
    if (joinCode !== undefined) {
      const salt = randomBytes(16);
      fields.push('salt', salt, 'hash', hashCode(salt, joinCode));
    }
    await this.r.call(['HSET', mk, ...fields], mk);
    await this.addMember(gid, owner);
    return true;
  }

  async create(owner: Buffer, name: string, joinCode?: string): Promise<Buffer> {
    const id = randomBytes(GROUP_ID_BYTES);
    await this.insertGroup(id, owner, name, joinCode);
    return id;
  }

  private async joinOne(gid: Buffer, loc: Buffer, joinCode: string | undefined, createIfMissing: boolean): Promise<boolean> {
    const mk = this.meta(gid);
    const gm = this.mem(gid);
    const [meta, score, count] = await Promise.all([
      this.r.call(['HMGET', mk, 'owner', 'salt', 'hash'], mk),
      this.r.call(['ZSCORE', gm, loc], gm),
      this.r.call(['ZCARD', gm], gm),
    ]);
    const [owner, salt, hash] = (Array.isArray(meta) ? meta : []).map(asBuf);
    if (!owner) {
      if (!createIfMissing) throw new DevlocError(ErrorCode.NOT_FOUND, 'no such group');
      if (await this.insertGroup(gid, loc, '', joinCode)) return true;
      return this.joinOne(gid, loc, joinCode, false);
    }
    if (score !== null) return false;
    if (hash && salt) {
      const ok = joinCode !== undefined && timingSafeEqual(hashCode(salt, joinCode), hash);
      if (!ok) throw new DevlocError(ErrorCode.FORBIDDEN, joinCode === undefined ? 'group is closed: join code required' : 'wrong join code');
    }
    if ((count as number) >= this.limits.maxMembers) throw new DevlocError(ErrorCode.FULL, `group has ${this.limits.maxMembers} members already`);
    await this.checkRoomFor(loc);
    await this.addMember(gid, loc);
    return true;
  }

  join(groupId: Buffer, locatorId: Buffer, joinCode?: string): Promise<boolean> {
    return this.joinOne(groupId, locatorId, joinCode, false);
  }

  async joinAll(locatorId: Buffer, joins: readonly { groupId: Uint8Array; joinCode?: string }[]): Promise<number> {
    // Checked first, then applied: a refused join (closed group, full) changes nothing; unlike
    // SQLite this is not one transaction, so a concurrent change between may still slip in.
    const k = this.of(locatorId);
    const mine = await this.r.call(['SMEMBERS', k], k);
    const have = new Set((Array.isArray(mine) ? mine : []).map((b) => (b as Buffer).toString('hex')));
    const pending = joins.filter((j) => !have.has(Buffer.from(j.groupId).toString('hex')));
    if (pending.length === 0) return 0;
    if (have.size + pending.length > this.limits.maxGroupsPerTerminal) {
      throw new DevlocError(ErrorCode.FULL, `terminal is in ${this.limits.maxGroupsPerTerminal} groups already`);
    }
    let n = 0;
    for (const j of pending) if (await this.joinOne(Buffer.from(j.groupId), locatorId, j.joinCode, true)) n++;
    return n;
  }

  async leave(groupId: Buffer, locatorId: Buffer): Promise<boolean> {
    const gm = this.mem(groupId);
    const tg = this.of(locatorId);
    const [removed] = await Promise.all([this.r.call(['ZREM', gm, locatorId], gm), this.r.call(['SREM', tg, groupId], tg)]);
    if (removed !== 1) return false;
    if ((await this.r.call(['ZCARD', gm], gm)) === 0) {
      const mk = this.meta(groupId);
      await Promise.all([this.r.call(['DEL', mk], mk), this.r.call(['DEL', gm], gm)]);
    }
    return true;
  }

  async get(groupId: Buffer): Promise<GroupInfo | undefined> {
    const mk = this.meta(groupId);
    const gm = this.mem(groupId);
    const [meta, count] = await Promise.all([this.r.call(['HMGET', mk, 'owner', 'name', 'hash', 'created'], mk), this.r.call(['ZCARD', gm], gm)]);
    const [owner, name, hash, created] = (Array.isArray(meta) ? meta : []).map(asBuf);
    if (!owner) return undefined;
    return { id: groupId, name: name?.toString('utf8') ?? '', owner, closed: hash !== undefined, createdMs: Number(created?.toString() ?? 0), members: count as number };
  }

  async isMember(groupId: Buffer, locatorId: Buffer): Promise<boolean> {
    const gm = this.mem(groupId);
    return (await this.r.call(['ZSCORE', gm, locatorId], gm)) !== null;
  }

  async members(groupId: Buffer, offset: number, limit: number): Promise<Buffer[]> {
    if (limit <= 0) return [];
    const gm = this.mem(groupId);
    const r = await this.r.call(['ZRANGE', gm, offset, offset + limit - 1], gm);
    return (Array.isArray(r) ? r : []).filter(Buffer.isBuffer);
  }

  async shareGroup(a: Buffer, b: Buffer): Promise<boolean> {
    const ka = this.of(a);
    const kb = this.of(b);
    const [ga, gb] = await Promise.all([this.r.call(['SMEMBERS', ka], ka), this.r.call(['SMEMBERS', kb], kb)]);
    if (!Array.isArray(ga) || !Array.isArray(gb) || ga.length === 0 || gb.length === 0) return false;
    const set = new Set(ga.map((x) => (x as Buffer).toString('hex')));
    return gb.some((x) => set.has((x as Buffer).toString('hex')));
  }
}
