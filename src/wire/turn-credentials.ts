// coturn's shared-secret ("TURN REST API") credentials: coturn with `use-auth-secret` and
// `static-auth-secret` accepts username `<expiry unix seconds>:<anything>` with password
// base64(HMAC-SHA1(secret, username)) until the expiry. devloc puts the terminal's locator ID
// (hex) after the colon, so a relay log names the terminal and a credential is useless for
// another one. Both sides use this file: the issuing daemon mints, the agent parses the expiry to
// tell "expired" from "refused" when the relay answers 401.
import { createHmac } from 'node:crypto';

export interface TurnCredentials {
  username: string;
  password: string;
}

/** Mint credentials valid until `expiresAtSec` (unix seconds) for `locatorIdHex`. */
export function mintTurnCredentials(secret: string | Buffer, locatorIdHex: string, expiresAtSec: number): TurnCredentials {
  if (!Number.isSafeInteger(expiresAtSec) || expiresAtSec < 0) throw new RangeError('expiry must be unix seconds');
  if (!/^[0-9a-f]+$/.test(locatorIdHex)) throw new RangeError('locator ID must be lower-case hex');
  const username = `${expiresAtSec}:${locatorIdHex}`;
  return { username, password: createHmac('sha1', secret).update(username, 'utf8').digest('base64') };
}

/** The expiry (unix seconds) and locator ID of a shared-secret username, or null if it is not one. */
export function parseTurnUsername(username: string): { expiresAtSec: number; locatorIdHex: string } | null {
  const m = /^([0-9]{1,15}):([0-9a-f]+)$/.exec(username);
  if (!m) return null;
  return { expiresAtSec: Number(m[1]), locatorIdHex: m[2]! };
}
