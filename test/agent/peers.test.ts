// The address book: names <-> IDs, validation, atomic writes, a bad file refused not replaced.
import t from 'tap';
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { AddressBook, AddressBookError } from '../../src/agent/peers.js';

const ID = '00112233445566778899aabbccddeeff';

t.test('add, resolve, list, remove, persist', async (t) => {
  const dir = t.testdir({});
  const path = join(dir, 'sub', 'peers.json');
  const b = new AddressBook(path);
  b.load();
  t.same(b.list(), [], 'missing file is an empty book');
  b.add('alice', ID.toUpperCase());
  b.add('team.1', 'ffeeddccbbaa99887766554433221100', 'group');
  t.equal(b.resolve('alice')?.toString('hex'), ID);
  t.equal(b.resolve(ID)?.toString('hex'), ID, 'an ID resolves to itself');
  t.equal(b.resolve('bob'), null);
  t.same(b.namesOf(ID), ['alice']);
  const again = new AddressBook(path);
  again.load();
  t.same(again.list().map((e) => [e.name, e.id, e.kind]), [['alice', ID, 'peer'], ['team.1', 'ffeeddccbbaa99887766554433221100', 'group']]);
  t.ok(again.remove('alice'));
  t.notOk(again.remove('alice'));
  t.same(JSON.parse(readFileSync(path, 'utf8')).peers.map((e: { name: string }) => e.name), ['team.1']);
  t.same(readdirSync(join(dir, 'sub')), ['peers.json'], 'no temporary files left');
});

t.test('partners of a match: added under their nicknames, never over the user\'s entries', async (t) => {
  const b = new AddressBook(join(t.testdir({}), 'peers.json'));
  b.load();
  b.add('alice', ID);
  const other = 'ffeeddccbbaa99887766554433221100';
  const added = b.addPartners([
    { id: '0123456789abcdef0123456789abcdef', nickname: 'me', self: true },
    { id: other, nickname: 'alice', self: false },
    { id: ID, nickname: 'ally', self: false },
    { id: '11111111111111111111111111111111', self: false },
    { id: '22222222222222222222222222222222', nickname: 'bad name', self: false },
    { id: '33333333333333333333333333333333', nickname: 'carol', self: false },
  ]);
  t.same(added.map((e) => e.name), ['carol'], 'only carol: not ourselves, not a taken name, not an ID already named, not without a valid nickname');
  t.equal(b.resolve('alice')?.toString('hex'), ID, "the user's alice unchanged");
  t.same(b.addPartners([{ id: '33333333333333333333333333333333', nickname: 'carol', self: false }]), [], 'again: nothing new');
});

t.test('bad names and IDs refused', async (t) => {
  const b = new AddressBook(join(t.testdir({}), 'p.json'));
  t.throws(() => b.add('has space', ID), AddressBookError);
  t.throws(() => b.add(ID, ID), AddressBookError, 'a name that looks like an ID');
  t.throws(() => b.add('x'.repeat(33), ID), AddressBookError);
  t.throws(() => b.add('ok', 'abc'), AddressBookError);
});

t.test('a malformed file is an error, not silently emptied', async (t) => {
  const dir = t.testdir({});
  const path = join(dir, 'p.json');
  writeFileSync(path, '{not json');
  t.throws(() => new AddressBook(path).load(), /not JSON/);
  writeFileSync(path, JSON.stringify({ version: 1, peers: [{ name: 'a b', id: ID }] }));
  t.throws(() => new AddressBook(path).load(), /entry 0/);
  t.equal(readFileSync(path, 'utf8').includes('a b'), true, 'file untouched');
});
