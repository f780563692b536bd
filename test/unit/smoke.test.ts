import t from 'tap';
import { decodeStrict, encodeCanonical } from '../../src/wire/cbor.js';
t.test('roundtrip', async (t) => {
  const b = encodeCanonical(new Map<number, number>([[2, 3], [1, 1]]));
  t.equal(b.toString('hex'), 'a201010203');
  const d = decodeStrict(b);
  t.ok(d.ok);
});
