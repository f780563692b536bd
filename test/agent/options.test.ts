// The options of `new Agent` are checked at construction (devloc-agent(3), Options): a missing
// required option or one of the wrong shape is an AgentError BAD_REQUEST naming it, IDs are
// accepted as 16 bytes or 32 hex digits, `bind` as {host, port} or an Address {ip, port}. And a
// malformed local argument of search or setMedia is BAD_REQUEST before anything is sent.
import t from 'tap';
import { Agent, AgentError, parseAddress } from '../../src/agent/index.js';
import type { AgentOptions } from '../../src/agent/index.js';
import type { Requirement } from '../../src/wire/catalog.js';
import { generatePair, privateKeyObject } from '../../src/wire/keys.js';

// Keys from raw bytes through src/wire/keys.ts, as test/unit/keygen-gc.test.ts requires.
const identity = { deviceId: 'device-1', key: privateKeyObject('Ed25519', generatePair('ed25519')) };
const authdKey = { kid: Buffer.alloc(8, 1), seal: Buffer.alloc(32, 2) };
const authd = parseAddress('127.0.0.5:49700')!;
const base: AgentOptions = { identity, authd, authdKey };

function refusal(o: unknown): string {
  try {
    new Agent(o as AgentOptions);
  } catch (err) {
    if (err instanceof AgentError && err.code === 'BAD_REQUEST') return err.message;
    throw err;
  }
  return 'accepted';
}

t.test('required options and their shapes', async (t) => {
  t.match(refusal({ identity, authd }), /^options\.authdKey: required/);
  t.match(refusal({ identity, authdKey }), /^options\.authd: required/);
  t.match(refusal({ authd, authdKey }), /^options\.identity: required/);
  t.match(refusal({ ...base, authd: '127.0.0.5:49700' }), /^options\.authd: expected an address \{ip, port\}.*parseAddress/);
  t.match(refusal({ ...base, authd: { ip: 'authd.example', port: 4700 } }), /^options\.authd: "authd\.example" is not a literal/);
  t.match(refusal({ ...base, locatord: { ip: '127.0.0.1', port: 0 } }), /^options\.locatord: port 0/);
  t.match(refusal({ ...base, match: { matchd: '127.0.0.1:4703' } }), /^options\.match\.matchd:/);
  t.match(refusal({ ...base, visibility: 'groups' }), /^options\.visibility:/);
  t.match(refusal({ ...base, peers: '/tmp/peers.json' }), /^options\.peers: expected an AddressBook/);
  t.match(refusal({ ...base, mediaId: 'x'.repeat(65) }), /^options\.mediaId: expected text of at most 64 bytes/);
  t.match(refusal({ ...base, retransmitMs: 0 }), /^options\.retransmitMs:/);
  t.equal(refusal(base), 'accepted');
});

t.test('IDs as bytes or hex; anything else refused', async (t) => {
  const hex = 'ab'.repeat(16);
  const a = new Agent({ ...base, allow: [hex, Buffer.from('cd'.repeat(16), 'hex'), hex.toUpperCase()] });
  t.same(a.allow, [hex, 'cd'.repeat(16)], 'hex and bytes, one entry per ID');
  t.equal(refusal({ ...base, joinGroups: [{ groupId: hex, joinCode: 'let-me-in' }, { groupId: new Uint8Array(16) }] }), 'accepted');
  t.match(refusal({ ...base, allow: ['alice'] }), /^options\.allow\[0\]: expected an ID: 16 bytes \(Uint8Array\) or 32 hex digits/);
  t.match(refusal({ ...base, allow: [new Uint8Array(15)] }), /^options\.allow\[0\]: an ID is 16 bytes, got 15/);
  t.match(refusal({ ...base, joinGroups: [{ groupId: 'living room' }] }), /^options\.joinGroups\[0\]\.groupId:/);
  t.match(refusal({ ...base, allow: Array.from({ length: 33 }, (_, i) => i.toString(16).padStart(32, '0')) }), /^options\.allow: expected an array of at most 32/);
});

t.test('bind: {host, port} or an Address {ip, port}; the socket binds there', async (t) => {
  for (const bind of [{ host: '127.0.0.1', port: 0 }, parseAddress('127.0.0.1:0')!]) {
    const a = new Agent({ ...base, reflector: null, bind });
    await a.start();
    const port = a.localPort;
    t.ok(port !== null && port > 0, `bound (${JSON.stringify(bind)})`);
    t.match(a.status().localAddrs, Array, 'status');
    await a.stop({ unregister: false });
  }
  t.match(refusal({ ...base, bind: { host: 'localhost', port: 0 } }), /^options\.bind: "localhost" is not a literal/);
  t.match(refusal({ ...base, bind: { port: 0 } }), /^options\.bind: expected \{host, port\} or \{ip, port\}/);
});

t.test('search and setMedia: a malformed argument is BAD_REQUEST, locally', async (t) => {
  const a = new Agent(base);
  await t.rejects(a.search(['level 2..4'] as unknown as Requirement[], 'kart'), { code: 'BAD_REQUEST', message: /not a text form/ });
  await t.rejects(a.search([{ attr: 'level', op: 1 }], 'kart'), { code: 'BAD_REQUEST', message: /op 1 min and\/or max/ });
  await t.rejects(a.search([], 'x'.repeat(65)), { code: 'BAD_REQUEST' });
  await t.rejects(a.setMedia('x'.repeat(65)), { code: 'BAD_REQUEST' });
  await t.rejects(a.setPresence({ status: 'x'.repeat(65) }), { code: 'BAD_REQUEST' });
  // Well-formed, but the agent is not started: NOT_RUNNING, not a wire error.
  await t.rejects(a.search([{ attr: 'level', op: 1, min: 2, max: 4 }], 'kart'), { code: 'NOT_RUNNING' });
});
