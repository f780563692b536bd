// Sessions at the real devloc-locatord (issue 15, low items). One device that authenticates again
// and again opened a session per ticket and, past --max-sessions, pushed other terminals'
// sessions out (now: at most MAX_SESSIONS_PER_ID per locator ID, the device loses its own
// oldest). A REGISTER of an older session, withheld and delivered later, rebound the ID to that
// session, so the terminal's newer session's REFRESHes were "stale" and the ID pointed at the
// old address (now: a REGISTER of a session older than the record's changes nothing).
import t from 'tap';
import { MAX_SESSIONS_PER_ID } from '../../src/net/sessions.js';
import { adversarialStack, expectMsg } from './fixtures/stack.js';

t.test('one device cannot push other terminals\' sessions out', async (t) => {
  const MAX = MAX_SESSIONS_PER_ID + 2;
  const s = await adversarialStack(t, { locatordArgs: ['--max-sessions', String(MAX)] });
  const victim = await s.terminal('victim');
  expectMsg(await victim.register(), 'REGISTER_ACK');
  const device = s.enroll('mallory');
  // 10 authentications: what authd's --device-rate lets one device have at once.
  for (let i = 0; i < 10; i++) {
    const m = await s.terminal(`mallory${i}`, { device });
    expectMsg(await m.register(), 'REGISTER_ACK');
  }
  t.equal(await s.metric('locatord', 'sessions_opened_total'), 11, 'eleven sessions opened');
  const r = await victim.request('REFRESH', {});
  t.equal(r.msg.name, 'REFRESH_ACK', 'the victim\'s session survived');
});

t.test('a withheld REGISTER of an older session cannot rebind the ID', async (t) => {
  const s = await adversarialStack(t);
  const older = await s.terminal('device');
  expectMsg(await older.register(), 'REGISTER_ACK');
  const withheld = older.encode('REGISTER', { ticket: older.tickets.locator.ticket, timeMs: Date.now() });
  // The next ticket must expire later than the first (tickets carry whole seconds): wait for the
  // clock to enter the next second after the first authentication.
  const issuedBy = Math.floor(Date.now() / 1000);
  while (Math.floor(Date.now() / 1000) <= issuedBy) await new Promise((r) => setTimeout(r, 20));
  const newer = await s.terminal('device-again', { device: older.device });
  t.ok(Number(newer.tickets.locator.exp) > Number(older.tickets.locator.exp), 'the newer ticket expires later');
  expectMsg(await newer.register(), 'REGISTER_ACK');
  // The withheld datagram arrives now (from its own socket: the older session's address).
  await older.send('REGISTER', withheld);
  const refresh = expectMsg(await newer.request('REFRESH', {}), 'REFRESH_ACK');
  t.same(refresh.observed, newer.address, 'the newer session\'s REFRESH is not stale');
  t.equal(await s.metric('locatord', 'stale_updates_total', { type: 'REFRESH' }), 0, 'no stale REFRESH');
  const asker = await s.terminal('asker');
  expectMsg(await asker.register(), 'REGISTER_ACK');
  const e = expectMsg(await asker.request('QUERY_ADDR', { ids: [older.locatorId] }), 'QUERY_ADDR_RESULT').entries[0]!;
  t.same(e.addr, newer.address, 'the ID points at the newer session\'s address');
});
