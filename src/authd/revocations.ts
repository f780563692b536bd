// Revocation that takes effect at once (issue 19; devloc-protocol(7), REVOCATION). `devloc
// revoke` writes the flag into authd.db from another process; authd notices the commit (PRAGMA
// data_version, checked every `pollMs`), and for each device revoked since it last looked tells
// every registered service with an address: a REVOKE signed with its ticket-signing key, pushed
// through the one push mechanism (net/push.ts: retransmitted until the service's REVOKE_ACK,
// abandoned after the whole schedule). The services end the terminal's sessions and registration
// and refuse its tickets until the last one expires; authd itself refuses its next
// AUTH_REQUEST (REVOKED), as before.
//
// At start authd looks back one ticket lifetime, so a revocation made while it was down (or
// whose pushes a restart cut short) still reaches the services while its tickets are valid.
import type { Logger } from '../common/log.js';
import type { Metrics } from '../common/metrics.js';
import type { PendingPush } from '../net/push.js';
import { Pusher } from '../net/push.js';
import type { Address } from '../wire/addr.js';
import { parseAddress } from '../wire/addr.js';
import { encodeDatagram } from '../wire/envelope.js';
import { ErrorCode } from '../wire/errors.js';
import { signRevoke } from '../wire/revoke.js';
import type { AuthDb } from './db.js';
import type { KeyRing } from './keyring.js';
import type { LocatorIds } from './locator.js';

export interface RevocationOptions {
  db: AuthDb;
  locator: LocatorIds;
  keys: () => KeyRing;
  ticketLifetimeS: () => number;
  send: (bytes: Buffer, to: Address) => void;
  logger: Logger;
  metrics: Metrics;
  now?: () => number;
  /** How often the database is checked for a new commit, ms (default 500). */
  pollMs?: number;
}

interface Target {
  service: string;
  addr: string;
  locatorHex: string;
  deviceId: string;
  untilS: number;
}

export class Revocations {
  private readonly pusher: Pusher<Target>;
  private readonly byRid = new Map<string, string>();
  private readonly now: () => number;
  private version = -1;
  /** Revocations at or after this time (ms) are looked at; those exactly at it were announced. */
  private watermark: number;
  private readonly announcedAtMark = new Set<string>();
  private timer: NodeJS.Timeout | undefined;

  constructor(private readonly o: RevocationOptions) {
    this.now = o.now ?? Date.now;
    this.watermark = this.now() - o.ticketLifetimeS() * 1000;
    o.metrics.counter('revocation_pushes_total', 'REVOKE pushes to services, by how they ended');
    o.metrics.gauge('revocation_pushes_pending', 'REVOKE pushes waiting for a REVOKE_ACK', () => this.pusher.size);
    this.pusher = new Pusher<Target>({
      send: o.send,
      onEnd: (p, outcome) => this.ended(p, outcome),
    });
  }

  /** Check now, then every pollMs. */
  start(): void {
    this.poll();
    this.timer = setInterval(() => this.poll(), this.o.pollMs ?? 500);
    this.timer.unref();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.pusher.close();
  }

  get pending(): number {
    return this.pusher.size;
  }

  /** A REVOKE_ACK: the push whose request ID it carries is done. */
  ack(rid: Uint8Array): void {
    const ridHex = Buffer.from(rid).toString('hex');
    const key = this.byRid.get(ridHex);
    if (key) this.pusher.ack(key, 'ack', rid);
  }

  /** Look for revocations committed since the last look; never throws. */
  poll(): void {
    try {
      if (!this.o.db.open) return;
      const v = this.o.db.dataVersion();
      if (v === this.version) return;
      this.version = v;
      const rows = this.o.db.revokedSince(this.watermark);
      for (const r of rows) {
        const mark = `${r.deviceId}@${r.revokedAt}`;
        if (r.revokedAt === this.watermark && this.announcedAtMark.has(mark)) continue;
        if (r.revokedAt > this.watermark) {
          this.watermark = r.revokedAt;
          this.announcedAtMark.clear();
        }
        this.announcedAtMark.add(mark);
        this.announce(r.deviceId, r.revokedAt);
      }
    } catch (err) {
      this.o.logger.error('cannot read revocations', { err: (err as Error).message });
    }
  }

  private announce(deviceId: string, revokedAt: number): void {
    const locatorHex = this.o.locator.of(deviceId).toString('hex');
    // The last ticket issued before the revocation expires by then.
    const untilS = Math.ceil(revokedAt / 1000) + this.o.ticketLifetimeS();
    if (untilS * 1000 <= this.now()) return;
    const services = this.o.db.listServices();
    this.o.logger.info('revocation', { deviceId, locatorId: locatorHex, services: services.map((s) => s.serviceId) });
    for (const s of services) {
      if (!s.addr) {
        this.o.logger.warn('revocation: service has no address, cannot tell it', { service: s.serviceId, locatorId: locatorHex });
        continue;
      }
      const to = parseAddress(s.addr);
      if (!to) continue;
      const key = `${s.serviceId}/${locatorHex}`;
      const target: Target = { service: s.serviceId, addr: s.addr, locatorHex, deviceId, untilS };
      const refused = this.pusher.push({
        key, target: s.serviceId, data: target,
        build: (rid) => {
          const signer = this.o.keys().signer;
          const body = signRevoke(rid, { locatorId: Buffer.from(locatorHex, 'hex'), code: ErrorCode.REVOKED, untilS, timeMs: this.now() }, signer.kid, signer.signKey);
          return { bytes: encodeDatagram('REVOKE', rid, body), to };
        },
      });
      if (refused) {
        this.o.logger.warn('revocation push refused', { service: s.serviceId, locatorId: locatorHex, why: refused });
        continue;
      }
      const p = this.pusher.get(key);
      if (p) this.byRid.set(p.rid.toString('hex'), key);
    }
  }

  private ended(p: PendingPush<Target>, outcome: { acked: string } | { abandoned: string }): void {
    this.byRid.delete(p.rid.toString('hex'));
    const t = p.data;
    if ('acked' in outcome) {
      this.o.metrics.inc('revocation_pushes_total', { outcome: 'acked' });
      this.o.logger.info('revocation delivered', { service: t.service, addr: t.addr, locatorId: t.locatorHex, copies: p.copies });
    } else {
      this.o.metrics.inc('revocation_pushes_total', { outcome: 'abandoned' });
      this.o.logger.warn('revocation not acknowledged', { service: t.service, addr: t.addr, locatorId: t.locatorHex, copies: p.copies, why: outcome.abandoned });
    }
  }
}
