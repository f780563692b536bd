// src/wire/hkdf.ts: the protocol's one HKDF gives the same bytes whichever implementation the
// process chose (node:crypto's by default, the JavaScript one in the servers), and refuses the same
// lengths. The JavaScript one is checked against RFC 5869 and hkdfSync in hmac-sha256.test.ts.
import { randomBytes } from 'node:crypto';
import t from 'tap';
import { deriveKeysInJavaScript, hkdf } from '../../src/wire/hkdf.js';
import { HKDF_MAX_BYTES } from '../../src/wire/hmac-sha256.js';

t.teardown(() => deriveKeysInJavaScript(false));

t.test('both implementations: the same bytes for lengths 1-300, salts and infos across the block size', async (t) => {
  const differing: string[] = [];
  for (const saltBytes of [0, 16, 64, 65, 100]) {
    for (const infoBytes of [0, 25, 300]) {
      const ikm = randomBytes(32);
      const salt = randomBytes(saltBytes);
      const info = randomBytes(infoBytes);
      for (let length = 1; length <= 300; length += 7) {
        deriveKeysInJavaScript(false);
        const native = hkdf(ikm, salt, info, length);
        deriveKeysInJavaScript(true);
        const js = hkdf(ikm, salt, info, length);
        if (!native.equals(js) || native.length !== length) differing.push(`salt ${saltBytes} info ${infoBytes} length ${length}`);
      }
    }
  }
  t.same(differing, []);
});

t.test('both implementations refuse a length outside 1..255 blocks', async (t) => {
  for (const js of [false, true]) {
    deriveKeysInJavaScript(js);
    for (const bad of [0, -1, 1.5, HKDF_MAX_BYTES + 1]) t.throws(() => hkdf(Buffer.alloc(32), Buffer.alloc(0), Buffer.alloc(0), bad), RangeError, `${js ? 'JavaScript' : 'node'}: ${bad}`);
    t.equal(hkdf(Buffer.alloc(32), Buffer.alloc(0), Buffer.alloc(0), HKDF_MAX_BYTES).length, HKDF_MAX_BYTES);
  }
});
