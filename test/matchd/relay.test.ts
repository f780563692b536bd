// Relay-aware matching (issue 17 item 5) against a real devloc-matchd process: terminals on their
// own loopback addresses (own observed IPs) declare the relays they can use (MATCH_SUBMIT relay);
// two symmetric terminals are matched through a relay when they can use one, and told why not
// (noPath) when they cannot; a udp-blocked terminal that reaches a relay over TCP is matched;
// a host everyone reaches directly is still preferred.
import t from 'tap';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { Bodies } from '../../src/wire/catalog.js';
import { MatchState } from '../../src/wire/catalog.js';
import { MatchPath, RelayVia } from '../../src/wire/connectivity.js';
import { NetMode } from '../../src/wire/constants.js';
import { ErrorCode } from '../../src/wire/errors.js';
import { keyFileToJson, newAuthdKey, newServiceKey, privateKeyObject, publicKeyObject, publicOf, publicToJson } from '../../src/wire/keys.js';
import { startDaemon } from '../helpers/daemon.js';
import type { Fixture } from './helpers.js';
import { hexOf, SERVICE, Terminal } from './helpers.js';

/** Generous: CI runs with both cores busy. */
const RESULT_TIMEOUT_MS = 60_000;

t.test('matchd daemon: relayed matches, noPath, udp-blocked via a TCP relay, host preference', async (t) => {
  const dir = mkdtempSync(path.join(tmpdir(), 'matchd-relay-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const authd = newAuthdKey();
  const service = newServiceKey(SERVICE);
  if (authd.kind !== 'authd' || service.kind !== 'service') throw new Error('keygen');
  writeFileSync(path.join(dir, 'match.key'), keyFileToJson(service), { mode: 0o600 });
  writeFileSync(path.join(dir, 'trust.pub'), publicToJson(publicOf(authd)));
  const d = await startDaemon('matchd/main.ts', [
    '--listen', '127.0.0.1', '--port', '0', '--service-key', path.join(dir, 'match.key'), '--trust', path.join(dir, 'trust.pub'), '--tick-interval', '50',
  ]);
  t.teardown(() => d.stop());
  const dest = { ip: '127.0.0.1', port: d.listening['port'] as number };
  const fx: Fixture = {
    authd: authd.sign, kid: authd.kid, authdSecret: privateKeyObject('Ed25519', authd.sign), service: service.seal,
    trusted: new Map([[authd.kid, publicKeyObject('Ed25519', authd.sign.public)]]),
  };
  let nextIp = 2;
  const terminal = async (): Promise<Terminal> => {
    const term = await Terminal.open(fx, dest, Date.now, `127.0.0.${nextIp++}`);
    t.teardown(() => term.close());
    return term;
  };
  /** Each member's path to the host, by terminal (host: 0). */
  const pathsOf = (r: Bodies['MATCH_RESULT'], terms: Terminal[]): number[] =>
    terms.map((x) => r.members!.find((m) => hexOf(m.id) === x.locatorHex)!.path ?? 0);
  const hostOf = (r: Bodies['MATCH_RESULT']): string => hexOf(r.members![r.host!]!.id);

  t.test('symmetric <-> symmetric, both with relays: matched at once, the partner relayed', async (t) => {
    const [a, b] = [await terminal(), await terminal()];
    const ka = await a.submitOk({ mediaId: 'sym-relay', netMode: NetMode.SYMMETRIC, relay: RelayVia.UDP | RelayVia.TCP });
    const kb = await b.submitOk({ mediaId: 'sym-relay', netMode: NetMode.SYMMETRIC, relay: RelayVia.TLS });
    const [ra, rb] = await Promise.all([a.waitResult(ka.matchId, RESULT_TIMEOUT_MS), b.waitResult(kb.matchId, RESULT_TIMEOUT_MS)]);
    t.equal(ra.state, MatchState.MATCHED);
    t.same(ra.members, rb.members, 'both see the same party');
    t.equal(hostOf(ra), a.locatorHex, 'equals: the earliest hosts');
    t.same(pathsOf(ra, [a, b]), [0, MatchPath.RELAY], 'b reaches the host through a relay; no path on the host entry');
    t.same(ra.members!.map((m) => m.addr), [a.address, b.address], 'observed addresses, each its own IP');
  });

  t.test('symmetric <-> symmetric without relays: no match at the deadline, with noPath', async (t) => {
    const [a, b] = [await terminal(), await terminal()];
    const ka = await a.submitOk({ mediaId: 'sym-bare', netMode: NetMode.SYMMETRIC, maxWaitS: 1 });
    const kb = await b.submitOk({ mediaId: 'sym-bare', netMode: NetMode.SYMMETRIC, maxWaitS: 1 });
    const [ra, rb] = await Promise.all([a.waitResult(ka.matchId, RESULT_TIMEOUT_MS), b.waitResult(kb.matchId, RESULT_TIMEOUT_MS)]);
    t.equal(ra.state, MatchState.NO_MATCH);
    t.equal(rb.state, MatchState.NO_MATCH);
    t.equal(ra.noPath, true, 'told why: a partner was there, no path to it');
    t.equal(rb.noPath, true);
    const st = await a.request('MATCH_STATUS', { matchId: ka.matchId });
    t.ok(st.msg.name === 'MATCH_STATUS_RESULT' && st.msg.body.noPath === true, 'MATCH_STATUS says it too');
  });

  t.test('udp-blocked: refused without a relay, matched with a TCP relay (relayed to an open host)', async (t) => {
    const [b, o] = [await terminal(), await terminal()];
    const refused = await b.submit({ mediaId: 'blocked', netMode: NetMode.UDP_BLOCKED, relay: RelayVia.UDP });
    t.ok(refused.msg.name === 'ERROR' && refused.msg.body.code === ErrorCode.FORBIDDEN, 'a relay over UDP does not help a udp-blocked terminal: FORBIDDEN');
    const kb = await b.submitOk({ mediaId: 'blocked', netMode: NetMode.UDP_BLOCKED, relay: RelayVia.TCP });
    const ko = await o.submitOk({ mediaId: 'blocked', netMode: NetMode.OPEN });
    const [rb, ro] = await Promise.all([b.waitResult(kb.matchId, RESULT_TIMEOUT_MS), o.waitResult(ko.matchId, RESULT_TIMEOUT_MS)]);
    t.equal(rb.state, MatchState.MATCHED);
    t.same(rb.members, ro.members);
    t.equal(hostOf(rb), o.locatorHex, 'the open terminal hosts');
    t.same(pathsOf(rb, [b, o]), [MatchPath.RELAY, 0]);
  });

  t.test('host preference: a host everyone reaches directly beats relaying', async (t) => {
    const [s1, s2, r] = [await terminal(), await terminal(), await terminal()];
    const party = { mediaId: 'prefer', minParty: 3, maxParty: 3 };
    const k1 = await s1.submitOk({ ...party, netMode: NetMode.SYMMETRIC, relay: RelayVia.UDP });
    const k2 = await s2.submitOk({ ...party, netMode: NetMode.SYMMETRIC, relay: RelayVia.UDP });
    const kr = await r.submitOk({ ...party, netMode: NetMode.RESTRICTED });
    const [r1, r2, rr] = await Promise.all([s1.waitResult(k1.matchId, RESULT_TIMEOUT_MS), s2.waitResult(k2.matchId, RESULT_TIMEOUT_MS), r.waitResult(kr.matchId, RESULT_TIMEOUT_MS)]);
    for (const x of [r1, r2, rr]) t.equal(x.state, MatchState.MATCHED);
    t.equal(hostOf(r1), r.locatorHex, 'the restricted terminal reaches both symmetric ones directly');
    t.same(pathsOf(r1, [s1, s2, r]), [MatchPath.DIRECT, MatchPath.DIRECT, 0], 'nobody relayed');
    // Same on a shared IP (two terminals behind one NAT): a direct path is reported as LAN.
    const [q, o] = [await Terminal.open(fx, dest, Date.now, '127.0.0.1'), await Terminal.open(fx, dest, Date.now, '127.0.0.1')];
    t.teardown(() => Promise.all([q.close(), o.close()]));
    const kq = await q.submitOk({ mediaId: 'lan', netMode: NetMode.PORT_RESTRICTED });
    const ko = await o.submitOk({ mediaId: 'lan', netMode: NetMode.FULL_CONE });
    const rq = await q.waitResult(kq.matchId, RESULT_TIMEOUT_MS);
    t.equal(hostOf(rq), o.locatorHex);
    t.same(pathsOf(rq, [q, o]), [MatchPath.LAN, 0], 'same observed IP: LAN');
    await o.waitResult(ko.matchId, RESULT_TIMEOUT_MS);
  });

  const formed = await d.waitFor((l) => l['msg'] === 'match formed' && Array.isArray(l['paths']) && (l['paths'] as string[]).includes('relay'));
  t.ok((formed['paths'] as string[]).includes('host'), 'the log line names every path, the host\'s too');
});
