// Cloned identity detection (issue 19, item 3), with real daemons and two real agents started
// with one identity file: the newer registration keeps the locator ID, the older agent is told
// IDENTITY_CONFLICT (its status and log say so) and stops re-registering; locatord logs both
// addresses and counts it.
import t from 'tap';
import { eventually, stack } from '../agent/stack.js';
import { run } from '../common/ops-helpers.js';

t.test('two agents, one identity: the newer wins, the older is told and stays off', async (t) => {
  const s = await stack(t);
  const device = s.device('shared');
  const older = await s.agent('older', ['--locatord', s.locatordAddr], { device });
  const first = await eventually(async () => {
    const x = await older.status();
    return x.registered ? x : undefined;
  }, 30_000, 'older registered');
  const newer = await s.agent('newer', ['--locatord', s.locatordAddr], { device });
  const second = await eventually(async () => {
    const x = await newer.status();
    return x.registered ? x : undefined;
  }, 30_000, 'newer registered');
  t.equal(second.locatorId, first.locatorId, 'one identity, one locator ID');
  t.not(second.observed, first.observed, 'two terminals (two ports)');

  const conflict = await s.locatord.waitFor((l) => l['msg'] === 'identity conflict', 30_000, 'locatord logs the conflict');
  t.equal(conflict['older'], first.observed, 'the older address is logged');
  t.equal(conflict['newer'], second.observed, 'the newer address is logged');
  const told = await eventually(async () => {
    const x = await older.status();
    return x.lastError && /IDENTITY_CONFLICT/.test(x.lastError.error) ? x : undefined;
  }, 30_000, 'older told IDENTITY_CONFLICT');
  t.equal(told.registered, false, 'the older one is not registered');
  await older.waitFor((l) => /not registering again/.test(String(l['msg'])), 10_000, 'older logs that it stops');

  // The newer one keeps refreshing; the record stays at its address through two more refreshes.
  const base = (await newer.status()).counters.refreshes;
  await eventually(async () => (await newer.status()).counters.refreshes >= base + 2, 60_000, 'two more refreshes of the newer one');
  const show = await run('cli/devloc.ts', ['ctl', 'locatord', 'show', first.locatorId!, '--socket', s.ctl.locatord, '--json']);
  t.equal(show.code, 0, show.stderr);
  t.equal(JSON.parse(show.stdout).presence.addr, second.observed, 'the newer terminal holds the locator ID');
  t.equal((await older.status()).registered, false, 'the older one did not take it back');
});
