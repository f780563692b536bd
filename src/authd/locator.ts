// Locator IDs: the first 16 bytes of HMAC-SHA-256(locator secret, device ID). Stable per device
// (the secret never changes), unlinkable to the device ID without the secret (so locatord and
// other terminals, who see only locator IDs, never learn device IDs), and computed, not stored.
//
// The secret is made once, at authd's first start, in the state directory. Losing it changes
// every terminal's locator ID: it belongs in the backups with the database.
import { randomBytes } from 'node:crypto';
import { closeSync, openSync, writeSync, fsyncSync, mkdirSync } from 'node:fs';
import path from 'node:path';
import { readCheckedKeyFile } from '../net/trust.js';
import { LOCATOR_ID_BYTES } from '../wire/constants.js';
import { KeyedHmac } from '../wire/hmac-sha256.js';

export const LOCATOR_SECRET_FILE = 'authd-locator.secret';
const SECRET_BYTES = 32;

export class LocatorIds {
  // The secret's HMAC pads, hashed once: node's createHmac made a native object per ID (1.3% of
  // an authd worker's CPU per authentication).
  private readonly mac: KeyedHmac;

  private constructor(secret: Buffer) {
    this.mac = new KeyedHmac(secret);
  }

  static fromSecret(secret: Buffer): LocatorIds {
    if (secret.length !== SECRET_BYTES) throw new Error(`locator secret must be ${SECRET_BYTES} bytes`);
    return new LocatorIds(Buffer.from(secret));
  }

  static fileIn(stateDir: string): string {
    return path.join(stateDir, LOCATOR_SECRET_FILE);
  }

  /**
   * Load the secret from the state directory, creating it (0600, exclusively: two processes
   * starting at once cannot make two secrets) when `create` and it does not exist yet.
   * A file that exists but is unreadable or malformed is an error, never silently replaced.
   */
  static load(stateDir: string, create: boolean): { ids: LocatorIds; created: boolean } {
    const file = LocatorIds.fileIn(stateDir);
    let created = false;
    if (create) {
      mkdirSync(stateDir, { recursive: true, mode: 0o700 });
      let fd: number | undefined;
      try {
        fd = openSync(file, 'wx', 0o600);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      }
      if (fd !== undefined) {
        try {
          writeSync(fd, `${randomBytes(SECRET_BYTES).toString('base64url')}\n`);
          fsyncSync(fd);
        } finally {
          closeSync(fd);
        }
        created = true;
      }
    }
    // Mode and owner checked like every secret file (keys.ts keyFileProblem).
    const text = readCheckedKeyFile(file, 'locator secret', 'secret').trim();
    const secret = Buffer.from(text, 'base64url');
    if (secret.length !== SECRET_BYTES || secret.toString('base64url') !== text) {
      throw new Error(`${file}: not a ${SECRET_BYTES}-byte base64url secret (restore it from a backup: every locator ID depends on it)`);
    }
    return { ids: new LocatorIds(secret), created };
  }

  of(deviceId: string): Buffer {
    const data = Buffer.from(deviceId, 'utf8');
    const id = Buffer.allocUnsafe(LOCATOR_ID_BYTES);
    this.mac.digestInto(data, data.length, id, 0, LOCATOR_ID_BYTES);
    return id;
  }
}
