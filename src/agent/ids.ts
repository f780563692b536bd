// Text forms of the 16-byte IDs a user handles: locator IDs and group IDs are written as 32 hex
// digits (the ticket's `sub` form). Nicknames in the address book can never look like an ID.
import { LOCATOR_ID_BYTES } from '../wire/constants.js';

const ID_RE = new RegExp(`^[0-9a-fA-F]{${LOCATOR_ID_BYTES * 2}}$`);
const NICK_RE = /^[A-Za-z0-9._-]{1,32}$/;

export const isIdText = (s: string): boolean => ID_RE.test(s);

/** 32 hex digits (either case) to 16 bytes, or null. */
export function parseId(s: string): Buffer | null {
  return isIdText(s) ? Buffer.from(s, 'hex') : null;
}

export function formatId(b: Uint8Array): string {
  return Buffer.from(b).toString('hex');
}

/** Address book names: 1-32 of A-Z a-z 0-9 . _ -, and not something that parses as an ID. */
export function isNickname(s: string): boolean {
  return NICK_RE.test(s) && !isIdText(s);
}
