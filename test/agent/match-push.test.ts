// MatchClient's handling of pushed results against an in-process matchd: every copy of a
// MATCH_RESULT is acknowledged with the very same datagram (a fresh encoding would reuse the
// push's request ID with other bytes and be refused as REPLAY), the result is taken once, and
// the push ends at matchd when an acknowledgement gets through. And relay-aware matching from the
// agent's side: the relays of the grant declared in the submit, the path to the host in the result.
import t from 'tap';
import type { Address } from '../../src/wire/addr.js';
import type { RelayGrant } from '../../src/wire/catalog.js';
import { decodeDatagram } from '../../src/wire/envelope.js';
import { NetMode } from '../../src/wire/constants.js';
import type { Reply } from '../../src/net/client.js';
import { ErrorCode } from '../../src/wire/errors.js';
import type { MatchBridge, MatchResult } from '../../src/agent/match.js';
import { MatchClient, parseAttr, parseRequirement } from '../../src/agent/match.js';
import { fixture, matchd, Terminal, until } from '../matchd/helpers.js';

interface Client {
  mc: MatchClient;
  term: Terminal;
  results: MatchResult[];
  /** Every MATCH_RESULT_ACK datagram handed to the socket, dropped or not. */
  acks: Buffer[];
  /** Drop this many acknowledgements (as if lost on the way). */
  dropAcks: number;
  /** The agent's stop, as the match client sees it (MatchBridge.stopSignal). */
  stop: AbortController;
}

async function client(fx: ReturnType<typeof fixture>, to: Address, o: { visibility?: number; netMode?: number; relays?: RelayGrant[]; bindIp?: string } = {}): Promise<Client> {
  const term = await Terminal.open(fx, to, Date.now, o.bindIp);
  const stopped = new AbortController();
  const c: Client = { mc: undefined as unknown as MatchClient, term, results: [], acks: [], dropAcks: 0, stop: stopped };
  const bridge: MatchBridge = {
    client: () => term.client,
    session: () => ({ session: term.cs, addr: to }),
    ready: async () => {},
    netMode: () => o.netMode ?? NetMode.OPEN,
    ...(o.relays ? { relays: () => o.relays! } : {}),
    netModeSettled: () => true,
    stopSignal: () => stopped.signal,
    locatorId: () => term.locatorHex,
    names: () => [],
    nickname: `n${term.locatorHex.slice(0, 6)}`,
    ...(o.visibility !== undefined ? { visibility: o.visibility } : {}),
    emit: (r) => c.results.push(r),
    now: Date.now,
    log: () => {},
  };
  c.mc = new MatchClient(bridge, { retransmitMs: 100 });
  term.client.onPush = (r) => void c.mc.onPush(r);
  const send = term.client.send.bind(term.client);
  term.client.send = (dest, datagram) => {
    const d = decodeDatagram(datagram);
    if (d.ok && d.msg.name === 'MATCH_RESULT_ACK') {
      c.acks.push(Buffer.from(datagram));
      if (c.dropAcks > 0) {
        c.dropAcks--;
        return;
      }
    }
    send(dest, datagram);
  };
  return c;
}

t.test('lost acknowledgement: the copy is answered with the same bytes, the result taken once', async (t) => {
  const fx = fixture();
  const m = await matchd(fx, { tickMs: 20, push: { initialTimeoutMs: 60, maxRetransmit: 6 } });
  t.teardown(() => m.stop());
  const a = await client(fx, m.address);
  const b = await client(fx, m.address);
  t.teardown(async () => {
    await a.term.close();
    await b.term.close();
  });
  a.dropAcks = 2;
  const first = await a.mc.submit({ mediaId: 'chess', maxWaitS: 30 });
  const [ra, rb] = await Promise.all([a.mc.wait(first.matchId, 10_000), b.mc.submit({ mediaId: 'chess', maxWaitS: 30 }, { wait: true })]);
  t.equal(ra.state, 'matched');
  t.equal(rb.state, 'matched');
  await until(() => m.delivery.pendingCount === 0, 10_000, 'both pushes acknowledged at matchd');
  t.ok(a.acks.length >= 3, `a acknowledged every copy (${a.acks.length})`);
  t.ok(a.acks.every((x) => x.equals(a.acks[0]!)), 'with identical datagrams');
  t.equal(a.results.length, 1, 'one result for a');
  t.equal(b.results.length, 1, 'one result for b');
  t.equal(ra.members?.find((x) => !x.self)?.nickname, `n${b.term.locatorHex.slice(0, 6)}`, "partner's nickname");
  t.equal(ra.members?.find((x) => !x.self)?.addr, `127.0.0.1:${b.term.client.localPort}`, "partner's address as matchd saw it");
});

t.test('an agent registered hidden submits hidden: its partner sees an alias, no nickname', async (t) => {
  const fx = fixture();
  const m = await matchd(fx, { tickMs: 20 });
  t.teardown(() => m.stop());
  const hidden = await client(fx, m.address, { visibility: 1 });
  const other = await client(fx, m.address);
  t.teardown(async () => {
    await hidden.term.close();
    await other.term.close();
  });
  const first = await hidden.mc.submit({ mediaId: 'quiet', maxWaitS: 30 });
  const [rh, ro] = await Promise.all([hidden.mc.wait(first.matchId, 10_000), other.mc.submit({ mediaId: 'quiet', maxWaitS: 30 }, { wait: true })]);
  t.equal(rh.state, 'matched');
  const seen = ro.members?.find((x) => !x.self);
  t.ok(seen, 'the partner is listed');
  t.not(seen?.id, hidden.term.locatorHex, 'not by its locator ID');
  t.equal(seen?.nickname, undefined, 'nor its nickname');
  t.equal(rh.members?.find((x) => x.self)?.id, hidden.term.locatorHex, 'the hidden agent sees itself');
});

t.test('a back-off after RATE_LIMITED ends when the agent stops: NOT_RUNNING at once, matchd not asked again', async (t) => {
  // matchd says "retry after 5 s"; the agent stops during that wait. The submit must end then,
  // not after the back-off (whose timer would keep the process alive after stop()) and its retry.
  const fx = fixture();
  const m = await matchd(fx, { tickMs: 20 });
  t.teardown(() => m.stop());
  const c = await client(fx, m.address);
  t.teardown(() => c.term.close());
  let asked = 0;
  // Every request is answered RATE_LIMITED here, in place of matchd, as its ERROR would decode.
  c.term.client.request = async () => {
    asked++;
    return { msg: { name: 'ERROR', body: { code: ErrorCode.RATE_LIMITED, retryAfterMs: 5000 } } } as unknown as Reply;
  };
  const timers = () => process.getActiveResourcesInfo().filter((r) => r === 'Timeout').length;
  const submit = c.mc.submit({ mediaId: 'busy', maxWaitS: 30 }).then(() => null, (err: Error & { code?: string }) => err);
  await until(() => asked === 1, 10_000, 'the submit answered RATE_LIMITED');
  const waiting = timers();
  c.stop.abort();
  const err = await submit;
  t.equal(err?.code, 'NOT_RUNNING', `rejected as stopped: ${err?.message}`);
  t.match(err?.message, /MATCH_SUBMIT: the agent stopped before trying again/);
  t.equal(asked, 1, 'matchd was not asked again');
  t.ok(timers() < waiting, `the back-off's timer is gone (${timers()} active, ${waiting} while it waited)`);
});

t.test('requirement and attribute syntax', async (t) => {
  t.same(parseRequirement('region=eu', true), { attr: 'region', op: 0, value: 'eu', mandatory: true });
  t.same(parseRequirement('mode in ranked, casual', false), { attr: 'mode', op: 2, set: ['ranked', 'casual'] });
  t.same(parseRequirement('level 10..20', true), { attr: 'level', op: 1, min: 10, max: 20, mandatory: true });
  t.same(parseRequirement('level 10..', false), { attr: 'level', op: 1, min: 10 });
  t.same(parseRequirement('age ..30', false), { attr: 'age', op: 1, max: 30 });
  for (const bad of ['level 20..10', 'level ..', 'nothing', 'x in ', `${'a'.repeat(33)}=1`]) {
    t.throws(() => parseRequirement(bad, true), { code: 'BAD_REQUEST' }, `refused: ${bad}`);
  }
  // The sizes are the catalog's (checked as on the wire), named in the message.
  const sizes: [string, RegExp][] = [
    [`${'a'.repeat(33)}=1`, /attr: text longer than 32 bytes/],
    [`a=${'v'.repeat(65)}`, /value: text longer than 64 bytes/],
    [`a in ${Array.from({ length: 17 }, (_, i) => `v${i}`).join(',')}`, /set: more than 16 elements/],
    [`a in x,${'v'.repeat(65)}`, /set\[1\]: text longer than 64 bytes/],
  ];
  for (const [bad, why] of sizes) t.throws(() => parseRequirement(bad, true), { code: 'BAD_REQUEST', message: why }, `refused: ${bad.slice(0, 20)}...`);
  t.same(parseRequirement(`a in ${Array.from({ length: 16 }, (_, i) => `v${i}`).join(',')}`, false).set?.length, 16, '16 values fit');
  t.same(parseAttr('level=12'), ['level', 12]);
  t.same(parseAttr('pro=true'), ['pro', true]);
  t.same(parseAttr('region=eu-west'), ['region', 'eu-west']);
  t.throws(() => parseAttr('=x'), { code: 'BAD_REQUEST' });
});

t.test('relays: symmetric agents declare the relays of their grant and learn their path to the host', async (t) => {
  const fx = fixture();
  const m = await matchd(fx, { tickMs: 20 });
  t.teardown(() => m.stop());
  const relay: RelayGrant = { name: 'eu1', tcp: { ip: '192.0.2.1', port: 3478 }, username: 'u', password: 'p', exp: Math.floor(Date.now() / 1000) + 3600 };
  const a = await client(fx, m.address, { netMode: NetMode.SYMMETRIC, relays: [relay], bindIp: '127.0.0.2' });
  const b = await client(fx, m.address, { netMode: NetMode.SYMMETRIC, relays: [relay], bindIp: '127.0.0.3' });
  const c = await client(fx, m.address, { netMode: NetMode.SYMMETRIC, bindIp: '127.0.0.4' });
  const d = await client(fx, m.address, { netMode: NetMode.SYMMETRIC, bindIp: '127.0.0.5' });
  t.teardown(async () => {
    for (const x of [a, b, c, d]) await x.term.close();
  });
  const first = await a.mc.submit({ mediaId: 'kart', maxWaitS: 30 });
  const [ra, rb] = await Promise.all([a.mc.wait(first.matchId, 30_000), b.mc.submit({ mediaId: 'kart', maxWaitS: 30 }, { wait: true })]);
  t.equal(ra.state, 'matched', 'two symmetric agents with a relay: matched');
  t.equal(rb.state, 'matched');
  t.equal(ra.youHost, true, 'the earlier one hosts');
  t.equal(ra.path, 'host');
  t.equal(rb.path, 'relay', 'the other reaches it through a relay');
  t.same(rb.members?.map((x) => x.path), ['host', 'relay']);
  // Without relays: no match, and told why.
  const third = await c.mc.submit({ mediaId: 'solo', maxWaitS: 1 });
  const [rc, rd] = await Promise.all([c.mc.wait(third.matchId, 30_000), d.mc.submit({ mediaId: 'solo', maxWaitS: 1 }, { wait: true })]);
  t.equal(rc.state, 'no-match');
  t.equal(rc.noPath, true, 'a partner was waiting that no path reached');
  t.equal(rd.noPath, true);
});
