// The options of `new Agent` are checked at construction (devloc-agent(3), Options): a missing
// required option or one of the wrong shape is an AgentError BAD_REQUEST naming it, IDs are
// accepted as 16 bytes or 32 hex digits, `bind` as {host, port} or an Address {ip, port}. And a
// malformed local argument of search, setMedia, setPresence or match.submit is BAD_REQUEST before
// anything is sent, in the words of the catalog's field checks (src/wire/schema.ts checkFields).
import t from 'tap';
import { Agent, AgentError, parseAddress } from '../../src/agent/index.js';
import type { AgentOptions } from '../../src/agent/index.js';
import type { MatchSpec } from '../../src/agent/match.js';
import { checkSpec } from '../../src/agent/match.js';
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
  // The REGISTER fields (and AuthInner audiences) the options carry: the catalog's bounds.
  t.match(refusal({ ...base, mediaId: 'x'.repeat(65) }), /^options\.mediaId: text longer than 64 bytes$/);
  t.equal(refusal({ ...base, mediaId: 'x'.repeat(64), nickname: 'é'.repeat(16) }), 'accepted', 'at the bounds');
  t.match(refusal({ ...base, nickname: 'é'.repeat(16) + 'x' }), /^options\.nickname: text longer than 32 bytes$/);
  t.match(refusal({ ...base, nickname: 7 }), /^options\.nickname: expected text$/);
  t.match(refusal({ ...base, visibility: 2 }), /^options\.visibility: > 1$/);
  t.match(refusal({ ...base, ttlS: 1.5 }), /^options\.ttlS: expected uint$/);
  t.match(refusal({ ...base, reachable: 'yes' }), /^options\.reachable: expected bool$/);
  t.equal(refusal({ ...base, audiences: ['locator', 'match', 'a', 'x'.repeat(64)] }), 'accepted', 'four audiences of up to 64 bytes');
  t.match(refusal({ ...base, audiences: ['locator', 'match', 'a', 'b', 'c'] }), /^options\.audiences: more than 4 elements$/);
  t.match(refusal({ ...base, audiences: ['x'.repeat(65)] }), /^options\.audiences\[0\]: text longer than 64 bytes$/);
  t.match(refusal({ ...base, audiences: ['locator', ''] }), /^options\.audiences\[1\]: expected a service ID/);
  t.match(refusal({ ...base, joinGroups: Array.from({ length: 5 }, () => ({ groupId: new Uint8Array(16) })) }), /^options\.joinGroups: expected an array of at most 4 /);
  t.match(refusal({ ...base, retransmitMs: 0 }), /^options\.retransmitMs:/);
  // A misspelt option is refused, not dropped without a word.
  t.match(refusal({ ...base, ttl: 60 }), /^options: unknown key "ttl" \(known: identity, .*ttlS/);
  t.match(refusal({ ...base, ttl: 60, nick: 'x' }), /^options: unknown keys "ttl", "nick"/);
  t.equal(refusal({ ...base, ttlS: undefined }), 'accepted', 'a known key given as undefined is no unknown one');
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

t.test('search, setMedia and setPresence: a malformed argument is BAD_REQUEST, locally', async (t) => {
  const a = new Agent(base);
  const refused = (message: RegExp) => ({ code: 'BAD_REQUEST', message });
  await t.rejects(a.search(['level 2..4'] as unknown as Requirement[], 'kart'), refused(/^search: requirements\[0\] "level 2\.\.4": .*not a text form/));
  await t.rejects(a.search([{ attr: 'level', op: 1, min: 4, max: 2 }], 'kart'), refused(/^search: requirements\[0\] \(level\): min > max$/));
  await t.rejects(a.search([{ attr: 'region', op: 0 }], 'kart'), refused(/^search: requirements\[0\] \(region\): op 0 needs value$/));
  await t.rejects(a.search([{ attr: 'mode', op: 2, set: [] }], 'kart'), refused(/^search: requirements\[0\] \(mode\): op 2 needs a non-empty set$/));
  await t.rejects(a.search([{ attr: 'x'.repeat(33), op: 0, value: 'a' }], 'kart'), refused(/^search: requirements\[0\]\.attr: text longer than 32 bytes$/));
  await t.rejects(a.search([{ attr: 'level', op: 3 }], 'kart'), refused(/^search: requirements\[0\]\.op: > 2$/));
  await t.rejects(a.search([{ attr: 'level', op: 1, min: -1 }], 'kart'), refused(/^search: requirements\[0\]\.min: expected uint$/));
  await t.rejects(a.search(Array.from({ length: 17 }, () => ({ attr: 'a', op: 0, value: 'b' })), 'kart'), refused(/^search: requirements: more than 16 elements$/));
  await t.rejects(a.search([], 'x'.repeat(65)), refused(/^search: mediaId: text longer than 64 bytes$/));
  await t.rejects(a.setMedia('x'.repeat(65)), refused(/^presence record: mediaId: text longer than 64 bytes$/));
  await t.rejects(a.setPresence({ status: 'x'.repeat(65) }), refused(/^presence record: status: text longer than 64 bytes$/));
  await t.rejects(a.setPresence({ wants: Object.fromEntries(Array.from({ length: 9 }, (_, i) => [`a${i}`, i])) }), refused(/^presence record: wants: more than 8 properties$/));
  await t.rejects(a.setPresence({ lookingForPartner: 'yes' } as never), refused(/^presence record: lookingForPartner: expected bool$/));
  await t.rejects(a.setPresence(null as never), refused(/^presence record: expected an object$/));
  await t.rejects(a.setPresence({ lookingForPartners: true } as never), refused(/^presence record: unknown key "lookingForPartners" \(known: mediaId, lookingForPartner, wants, status\)$/));
  // Well-formed, but the agent is not started: NOT_RUNNING, not a wire error. A range with no
  // bound is one: the attribute need only be a number (matchd and locatord take it).
  await t.rejects(a.search([{ attr: 'level', op: 1, min: 2, max: 4 }], 'kart'), { code: 'NOT_RUNNING' });
  await t.rejects(a.search([{ attr: 'level', op: 1 }], 'x'.repeat(64)), { code: 'NOT_RUNNING' });
});

t.test('match spec: the MATCH_SUBMIT fields of the catalog, then what matchd refuses', async (t) => {
  const refusalOf = (spec: unknown): string => {
    try {
      checkSpec(spec as MatchSpec);
      return 'accepted';
    } catch (err) {
      if (err instanceof AgentError && err.code === 'BAD_REQUEST') return err.message;
      throw err;
    }
  };
  const at = { mediaId: 'm'.repeat(64), appType: 't'.repeat(16), minParty: 64, maxParty: 64, maxWaitS: 3600, nickname: 'n'.repeat(32), attrs: Object.fromEntries(Array.from({ length: 16 }, (_, i) => [`a${i}`, 'v'.repeat(64)])) };
  t.equal(refusalOf(at), 'accepted', 'every field at its bound');
  t.equal(refusalOf({ mediaId: 'kart', attrs: null, requirements: null }), 'accepted', 'null attrs and requirements: none');
  t.match(refusalOf({ ...at, mediaId: 'm'.repeat(65) }), /^mediaId: text longer than 64 bytes$/);
  t.match(refusalOf({ ...at, appType: 't'.repeat(17) }), /^appType: text longer than 16 bytes$/);
  t.match(refusalOf({ ...at, maxParty: 65 }), /^maxParty: > 64$/);
  t.match(refusalOf({ ...at, maxWaitS: 3601 }), /^maxWaitS: > 3600$/);
  t.match(refusalOf({ ...at, maxWaitS: 1.5 }), /^maxWaitS: expected uint$/);
  t.match(refusalOf({ ...at, nickname: 'n'.repeat(33) }), /^nickname: text longer than 32 bytes$/);
  t.match(refusalOf({ ...at, attrs: { ...at.attrs, a16: 1 } }), /^attrs: more than 16 properties$/);
  t.match(refusalOf({ ...at, attrs: { a0: 'v'.repeat(65) } }), /^attrs\.a0: value must be text/);
  t.match(refusalOf({ ...at, attrs: { a0: 1.5 } }), /^attrs\.a0: value must be text/);
  t.match(refusalOf({ ...at, attrs: { ['k'.repeat(33)]: 1 } }), /^attrs: property names are text of 1\.\.32 bytes$/);
  t.match(refusalOf({ ...at, attrs: JSON.parse('{"__proto__": 1}') }), /^attrs: reserved property name$/);
  t.match(refusalOf({ mediaId: 'kart', requirements: [{ attr: 'level', op: 1, min: 4, max: 2 }] }), /^requirements\[0\] \(level\): min > max$/);
  t.match(refusalOf({ appType: 'x' }), /^mediaId \(key 3\) missing$/);
  t.match(refusalOf({ mediaId: 'kart', require: ['level 2..4'] }), /^match spec: unknown key "require" \(known: .*requirements/, "devloc(1)'s flag name is not a spec key");
  // Not in the catalog's field types; matchd refuses them (BAD_MESSAGE), or the agent needs them.
  t.match(refusalOf({ mediaId: '' }), /^mediaId: empty/);
  t.match(refusalOf({ mediaId: 'kart', minParty: 1 }), /^minParty: below 2/);
  t.match(refusalOf({ mediaId: 'kart', minParty: 3, maxParty: 2 }), /^maxParty: below minParty \(3\)$/);
  t.equal(refusalOf({ mediaId: 'kart', minParty: 3 }), 'accepted', 'maxParty defaults to minParty');
  t.equal(refusalOf({ mediaId: 'kart', maxWaitS: 0 }), 'accepted', 'a wait of 0: matchd waits 1 s');
});
