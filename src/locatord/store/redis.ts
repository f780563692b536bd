// The Redis backend of the locator store, shared by every locatord instance using it.
//
// Keys (prefix "dl:" by default; "{...}" is the Redis Cluster hash tag, so a terminal's keys
// share one slot and a group's keys another):
//   dl:p:{<locator hex>}  presence: one compact CBOR value (codec.ts), PX = the registration's
//                         remaining TTL: Redis frees expired registrations itself;
//   dl:s:{<sid hex>}      session: locator ID, audience, ticket expiry, authd kid and the two
//                         session keys, sealed (codec.ts), PX = until the ticket expires (+ skew);
//   dl:g:{<group hex>}    group metadata (hash: name, owner, code key, created, join seq, mac);
//   dl:jf:{<hex>}         failed join proofs of a terminal or a group in the current window (counter);
//   dl:gm:{<group hex>}   members (sorted set scored by join order: pages are rank ranges);
//   dl:tg:{<locator hex>} the groups a terminal is in (set: limits, shared-group checks);
//   dl:w:{<locator hex>}  what a terminal watches (hash: target hex -> last view pushed, followed
//                         by a tag over (watcher, target, view));
//   dl:wb:{<locator hex>} who watches a terminal (set: each member a watcher's locator ID followed
//                         by a tag over (target, watcher); a watcher gone is removed when found
//                         gone, lazily).
//   dl:sl:{<media hash>}  the partner-search index of a media ID (hash: first 16 bytes of its
//                         SHA-256, hex): the terminals looking for a partner with it, a sorted
//                         set of score 0 (pages are ZRANGEBYLEX from the last ID answered);
//   dl:sx:{<media hash>}  the same IDs scored by the expiry of the record indexed: each write to
//                         the index trims entries expired (at most 32 per write), and every
//                         instance's sweep walks the media hashes of dl:sm (a cursor, a few per
//                         sweep) trimming each; an UNREGISTER, a kick or a revocation drops the
//                         entry at once. So the index holds the live records plus those expired
//                         since the sweeps last passed their media ID, whether or not anybody
//                         searches or registers under it again;
//   dl:sm                 the media hashes whose index may hold entries (set; a hash leaves it
//                         when the sweep finds its index empty).
//   dl:rb:{<locator hex>}<first 16 hex of the sid>  the session's replay window shared by every
//                         instance (a 72-byte string: the highest sequence number taken, then
//                         per slot of the window a 1-byte fingerprint of the source it was taken
//                         for; CLAIM_SEQ), PX = until the ticket expires (+ skew). (Until
//                         2026-12-04 136 bytes with 2-byte fingerprints under dl:rs:, read and
//                         converted when dl:rb: is absent, READ_WINDOW; until issue 16 a hash
//                         under dl:rw:, ~2.2 KB once full.)
//
// Records are authenticated (codec.ts recordKey, from the service key): a presence value ends
// with a tag over the locator ID and the value; a group's metadata hash has a "mac" field over
// the group ID and its fields; a member of dl:gm is the locator ID followed by a tag over (group,
// locator), a member of dl:tg the group ID followed by a tag over (locator, group); a member of
// dl:wb the watcher's ID with a tag over (target, watcher), a view in dl:w the view with a tag
// over (watcher, target, view) (a planted watcher would get pushes it never asked for). Whoever can
// write Redis without the service key cannot make one: a record that does not verify is treated
// as absent and reported (onRejected: a metric and a log line). What a Redis writer can still do
// is delete, and put back a record (or membership) that was once genuine for that same key;
// presence records carry their expiry, so an old one is not served past it.
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
import { createHash, hkdfSync, randomBytes, timingSafeEqual } from 'node:crypto';
import { DevlocError, ErrorCode } from '../../wire/errors.js';
import type { CodeProof, GroupInfo, GroupLimits, JoinFailureCounts, JoinRequest } from '../groups.js';
import { GROUP_ID_BYTES, JOIN_FAILURE_LIMITS } from '../groups.js';
import { KeyedHmac } from '../../wire/hmac-sha256.js';
import { decodePresence, decodeSession, encodePresence, encodeSession, openRecord, RECORD_KEY_LABEL, RECORD_TAG_BYTES, recordTag, tagRecord } from './codec.js';
import type { ClaimVerdict, DeferredClaim, ServerSession, WindowOwner } from '../../net/sessions.js';
import { REPLAY_WINDOW } from '../../wire/constants.js';
import { searchMediaOf } from '../search-index.js';
import type { RedisClientOptions, RedisReply } from './redis-client.js';
import { BatchedScript, LuaScript, RedisClient, RedisUnavailable } from './redis-client.js';
import type { GroupBackend, LocatorStore, Presence, PresenceChange, Refused, SearchBackend, StoredSession, WatchBackend } from './types.js';

export interface RedisStoreOptions extends RedisClientOptions {
  prefix?: string;
  limits: GroupLimits;
  /** Added to session lifetimes (ticket clock skew), ms. */
  sessionGraceMs?: number;
  /** Seals sessions at rest (codec.ts sessionSealKey); every instance must use the same. */
  sessionSealKey: Buffer;
  /**
   * Authenticates presence and group records (codec.ts recordKey); every instance must use the
   * same. Default: derived from sessionSealKey.
   */
  recordKey?: Buffer;
  /** A record failed verification (forged or altered in Redis) and was treated as absent. */
  onRejected?: (kind: RejectedRecord, key: string) => void;
  /** Stamped on every presence record this store writes (Presence.inst). */
  instanceId?: string;
  /** Presence values remembered to skip an update's GET (see RedisStore.lastValue); default 0 (none). */
  presenceCacheEntries?: number;
  now?: () => number;
}

/**
 * The presence compare-and-set (Lua): write `value` with PX `px` ms, or delete when `op` is "del",
 * only if `key` still holds `expected` ("" = absent). 1 when done; otherwise what the key holds
 * instead (0 = absent), so that the caller decides again without a GET.
 */
const CAS_FN = `local function cas(key, expected, op, value, px)
  local cur = redis.call('GET', key)
  if (cur or '') ~= expected then return cur or 0 end
  if op == 'del' then redis.call('DEL', key) else redis.call('SET', key, value, 'PX', px) end
  return 1
end
`;

/** KEYS[1] presence key; ARGV: expected value ("" = absent), "set" or "del", new value, PX ms (CAS_FN). */
const CAS_PRESENCE = new BatchedScript(`${CAS_FN}return cas(KEYS[1], ARGV[1], ARGV[2], ARGV[3], ARGV[4])`, 1, 4);

/** KEYS[1] a watcher's hash; ARGV: max, then target/view pairs. The new count, or -1 beyond max. */
const WATCH_ADD = new LuaScript(`local n = redis.call('HLEN', KEYS[1])
local fresh = 0
for i = 2, #ARGV, 2 do if redis.call('HEXISTS', KEYS[1], ARGV[i]) == 0 then fresh = fresh + 1 end end
if n + fresh > tonumber(ARGV[1]) then return -1 end
for i = 2, #ARGV, 2 do redis.call('HSETNX', KEYS[1], ARGV[i], ARGV[i + 1]) end
return n + fresh`);

/**
 * KEYS[1] a watcher's hash; ARGV: target, tagged view. The value it replaced when the pair is
 * watched and its view changed (now set; the caller verifies the old one), else 0.
 */
const WATCH_SWAP = new LuaScript(`local cur = redis.call('HGET', KEYS[1], ARGV[1])
if not cur or cur == ARGV[2] then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return cur`);

/** What a record failing verification was (redis_records_rejected_total{kind}). */
export type RejectedRecord = 'presence' | 'session' | 'group' | 'member' | 'membership' | 'watcher' | 'watch';

/**
 * The session's window as CLAIM_SEQ and RELEASE_SEQ read it (Lua, `w` its size; KEYS[1] its key,
 * KEYS[2] the key of the layout of before): the value and, when it was converted from that
 * layout, the milliseconds that window had left (a write then creates KEYS[1] with them). The
 * layout of before (dl:rs:, until 2026-12-04) held a 2-byte fingerprint per slot, 8 + 2w bytes;
 * one becomes its two bytes xored (0 kept for a free slot, else never 0), which is how
 * sourceFingerprint folds the one it computes: a window taken before the upgrade keeps refusing
 * what it took. The old key is left to expire: an instance of before still using it during a
 * rolling upgrade does not read the new layout (their windows are not shared meanwhile).
 */
const READ_WINDOW = `local function window(w)
  local v = redis.call('GET', KEYS[1])
  if v then return v, nil end
  local old = redis.call('GET', KEYS[2])
  if not old or #old ~= 8 + 2 * w then return nil, nil end
  local ttl = redis.call('PTTL', KEYS[2])
  if ttl <= 0 then return nil, nil end
  local t = {string.sub(old, 1, 8)}
  for j = 0, w - 1 do
    local a, b = string.byte(old, 9 + 2 * j, 10 + 2 * j)
    local f = bit.bxor(a, b)
    if f == 0 and a ~= 0 then f = 1 end
    t[#t + 1] = string.char(f)
  end
  return table.concat(t), ttl
end
`;

/**
 * KEYS[1] the session's window, one string: the highest sequence number taken (8-byte double,
 * big-endian), then one byte per number of the window (number % window size): 0 when the number
 * is not taken, else a fingerprint of the source it was taken for (never 0). `claim`'s arguments:
 * sequence number, window size, PX ms, fingerprint of the source (1 byte). Returns 0 (taken), 1
 * (already taken), 2 (left of the window) or 3 (already taken for a source with this
 * fingerprint: a retransmission whose first copy another instance took): ReplayWindow's check
 * and accept in one step, so two instances given the same datagram cannot both take it.
 * Sequence numbers stay below 2^53, exact in Lua's doubles (and % 64 is exact on them). A slot
 * holds only a number of the window (highest - size, highest]: moving the highest up clears the
 * slots of the numbers it passes over. The expiry is set when the window is created (a
 * session's lifetime is fixed by its ticket). A 72-byte string, ~225 bytes of Redis per session
 * with its key (136 bytes and ~305 with 2-byte fingerprints; a hash of decimal strings took ~2.2
 * KB once full).
 */
const CLAIM_FN = `local function claim(seq, w, px, fp)
  local i = 9 + seq % w
  local v, converted = window(w)
  local h = -1
  if v then h = struct.unpack('>d', v) end
  if seq + w <= h then return 2 end
  if seq <= h then
    local cur = string.sub(v, i, i)
    if cur == fp then return 3 end
    if cur ~= '\\0' then return 1 end
    if converted then redis.call('SET', KEYS[1], string.sub(v, 1, i - 1) .. fp .. string.sub(v, i + 1), 'PX', converted) else redis.call('SETRANGE', KEYS[1], i - 1, fp) end
    return 0
  end
  local slots
  if not v or seq - h >= w then slots = string.rep('\\0', w) else
    slots = string.sub(v, 9)
    for n = h + 1, seq - 1 do
      local j = n % w + 1
      slots = string.sub(slots, 1, j - 1) .. '\\0' .. string.sub(slots, j + 1)
    end
  end
  slots = string.sub(slots, 1, i - 9) .. fp .. string.sub(slots, i - 7)
  if converted then redis.call('SET', KEYS[1], struct.pack('>d', seq) .. slots, 'PX', converted)
  elseif v then redis.call('SET', KEYS[1], struct.pack('>d', seq) .. slots, 'KEEPTTL')
  else redis.call('SET', KEYS[1], struct.pack('>d', seq) .. slots, 'PX', px) end
  return 0
end
`;

/** KEYS[1] the session's window, KEYS[2] its key of before (READ_WINDOW); ARGV: sequence number, window size, PX ms, fingerprint (CLAIM_FN). */
const CLAIM_SEQ = new LuaScript(`${READ_WINDOW}${CLAIM_FN}return claim(tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3], ARGV[4])`);

/**
 * A REFRESH's two steps in one script (one round trip instead of two): CLAIM_SEQ on KEYS[1..2]
 * with ARGV[1..4], then, only if the number was taken, CAS_PRESENCE on KEYS[3] with ARGV[5..8].
 * The keys share the terminal's hash tag, so one Cluster slot. Returns 10 + CLAIM_SEQ's answer
 * when the claim is refused (11, 12, 13: nothing written); otherwise the compare-and-set's (1
 * done, 0 or a value: the record changed, the number is taken all the same).
 */
const CLAIM_AND_CAS = new BatchedScript(`${READ_WINDOW}${CLAIM_FN}${CAS_FN}local c = claim(tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3], ARGV[4])
if c ~= 0 then return 10 + c end
return cas(KEYS[3], ARGV[5], ARGV[6], ARGV[7], ARGV[8])`, 3, 8);

/** KEYS[1] the session's window; ARGV: sequence number, window size: untake it (a "try again" answer). */
const RELEASE_SEQ = new LuaScript(`${READ_WINDOW}local seq = tonumber(ARGV[1])
local w = tonumber(ARGV[2])
local v, converted = window(w)
if not v then return 0 end
local h = struct.unpack('>d', v)
if seq > h or seq + w <= h then return 0 end
local i = 9 + seq % w
if string.sub(v, i, i) == '\\0' then return 0 end
if converted then redis.call('SET', KEYS[1], string.sub(v, 1, i - 1) .. '\\0' .. string.sub(v, i + 1), 'PX', converted) else redis.call('SETRANGE', KEYS[1], i - 1, '\\0') end
return 1`);

/**
 * The 1-byte fingerprint of a datagram's source ("ip|port") in the shared window (FNV-1a, folded
 * to 16 bits and then to 8; never 0, which marks a free slot). Two sources with one fingerprint
 * (1 in 256) only turn a replay's REPLAY answer into silence (taken as a retransmission): either
 * way it is refused.
 */
export function sourceFingerprint(source: string): Buffer {
  let x = 0x811c9dc5;
  for (let k = 0; k < source.length; k++) x = Math.imul(x ^ source.charCodeAt(k), 0x01000193);
  const f16 = ((x >>> 16) ^ x) & 0xffff || 1;
  return Buffer.from([((f16 >>> 8) ^ f16) & 0xff || 1]);
}

/** KEYS[1] group metadata; ARGV: owner, then field/value pairs: create only if absent, all fields at once. */
const CREATE_GROUP = new LuaScript(`if redis.call('HSETNX', KEYS[1], 'owner', ARGV[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV, 2))
return 1`);

/** Compare-and-set attempts before giving up (TRY_LATER): only a storm of updates to one terminal gets there. */
const CAS_ATTEMPTS = 8;

const asBuf = (v: RedisReply): Buffer | undefined => (Buffer.isBuffer(v) ? v : undefined);

/** CLAIM_SEQ's arguments. */
const claimArgs = (seq: number, ttlMs: number, source: string): (string | number | Buffer)[] =>
  [String(seq), REPLAY_WINDOW, Math.max(1, Math.ceil(ttlMs)), sourceFingerprint(source)];

/** CLAIM_SEQ's answer (0-3) as a verdict. */
const claimVerdict = (r: RedisReply): ClaimVerdict => (r === 0 ? 'ok' : r === 2 ? 'old' : r === 3 ? 'elsewhere' : 'replay');

export class RedisStore implements LocatorStore {
  readonly kind = 'redis' as const;
  readonly client: RedisClient;
  readonly groups: GroupBackend;
  readonly watches: WatchBackend;
  readonly search: RedisSearch;
  private readonly prefix: string;
  private readonly now: () => number;
  private readonly graceMs: number;
  private readonly sealKey: Buffer;
  /** The record key's HMAC (codec.ts recordTag), shared with the groups and watches. */
  private readonly recordMac: KeyedHmac;
  private readonly onRejected: (kind: RejectedRecord, key: string) => void;
  readonly instanceId: string | undefined;
  /** Compare-and-set conflicts (another instance changed the record in between): retried. */
  casConflicts = 0;
  /**
   * The value this instance last wrote or read for update, per terminal (at most
   * `presenceCacheEntries`, oldest out first): an update sends its compare-and-set with it as the
   * expected value, without a GET first (a REFRESH is then the claim and one script). A guess
   * that is wrong (another instance wrote since, or the record expired) costs no extra round
   * trip: the script answers with the current value. Trusted only as a guess: what is served is
   * what Redis holds, verified.
   */
  private readonly lastValue = new Map<string, Buffer>();
  private readonly lastValueMax: number;

  constructor(o: RedisStoreOptions) {
    this.client = new RedisClient(o);
    this.prefix = o.prefix ?? 'dl:';
    this.now = o.now ?? Date.now;
    this.graceMs = o.sessionGraceMs ?? 0;
    if (o.sessionSealKey.length !== 32) throw new Error('sessionSealKey must be 32 bytes');
    this.sealKey = o.sessionSealKey;
    const recordKey = o.recordKey ?? Buffer.from(hkdfSync('sha256', o.sessionSealKey, Buffer.alloc(0), RECORD_KEY_LABEL, 32));
    if (recordKey.length !== 32) throw new Error('recordKey must be 32 bytes');
    this.recordMac = new KeyedHmac(recordKey);
    this.onRejected = o.onRejected ?? (() => undefined);
    this.instanceId = o.instanceId;
    this.lastValueMax = o.presenceCacheEntries ?? 0;
    this.groups = new RedisGroups(this.client, this.prefix, o.limits, this.now, this.recordMac, this.onRejected);
    this.watches = new RedisWatches(this.client, this.prefix, this.recordMac, this.onRejected);
    this.search = new RedisSearch(this.client, this.prefix, this.now);
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
    return v ? this.live(this.decode(idHex, v)) : undefined;
  }

  /** A stored presence value, if its tag verifies (else reported and absent). */
  private decode(idHex: string, stored: Buffer): Presence | undefined {
    const value = openRecord(this.recordMac, 'presence', stored, Buffer.from(idHex, 'hex'));
    const p = value && decodePresence(value);
    if (!p) this.onRejected('presence', this.presenceKey(idHex));
    return p;
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
      return v ? this.live(this.decode(idHexes[i]!, v)) : undefined;
    });
  }

  private encode(idHex: string, p: Presence): Buffer {
    return tagRecord(this.recordMac, 'presence', encodePresence(this.instanceId ? { ...p, inst: this.instanceId } : p), Buffer.from(idHex, 'hex'));
  }

  async putPresence(idHex: string, p: Presence): Promise<void> {
    const k = this.presenceKey(idHex);
    const ttl = Math.max(1, p.expMs - this.now());
    const v = this.encode(idHex, p);
    await this.client.call(['SET', k, v, 'PX', ttl], k);
    this.remember(idHex, v);
    await this.search.index(idHex, undefined, p);
  }

  private remember(idHex: string, v: Buffer | undefined): void {
    if (this.lastValueMax <= 0) return;
    this.lastValue.delete(idHex);
    if (v === undefined) return;
    if (this.lastValue.size >= this.lastValueMax) this.lastValue.delete(this.lastValue.keys().next().value!);
    this.lastValue.set(idHex, v);
  }

  /**
   * `claim` (a REFRESH's, see DeferredClaim): taken in the first compare-and-set (CLAIM_AND_CAS),
   * or alone before returning when nothing is written; a refusal throws ClaimRefused, nothing
   * written. (The session is the shared store's, for its probe schedule: not used here.)
   */
  async updatePresence<T>(idHex: string, change: (cur: Presence | undefined) => PresenceChange<T>, _session?: ServerSession, claim?: DeferredClaim): Promise<T> {
    const k = this.presenceKey(idHex);
    // The value to decide on: remembered (a guess), else read.
    let raw = this.lastValue.get(idHex);
    let guessed = raw !== undefined;
    if (!guessed) raw = asBuf(await this.client.call(['GET', k], k));
    for (let attempt = 0; attempt < CAS_ATTEMPTS; attempt++) {
      // A guess is bytes this instance wrote or read and verified (remember): not verified again.
      const cur = raw ? this.live(guessed ? decodePresence(raw.subarray(0, raw.length - RECORD_TAG_BYTES)) : this.decodeRemembered(idHex, raw)) : undefined;
      const d = change(cur);
      if (!d.put && !d.remove) {
        if (!guessed) {
          await claim?.ensure();
          return d.result;
        }
        // Nothing to write, on a guess: decide on what Redis holds.
        raw = asBuf(await this.client.call(['GET', k], k));
        if (!raw) this.remember(idHex, undefined);
        guessed = false;
        attempt--;
        continue;
      }
      // Nothing to remove (a guess is never absent: raw is set whenever guessed is).
      if (d.remove && !raw) {
        await claim?.ensure();
        return d.result;
      }
      const value = d.remove ? undefined : this.encode(idHex, d.put!);
      const args = value === undefined ? [raw ?? '', 'del', '', 0] : [raw ?? '', 'set', value, Math.max(1, d.put!.expMs - this.now())];
      let r: RedisReply;
      if (claim?.state === 'pending') {
        claim.asking();
        r = await this.client.evalBatched(CLAIM_AND_CAS, [...this.windowKeys(claim.owner), k], [...claimArgs(claim.seq, claim.ttlMs, claim.source), ...args]);
        // 10 + CLAIM_SEQ's answer: refused, nothing written (ensure throws ClaimRefused).
        claim.settle(typeof r === 'number' && r >= 10 ? claimVerdict(r - 10) : 'ok');
        await claim.ensure();
      } else r = await this.client.evalBatched(CAS_PRESENCE, [k], args);
      if (r === 1) {
        this.remember(idHex, value);
        await this.search.index(idHex, cur, d.remove ? undefined : d.put);
        return d.result;
      }
      // Changed since (or the guess was stale): decide again on what the script found.
      if (!guessed) this.casConflicts++;
      guessed = false;
      raw = asBuf(r);
      if (!raw) this.remember(idHex, undefined);
    }
    throw new RedisUnavailable(`presence ${idHex}: changed concurrently ${CAS_ATTEMPTS} times`, 100);
  }

  /** decode, and the value remembered as the next update's guess if it verifies (forgotten if not). */
  private decodeRemembered(idHex: string, raw: Buffer): Presence | undefined {
    const p = this.decode(idHex, raw);
    this.remember(idHex, p ? raw : undefined);
    return p;
  }

  /**
   * Delete (kick, revocation), and the record leaves the search index at once. One GETDEL
   * (Redis >= 6.2): the record removed is the one read, with no write between the two.
   */
  async deletePresence(idHex: string): Promise<boolean> {
    const k = this.presenceKey(idHex);
    const raw = asBuf(await this.client.call(['GETDEL', k], k));
    this.remember(idHex, undefined);
    if (raw) await this.search.index(idHex, this.decode(idHex, raw), undefined);
    return raw !== undefined;
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
    if (!v) return undefined;
    const s = decodeSession(sidHex, v, this.sealKey);
    if (!s) this.onRejected('session', k);
    return s;
  }

  /**
   * Under the terminal's hash tag, beside its presence record: on a Cluster a terminal's
   * requests depend on one slot, whichever session it uses.
   */
  private windowKey(s: WindowOwner): string {
    return `${this.prefix}rb:{${s.locatorHex}}${s.sidHex.slice(0, 16)}`;
  }

  /** The window's key and that of the layout of before (READ_WINDOW), one slot. */
  private windowKeys(s: WindowOwner): [string, string] {
    return [this.windowKey(s), `${this.prefix}rs:{${s.locatorHex}}${s.sidHex.slice(0, 16)}`];
  }

  /** Take `seq` in the session's shared replay window (CLAIM_SEQ), kept `ttlMs`. */
  async claimSeq(s: WindowOwner, seq: number, ttlMs: number, source: string): Promise<ClaimVerdict> {
    return claimVerdict(await this.client.eval(CLAIM_SEQ, this.windowKeys(s), claimArgs(seq, ttlMs, source)));
  }

  /** Give back `seq` (RELEASE_SEQ). */
  async releaseSeq(s: WindowOwner, seq: number): Promise<void> {
    await this.client.eval(RELEASE_SEQ, this.windowKeys(s), [String(seq), REPLAY_WINDOW]);
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

/** A group's metadata fields (`hash`: a closed group of before issue 15, closed to everyone). */
interface GroupMeta {
  owner: Buffer;
  name: Buffer;
  key: Buffer | undefined;
  hash: Buffer | undefined;
  created: Buffer;
}

class RedisGroups implements GroupBackend {
  constructor(
    private readonly r: RedisClient,
    private readonly prefix: string,
    public limits: GroupLimits,
    private readonly now: () => number,
    private readonly mac: KeyedHmac,
    private readonly onRejected: (kind: RejectedRecord, key: string) => void,
  ) {}

  /** A member of dl:gm (the locator ID and its tag): only the service key makes one. */
  private member(gid: Buffer, loc: Buffer): Buffer {
    return Buffer.concat([loc, recordTag(this.mac, 'member', gid, loc)]);
  }

  /** A member of dl:tg (the group ID and its tag). */
  private membership(loc: Buffer, gid: Buffer): Buffer {
    return Buffer.concat([gid, recordTag(this.mac, 'membership', loc, gid)]);
  }

  /** The IDs of set/zset entries made by member()/membership() whose tags verify; the others are reported. */
  private verified(entries: RedisReply, key: string, kind: 'member' | 'membership', owner: Buffer): Buffer[] {
    const out: Buffer[] = [];
    for (const e of Array.isArray(entries) ? entries : []) {
      const b = asBuf(e);
      const id = b && b.length > RECORD_TAG_BYTES ? b.subarray(0, b.length - RECORD_TAG_BYTES) : undefined;
      if (b && id && timingSafeEqual(kind === 'member' ? this.member(owner, id) : this.membership(owner, id), b)) out.push(Buffer.from(id));
      else this.onRejected(kind, key);
    }
    return out;
  }

  /** The tag of a group's metadata (its "mac" field) over the group ID and the fields. */
  private metaTag(gid: Buffer, f: GroupMeta): Buffer {
    const none = Buffer.alloc(0);
    return recordTag(this.mac, 'group', gid, f.owner, f.name, f.key ?? none, f.hash ?? none, f.created);
  }

  /** The group's metadata fields, if present and their "mac" verifies (else reported and absent). */
  private async readMeta(gid: Buffer): Promise<GroupMeta | undefined> {
    const mk = this.meta(gid);
    const r = await this.r.call(['HMGET', mk, 'owner', 'name', 'key', 'hash', 'created', 'mac'], mk);
    const [owner, name, key, hash, created, mac] = (Array.isArray(r) ? r : []).map(asBuf);
    if (!owner) return undefined;
    const f: GroupMeta = { owner, name: name ?? Buffer.alloc(0), key, hash, created: created ?? Buffer.alloc(0) };
    if (!mac || mac.length !== RECORD_TAG_BYTES || !timingSafeEqual(this.metaTag(gid, f), mac)) {
      this.onRejected('group', mk);
      return undefined;
    }
    return f;
  }

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
    await Promise.all([this.r.call(['ZADD', gm, 'NX', seq, this.member(gid, loc)], gm), this.r.call(['SADD', tg, this.membership(loc, gid)], tg)]);
  }

  /** Failed-join counters: one key per terminal, one per group, each expiring with its window. */
  private failKeys(gid: Buffer, loc: Buffer): [string, string] {
    return [`${this.prefix}jf:{${loc.toString('hex')}}`, `${this.prefix}jf:{${gid.toString('hex')}}`];
  }

  /**
   * A new group under a random ID (see GroupStore.create: no message names the ID of a group to
   * create, so an emptied group is never re-created). The owner field is the creation lock; the
   * other fields and the tag are written with it (one script), so no reader sees a group
   * without its tag.
   */
  async create(owner: Buffer, name: string, codeKey?: Buffer): Promise<Buffer> {
    await this.checkRoomFor(owner);
    const gid = randomBytes(GROUP_ID_BYTES);
    const mk = this.meta(gid);
    const f: GroupMeta = { owner, name: Buffer.from(name, 'utf8'), created: Buffer.from(String(this.now())), key: codeKey, hash: undefined };
    const fields: (string | Buffer | number)[] = ['name', f.name, 'created', f.created];
    if (codeKey !== undefined) fields.push('key', codeKey);
    fields.push('mac', this.metaTag(gid, f));
    if ((await this.r.eval(CREATE_GROUP, mk, [owner, ...fields])) !== 1) throw new DevlocError(ErrorCode.CONFLICT, 'group ID drawn twice');
    await this.addMember(gid, owner);
    return gid;
  }

  private async joinOne(gid: Buffer, loc: Buffer, proof: CodeProof | undefined): Promise<boolean> {
    if (!(await this.mayJoin(gid, loc, proof))) return false;
    await this.checkRoomFor(loc);
    await this.addMember(gid, loc);
    return true;
  }

  /** Whether `loc` is to be added to `gid` (false: a member already); throws the refusal. Reads only. */
  private async mayJoin(gid: Buffer, loc: Buffer, proof: CodeProof | undefined): Promise<boolean> {
    const gm = this.mem(gid);
    const [meta, score, count] = await Promise.all([
      this.readMeta(gid),
      this.r.call(['ZSCORE', gm, this.member(gid, loc)], gm),
      this.r.call(['ZCARD', gm], gm),
    ]);
    if (!meta) throw new DevlocError(ErrorCode.NOT_FOUND, 'no such group');
    if (score !== null) return false;
    // `hash`: a closed group of before issue 15 (salted hash of a code sent in clear): closed
    // to everyone now, its code never kept.
    if (meta.key || meta.hash) {
      const ok = meta.key !== undefined && proof !== undefined && proof(meta.key);
      if (!ok) throw new DevlocError(ErrorCode.FORBIDDEN, proof === undefined ? 'group is closed: join proof required' : 'wrong join code');
    }
    if ((count as number) >= this.limits.maxMembers) throw new DevlocError(ErrorCode.FULL, `group has ${this.limits.maxMembers} members already`);
    return true;
  }

  join(groupId: Buffer, locatorId: Buffer, proof?: CodeProof): Promise<boolean> {
    return this.joinOne(groupId, locatorId, proof);
  }

  async joinAll(locatorId: Buffer, joins: readonly JoinRequest[]): Promise<number> {
    // Checked first, then applied: a refused join (unknown, closed, full) changes nothing; unlike
    // SQLite this is not one transaction, so a concurrent change between may still slip in.
    const k = this.of(locatorId);
    const mine = this.verified(await this.r.call(['SMEMBERS', k], k), k, 'membership', locatorId);
    const have = new Set(mine.map((b) => b.toString('hex')));
    const pending = joins.filter((j) => !have.has(Buffer.from(j.groupId).toString('hex')));
    if (pending.length === 0) return 0;
    if (have.size + pending.length > this.limits.maxGroupsPerTerminal) {
      throw new DevlocError(ErrorCode.FULL, `terminal is in ${this.limits.maxGroupsPerTerminal} groups already`);
    }
    // Every join checked before any is applied (a refused one throws here): all or nothing, as
    // the embedded store's transaction is, short of a concurrent change between the two steps.
    // In order, as the embedded store checks them: the first refusal is the answer.
    const ok: boolean[] = [];
    for (const j of pending) ok.push(await this.mayJoin(Buffer.from(j.groupId), locatorId, j.proof));
    let n = 0;
    for (const [i, j] of pending.entries()) {
      if (!ok[i]) continue;
      await this.addMember(Buffer.from(j.groupId), locatorId);
      n++;
    }
    return n;
  }

  async joinFailures(groupId: Buffer, locatorId: Buffer): Promise<JoinFailureCounts> {
    const [kt, kg] = this.failKeys(groupId, locatorId);
    const L = JOIN_FAILURE_LIMITS;
    const n = (v: unknown): number => (v === null || v === undefined ? 0 : Number(Buffer.isBuffer(v) ? v.toString() : v) || 0);
    const [terminal, group] = (await Promise.all([this.r.call(['GET', kt], kt), this.r.call(['GET', kg], kg)])).map(n) as [number, number];
    // The time left only of a count at its limit, the one a refusal names (JoinFailureCounts):
    // a join under the limits costs the two GETs. PTTL: -2 no key (it expired between the two
    // reads), -1 no expiry (an INCR whose PEXPIRE did not follow): the whole window then.
    const left = async (count: number, limit: number, k: string): Promise<number> => {
      if (count < limit) return 0;
      const ttl = await this.r.call(['PTTL', k], k);
      return typeof ttl === 'number' && ttl > 0 ? ttl : L.windowMs;
    };
    const [terminalLeftMs, groupLeftMs] = await Promise.all([left(terminal, L.perTerminal, kt), left(group, L.perGroup, kg)]);
    return { terminal, group, terminalLeftMs, groupLeftMs };
  }

  /** Counted by every instance alike: the counters live in Redis, not in the instance. */
  async noteJoinFailure(groupId: Buffer, locatorId: Buffer): Promise<void> {
    await Promise.all(this.failKeys(groupId, locatorId).map(async (k) => {
      if ((await this.r.call(['INCR', k], k)) === 1) await this.r.call(['PEXPIRE', k, JOIN_FAILURE_LIMITS.windowMs], k);
    }));
  }

  async leave(groupId: Buffer, locatorId: Buffer): Promise<boolean> {
    const gm = this.mem(groupId);
    const tg = this.of(locatorId);
    const [removed] = await Promise.all([this.r.call(['ZREM', gm, this.member(groupId, locatorId)], gm), this.r.call(['SREM', tg, this.membership(locatorId, groupId)], tg)]);
    if (removed !== 1) return false;
    if ((await this.r.call(['ZCARD', gm], gm)) === 0) {
      const mk = this.meta(groupId);
      await Promise.all([this.r.call(['DEL', mk], mk), this.r.call(['DEL', gm], gm)]);
    }
    return true;
  }

  async get(groupId: Buffer): Promise<GroupInfo | undefined> {
    const gm = this.mem(groupId);
    const [meta, count] = await Promise.all([this.readMeta(groupId), this.r.call(['ZCARD', gm], gm)]);
    if (!meta) return undefined;
    return { id: groupId, name: meta.name.toString('utf8'), owner: meta.owner, closed: meta.key !== undefined || meta.hash !== undefined, createdMs: Number(meta.created.toString()), members: count as number };
  }

  async isMember(groupId: Buffer, locatorId: Buffer): Promise<boolean> {
    const gm = this.mem(groupId);
    return (await this.r.call(['ZSCORE', gm, this.member(groupId, locatorId)], gm)) !== null;
  }

  async members(groupId: Buffer, offset: number, limit: number): Promise<Buffer[]> {
    if (limit <= 0) return [];
    const gm = this.mem(groupId);
    return this.verified(await this.r.call(['ZRANGE', gm, offset, offset + limit - 1], gm), gm, 'member', groupId);
  }

  async shareGroup(a: Buffer, b: Buffer): Promise<boolean> {
    const ka = this.of(a);
    const kb = this.of(b);
    const [ra, rb] = await Promise.all([this.r.call(['SMEMBERS', ka], ka), this.r.call(['SMEMBERS', kb], kb)]);
    const ga = this.verified(ra, ka, 'membership', a);
    const gb = this.verified(rb, kb, 'membership', b);
    if (ga.length === 0 || gb.length === 0) return false;
    const set = new Set(ga.map((x) => x.toString('hex')));
    return gb.some((x) => set.has(x.toString('hex')));
  }
}

/**
 * Subscriptions in Redis: a watcher's hash (one slot) and, per target, the set of its watchers.
 * Both authenticated like the group records: a member of dl:wb is the watcher's ID and a tag over
 * (target, watcher), a value of dl:w the view and a tag over (watcher, target, view). A planted
 * or moved one is reported and treated as absent (a planted watcher is told nothing; a planted
 * pair is never swapped, and is deleted when found).
 */
class RedisWatches implements WatchBackend {
  constructor(
    private readonly r: RedisClient,
    private readonly prefix: string,
    private readonly mac: KeyedHmac,
    private readonly onRejected: (kind: RejectedRecord, key: string) => void,
  ) {}

  private of(watcherHex: string): string {
    return `${this.prefix}w:{${watcherHex}}`;
  }

  private by(targetHex: string): string {
    return `${this.prefix}wb:{${targetHex}}`;
  }

  /** A member of dl:wb:{target}: the watcher's ID and its tag. */
  private member(targetHex: string, watcherHex: string): Buffer {
    const w = Buffer.from(watcherHex, 'hex');
    return Buffer.concat([w, recordTag(this.mac, 'watcher', Buffer.from(targetHex, 'hex'), w)]);
  }

  /** A value of dl:w:{watcher}: the view and its tag. */
  private view(watcherHex: string, targetHex: string, view: string): Buffer {
    return tagRecord(this.mac, 'watch', Buffer.from(view, 'utf8'), Buffer.from(watcherHex, 'hex'), Buffer.from(targetHex, 'hex'));
  }

  async add(watcherHex: string, targets: readonly string[], views: readonly string[], max: number): Promise<number | undefined> {
    const k = this.of(watcherHex);
    if (targets.length === 0) return this.count(watcherHex);
    const n = (await this.r.eval(WATCH_ADD, k, [max, ...targets.flatMap((t, i) => [t, this.view(watcherHex, t, views[i] ?? '')])])) as number;
    if (n < 0) return undefined;
    await Promise.all(targets.map((t) => this.r.call(['SADD', this.by(t), this.member(t, watcherHex)], this.by(t))));
    return n;
  }

  async remove(watcherHex: string, targets: readonly string[] | 'all'): Promise<number> {
    const k = this.of(watcherHex);
    let list = targets;
    if (list === 'all') {
      const r = await this.r.call(['HKEYS', k], k);
      list = (Array.isArray(r) ? r : []).map((x) => (x as Buffer).toString());
    }
    if (list.length === 0) return this.count(watcherHex);
    await Promise.all([
      this.r.call(['HDEL', k, ...list], k),
      ...list.filter((t) => /^[0-9a-f]+$/.test(t)).map((t) => this.r.call(['SREM', this.by(t), this.member(t, watcherHex)], this.by(t))),
    ]);
    return this.count(watcherHex);
  }

  async count(watcherHex: string): Promise<number> {
    const k = this.of(watcherHex);
    return (await this.r.call(['HLEN', k], k)) as number;
  }

  async watchersOf(targetHex: string): Promise<string[]> {
    const k = this.by(targetHex);
    const r = await this.r.call(['SMEMBERS', k], k);
    const out: string[] = [];
    for (const x of Array.isArray(r) ? r : []) {
      const b = asBuf(x);
      const w = b && b.length > RECORD_TAG_BYTES ? b.subarray(0, b.length - RECORD_TAG_BYTES).toString('hex') : undefined;
      if (b && w && timingSafeEqual(this.member(targetHex, w), b)) out.push(w);
      else {
        this.onRejected('watcher', k);
        if (b) await this.r.call(['SREM', k, b], k);
      }
    }
    return out;
  }

  async swapView(watcherHex: string, targetHex: string, view: string): Promise<boolean> {
    const k = this.of(watcherHex);
    const old = asBuf(await this.r.eval(WATCH_SWAP, k, [targetHex, this.view(watcherHex, targetHex, view)]));
    if (!old) return false;
    if (openRecord(this.mac, 'watch', old, Buffer.from(watcherHex, 'hex'), Buffer.from(targetHex, 'hex')) !== undefined) return true;
    // Planted (or moved from another pair): the watcher never asked; drop the pair, tell nothing.
    this.onRejected('watch', k);
    await this.r.call(['HDEL', k, targetHex], k);
    return false;
  }
}

/** Index entries trimmed (expired) per write to a media ID's index: more than one per write keeps it shrinking. */
const SEARCH_TRIM = 32;

/**
 * KEYS[1], KEYS[2] a media ID's index (dl:sl, dl:sx); ARGV: now (ms), at most how many. Removes
 * the entries expired by now from both and answers {removed, entries left}. One script: listed
 * and removed in two steps, an entry a re-registration renewed in between was removed with the
 * expired ones, and the terminal was not found until its next registration.
 */
const SEARCH_TRIM_EXPIRED = new LuaScript(`local old = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[1], 'LIMIT', 0, ARGV[2])
for _, id in ipairs(old) do
  redis.call('ZREM', KEYS[1], id)
  redis.call('ZREM', KEYS[2], id)
end
return {#old, redis.call('ZCARD', KEYS[2])}`);

/** The partner-search index in Redis (keys dl:sl / dl:sx / dl:sm above), one slot per media ID. */
export class RedisSearch implements SearchBackend {
  /** Where this instance's sweeps go on in dl:sm (SSCAN cursor). */
  private cursor = '0';

  constructor(
    private readonly r: RedisClient,
    private readonly prefix: string,
    private readonly now: () => number,
  ) {}

  /** Hashed: a media ID is any text (braces would break the hash tag) up to 64 bytes. */
  private hashOf(mediaId: string): string {
    return createHash('sha256').update(mediaId).digest('hex').slice(0, 32);
  }

  private keys(hash: string): [lex: string, exp: string] {
    return [`${this.prefix}sl:{${hash}}`, `${this.prefix}sx:{${hash}}`];
  }

  private get mediaSet(): string {
    return `${this.prefix}sm`;
  }

  /** The record of `idHex` went from `cur` to `next` (undefined: none): file it under its media ID, or not. */
  async index(idHex: string, cur: Presence | undefined, next: Presence | undefined): Promise<void> {
    const was = searchMediaOf(cur);
    const is = searchMediaOf(next);
    if (was !== undefined && was !== is) await this.drop(was, idHex);
    if (is === undefined) return;
    const h = this.hashOf(is);
    const [lex, exp] = this.keys(h);
    const [, added] = await Promise.all([
      this.r.call(['ZADD', lex, 0, idHex], lex),
      this.r.call(['ZADD', exp, next!.expMs, idHex], exp),
      this.trimExpired(h, SEARCH_TRIM),
    ]);
    // A new entry: its hash into dl:sm, after the entry is in (see trim: a hash it takes out is
    // put back when it finds an entry). An entry already there (a renewal) kept the index
    // non-empty throughout, so trim left the hash in: no command more per REFRESH.
    if (added !== 0) await this.r.call(['SADD', this.mediaSet, h], this.mediaSet);
  }

  /** Out of the index of `hash`: at most `max` entries expired by now (SEARCH_TRIM_EXPIRED). */
  private async trimExpired(hash: string, max: number): Promise<{ removed: number; left: number }> {
    const r = await this.r.eval(SEARCH_TRIM_EXPIRED, this.keys(hash), [this.now(), max]);
    const [removed, left] = Array.isArray(r) ? r : [];
    return { removed: typeof removed === 'number' ? removed : 0, left: typeof left === 'number' ? left : 0 };
  }

  private async remove(hash: string, ids: string[]): Promise<void> {
    if (ids.length === 0) return;
    const [lex, exp] = this.keys(hash);
    await Promise.all([this.r.call(['ZREM', lex, ...ids], lex), this.r.call(['ZREM', exp, ...ids], exp)]);
  }

  async page(mediaId: string, afterHex: string, limit: number): Promise<string[]> {
    const [lex] = this.keys(this.hashOf(mediaId));
    const r = await this.r.call(['ZRANGEBYLEX', lex, afterHex === '' ? '-' : `(${afterHex}`, '+', 'LIMIT', 0, limit], lex);
    return (Array.isArray(r) ? r : []).map((x) => (x as Buffer).toString());
  }

  async drop(mediaId: string, idHex: string): Promise<void> {
    await this.remove(this.hashOf(mediaId), [idHex]);
  }

  /**
   * One step of the sweep (SharedStore.sweep): the next `mediaIds` hashes of dl:sm from this
   * instance's cursor, each index freed of at most `perMedia` entries whose record expired;
   * an index found empty leaves dl:sm. Bounded work per call; the entries removed.
   */
  async trim(mediaIds: number, perMedia: number): Promise<number> {
    const set = this.mediaSet;
    const r = await this.r.call(['SSCAN', set, this.cursor, 'COUNT', mediaIds], set);
    const [cursor, members] = Array.isArray(r) ? r : [];
    this.cursor = Buffer.isBuffer(cursor) ? cursor.toString() : '0';
    const counts = await Promise.all((Array.isArray(members) ? members : []).map(async (m): Promise<number> => {
      const h = Buffer.isBuffer(m) ? m.toString() : '';
      if (!/^[0-9a-f]{32}$/.test(h)) {
        await this.r.call(['SREM', set, m as Buffer], set);
        return 0;
      }
      const [, exp] = this.keys(h);
      const { removed, left } = await this.trimExpired(h, perMedia);
      if (left !== 0) return removed;
      // Out of dl:sm, then looked at again: an entry index() added in between (it adds the hash
      // after its entry) is seen here, or its own SADD comes after this SREM.
      await this.r.call(['SREM', set, h], set);
      if ((await this.r.call(['ZCARD', exp], exp)) !== 0) await this.r.call(['SADD', set, h], set);
      return removed;
    }));
    return counts.reduce((a, b) => a + b, 0);
  }
}
