// TURN relay credentials in grants. Relays are registered in authd.db (`devloc relay add`); each
// names a secret file holding coturn's `static-auth-secret` values, one per line, the first one
// used to mint. authd puts credentials for up to MAX_RELAYS_PER_GRANT relays into every grant,
// expiring with the tickets: only an authenticated terminal gets them, and they never outlive
// what it was granted. coturn accepts several secrets at once, which is what makes rotation
// seamless (devloc-authd(8) RELAYS): the new secret goes to coturn first, then first in the file
// here, then SIGHUP (or `devloc relay add --replace`, which authd notices by itself).
//
// The relay list and the secrets are cached: re-read when the database changed (its change
// stamp, AuthDb.changeStamp: the one the authentication read for its device row, so a relay
// added just before an authentication is in its grant at no extra reading) and on reload(). A relay whose secret file
// cannot be used is left out of grants and logged once per change, never failing an
// authentication.
import type { Logger } from '../common/log.js';
import type { Metrics } from '../common/metrics.js';
import { readCheckedKeyFile } from '../net/trust.js';
import { parseAddress } from '../wire/addr.js';
import type { RelayGrant } from '../wire/catalog.js';
import { mintTurnCredentials } from '../wire/turn-credentials.js';
import type { AuthDb, RelayRow } from './db.js';

/** The grant's `relays` array holds at most two (catalog); a terminal needs one and a spare. */
export const MAX_RELAYS_PER_GRANT = 2;
/** Shorter secrets are refused: the HMAC key is all that keeps others off the relay. */
export const MIN_RELAY_SECRET_CHARS = 16;

interface LoadedRelay {
  row: RelayRow;
  secret: string;
  /** The grant entry without credentials. */
  base: Omit<RelayGrant, 'username' | 'password' | 'exp'>;
}

/** Parse a relay secret file: one secret per line; blank lines and `#` comments ignored. */
export function parseRelaySecrets(text: string): { ok: true; secrets: string[] } | { ok: false; error: string } {
  const secrets = text.split('\n').map((l) => l.trim()).filter((l) => l !== '' && !l.startsWith('#'));
  if (secrets.length === 0) return { ok: false, error: 'holds no secret (one per line, the first is used)' };
  const short = secrets.findIndex((s) => s.length < MIN_RELAY_SECRET_CHARS);
  if (short >= 0) return { ok: false, error: `secret ${short + 1} is shorter than ${MIN_RELAY_SECRET_CHARS} characters` };
  if (secrets.some((s) => /\s/.test(s))) return { ok: false, error: 'a secret contains white space' };
  return { ok: true, secrets };
}

/** Read and check a relay secret file (owner-only mode, like every secret). Throws with the file named. */
export function readRelaySecret(file: string): string {
  const text = readCheckedKeyFile(file, 'relay secret file', 'secret');
  const p = parseRelaySecrets(text);
  if (!p.ok) throw new Error(`relay secret file ${file} ${p.error}`);
  return p.secrets[0]!;
}

export class RelayIssuer {
  private relays: LoadedRelay[] = [];
  private version = -1;
  private readonly problems = new Map<string, string>();

  constructor(
    private readonly db: AuthDb,
    private readonly logger: Logger,
    metrics: Metrics,
  ) {
    metrics.gauge('authd_relays', 'TURN relays whose credentials go into grants', () => this.relays.length);
  }

  /** Re-read the relay list and every secret file now (SIGHUP). */
  reload(): void {
    this.load();
  }

  /**
   * Relay entries with credentials for `locatorIdHex`, valid until `expSec`. `stamp`: authd.db's
   * change stamp as the caller read it (the request's); read here when not given.
   */
  grantsFor(locatorIdHex: string, expSec: number, stamp?: number): RelayGrant[] {
    this.refreshIfChanged(stamp);
    const out: RelayGrant[] = [];
    for (const r of this.relays) {
      if (out.length === MAX_RELAYS_PER_GRANT) break;
      const c = mintTurnCredentials(r.secret, locatorIdHex, expSec);
      out.push({ ...r.base, username: c.username, password: c.password, exp: expSec });
    }
    return out;
  }

  get count(): number {
    return this.relays.length;
  }

  private refreshIfChanged(stamp?: number): void {
    let v: number;
    try {
      v = stamp ?? this.db.changeStamp();
    } catch {
      return; // keep what is loaded; authentication reports database trouble itself
    }
    // Stamps only grow; a request that read an older one than the list's (workers: its gate
    // answer came later) is served from the newer list.
    if (!(v <= this.version)) this.load();
  }

  private load(): void {
    let rows: RelayRow[];
    try {
      this.version = this.db.changeStamp();
      rows = this.db.listRelays();
    } catch (err) {
      this.logger.error('cannot read the relay list; keeping the last one', { err: (err as Error).message });
      return;
    }
    const loaded: LoadedRelay[] = [];
    const seen = new Set<string>();
    for (const row of rows) {
      seen.add(row.relayId);
      let secret: string;
      try {
        secret = readRelaySecret(row.secretFile);
      } catch (err) {
        const msg = (err as Error).message;
        if (this.problems.get(row.relayId) !== msg) this.logger.error('relay left out of grants', { relay: row.relayId, err: msg });
        this.problems.set(row.relayId, msg);
        continue;
      }
      if (this.problems.delete(row.relayId)) this.logger.info('relay back in grants', { relay: row.relayId });
      const base: LoadedRelay['base'] = { name: row.relayId };
      for (const t of ['udp', 'tcp', 'tls'] as const) {
        const a = row[t] !== undefined ? parseAddress(row[t]) : null;
        if (a) base[t] = a;
      }
      if (row.tlsName !== undefined) base.tlsName = row.tlsName;
      loaded.push({ row, secret, base });
    }
    for (const id of this.problems.keys()) if (!seen.has(id)) this.problems.delete(id);
    const before = this.relays.map((r) => r.row.relayId).join(',');
    this.relays = loaded;
    const after = loaded.map((r) => r.row.relayId).join(',');
    if (before !== after) this.logger.info('relays in grants', { relays: loaded.map((r) => r.row.relayId) });
  }
}
