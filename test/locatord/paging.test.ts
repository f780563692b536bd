// Paged answers (src/locatord/paging.ts): entries taken while they fit one datagram, at least one
// per page, and an entry's size counted without encoding it into a Buffer.
import t from 'tap';
import { encodedSize, entryFields, fillPage } from '../../src/locatord/paging.js';
import { encodeBody } from '../../src/wire/schema.js';

t.test('fillPage takes entries while they fit, then gives the index to continue from', async (t) => {
  const sizes = [30, 30, 30, 30];
  const page = fillPage(0, sizes.length, 10, (i) => i, (i) => sizes[i]!, 100);
  t.same(page, { entries: [0, 1, 2], next: 3 });
  t.same(fillPage(3, sizes.length, 10, (i) => i, (i) => sizes[i]!, 100), { entries: [3], next: undefined });
});

t.test('fillPage takes one entry larger than a page, so paging always advances', async (t) => {
  t.same(fillPage(0, 2, 10, (i) => i, () => 500, 100), { entries: [0], next: 1 });
});

t.test('a page of one entry is not measured; a page of several measures each', async (t) => {
  let measured = 0;
  const size = (): number => {
    measured++;
    return 1;
  };
  t.same(fillPage(4, 5, 10, (i) => i, size), { entries: [4], next: undefined });
  t.equal(measured, 0);
  t.same(fillPage(0, 3, 10, (i) => i, size), { entries: [0, 1, 2], next: undefined });
  t.equal(measured, 3);
  t.same(fillPage(5, 5, 10, (i) => i, size), { entries: [], next: undefined });
});

t.test('encodedSize is the length encodeBody gives, for entries of every optional field', async (t) => {
  const fields = entryFields('QUERY_ADDR_RESULT');
  const id = new Uint8Array(16).fill(7);
  const entries = [
    { id, online: false },
    { id, online: true, addr: { ip: '192.0.2.1', port: 4000 }, netMode: 1 },
    { id, online: true, addr: { ip: '2001:db8::1', port: 65535 }, netMode: 3, nickname: 'x'.repeat(40), mediaId: 'game' },
    { id, online: true, addr: { ip: '10.0.0.1', port: 1 }, localAddrs: [{ ip: '10.0.0.2', port: 2 }, { ip: 'fe80::1', port: 3 }], netMode: 2 },
  ];
  for (const e of entries) t.equal(encodedSize(fields, e), encodeBody(fields, e).length, JSON.stringify(e));
});
