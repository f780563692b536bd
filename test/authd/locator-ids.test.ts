// Locator IDs are HMAC-SHA-256(locator secret, device ID) cut to 16 bytes (devloc-protocol(7)):
// LocatorIds.of computes it on its own SHA-256, so it is checked here against node:crypto's HMAC
// for device IDs of every length across the hash's block boundaries, and outside ASCII.
import { createHmac, randomBytes } from 'node:crypto';
import t from 'tap';
import { LocatorIds } from '../../src/authd/locator.js';

t.test('LocatorIds.of is HMAC-SHA-256(secret, UTF-8 device ID)[0, 16)', async (t) => {
  const secret = randomBytes(32);
  const ids = LocatorIds.fromSecret(secret);
  const expected = (id: string): Buffer => createHmac('sha256', secret).update(id, 'utf8').digest().subarray(0, 16);
  const wrongLengths: number[] = [];
  for (let n = 0; n <= 200; n++) {
    const id = 'D'.repeat(n);
    if (!ids.of(id).equals(expected(id))) wrongLengths.push(n);
  }
  t.same(wrongLengths, [], 'every length from 0 to 200 bytes');
  for (const id of ['CONSOLE-0001', 'ÉQUIPEMENT-ü-42', '端末-7', '🎮'.repeat(40)]) t.same(ids.of(id), expected(id), id);
  t.same(ids.of('CONSOLE-0001'), ids.of('CONSOLE-0001'), 'stable');
  t.not(ids.of('A').toString('hex'), LocatorIds.fromSecret(randomBytes(32)).of('A').toString('hex'), 'depends on the secret');
});
