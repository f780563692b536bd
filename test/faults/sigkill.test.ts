// SIGKILL of each daemon in turn, mid-load, and a restart with the same state directory,
// configuration and ports. Four devloc-agent processes keep looking each other up, creating
// groups and joining them (through lightly impaired proxies: 10% duplicated, 10% held back,
// 0-10 ms of delay) while the test kills:
//
//   authd     agents start while it is dead (one of a device enrolled just before the kill, one
//             of a device that had authenticated before): once authd is back both authenticate
//             by themselves, the second with its old locator ID; no enrolled device is lost, the
//             locator secret is unchanged;
//   locatord  every group and membership acknowledged before the kill is on disk and served
//             after the restart; the agents register again by themselves (NO_SESSION) and are
//             found at their addresses again;
//   matchd    a request that was waiting is lost with matchd's memory: its agent notices at its
//             next poll and submits it again (previousIds names the lost one) and it is matched;
//             a submit sent while matchd was down is retransmitted into the new matchd (or, if
//             matchd took longer to start than the retransmissions last, fails with a clear
//             error code and is submitted again) and matched too; each player gets one result.
import t from 'tap';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import type { GroupMembers, LookupEntry } from '../../src/agent/agent.js';
import type { MatchResult } from '../../src/agent/match.js';
import { LOCATOR_SECRET_FILE } from '../../src/authd/locator.js';
import { eventually } from '../agent/stack.js';
import type { FaultAgent } from './world.js';
import { settled, world } from './world.js';

const pause = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

t.test('SIGKILL each daemon mid-load: nothing acknowledged lost, agents recover by themselves', async (t) => {
  const w = await world(t, { seed: 424242, dup: 0.1, reorder: 0.1, delayMs: [0, 10] });
  const names = ['ann', 'bob', 'cat', 'dan'];
  const agents = await Promise.all(names.map((n) => w.agent(n)));
  const [ann, bob, cat, dan] = agents as [FaultAgent, FaultAgent, FaultAgent, FaultAgent];
  const first = await Promise.all(agents.map((a) => eventually(async () => {
    const s = await a.status();
    return settled(s) ? s : null;
  }, 40_000, `${a.name} registered`)));
  const idOf = new Map(agents.map((a, i) => [a.name, first[i]!.locatorId!]));

  // ---- steady load: lookups, group creations, joins and leaves. Each membership's state is what
  // its last acknowledged change made it; while a change is on its way it is unknown (a change
  // that was never acknowledged may or may not have happened) and it is not checked.
  const acked = { groups: new Map<string, string>(), members: new Map<string, 'in' | 'out' | 'unknown'>() };
  /** Changes started per membership: a check compares only those no change touched meanwhile. */
  const changes = new Map<string, number>();
  const load = { ok: 0, failed: 0, errors: new Map<string, number>() };
  let running = true;
  const loops = agents.map(async (a) => {
    const me = idOf.get(a.name)!;
    const others = [...idOf.values()].filter((id) => id !== me);
    let created = 0;
    for (let k = 0; running; k++) {
      try {
        const joinable = [...acked.groups].filter(([, owner]) => owner !== me).map(([g]) => g);
        if (k % 4 === 1 && created < 4) {
          const { groupId } = await a.control<{ groupId: string }>('group.create', { name: `${a.name}-${k}` }, 20_000);
          created++;
          acked.groups.set(groupId, me);
          acked.members.set(`${groupId}/${me}`, 'in');
        } else if (k % 4 === 3 && joinable.length > 0) {
          const g = joinable[Math.floor(k / 4) % joinable.length]!;
          const key = `${g}/${me}`;
          const join = acked.members.get(key) !== 'in';
          acked.members.set(key, 'unknown');
          changes.set(key, (changes.get(key) ?? 0) + 1);
          await a.control(join ? 'group.join' : 'group.leave', { group: g }, 20_000);
          acked.members.set(key, join ? 'in' : 'out');
        } else if (k % 8 === 2) {
          const mine = [...acked.groups].filter(([, owner]) => owner === me).map(([g]) => g);
          if (mine.length > 0) await a.control('group.members', { group: mine[k % mine.length]! }, 20_000);
        } else {
          await a.control('lookup', { targets: others }, 20_000);
        }
        load.ok++;
      } catch (err) {
        load.failed++;
        const code = (err as { code?: string }).code ?? 'ERROR';
        load.errors.set(code, (load.errors.get(code) ?? 0) + 1);
      }
      await pause(30); // pacing, not synchronisation: leave the two cores some air
    }
  });
  t.teardown(async () => {
    running = false;
    await Promise.all(loops);
  });
  const inFlight = (): number => [...acked.members.values()].filter((v) => v === 'unknown').length;
  const progress = async (what: string, n = 10): Promise<void> => {
    const from = load.ok;
    await eventually(async () => load.ok >= from + n, 30_000, `load continues (${what})`);
  };
  type Acked = { groups: Map<string, string>; members: Map<string, 'in' | 'out' | 'unknown'> };
  const copy = (a: Acked): Acked => ({ groups: new Map(a.groups), members: new Map(a.members) });
  /** Everything acknowledged (in `snapshot`) is in locatord's database (read from the file). */
  const checkGroupsOnDisk = (when: string, snapshot: Acked): void => {
    const disk = w.groupsOnDisk();
    const lostGroups = [...snapshot.groups].filter(([g, owner]) => disk.groups.get(g)?.owner !== owner);
    const wrong: string[] = [];
    let ins = 0;
    let outs = 0;
    for (const [m, state] of snapshot.members) {
      const [g, id] = m.split('/') as [string, string];
      const present = disk.members.get(g)?.has(id) ?? false;
      if (state === 'in') ins++;
      if (state === 'out') outs++;
      if ((state === 'in' && !present) || (state === 'out' && present)) wrong.push(`${m}: acknowledged ${state}, on disk ${present ? 'in' : 'out'}`);
    }
    t.same(lostGroups, [], `${when}: all ${snapshot.groups.size} acknowledged groups on disk`);
    t.same(wrong, [], `${when}: ${ins} acknowledged memberships and ${outs} acknowledged leaves as on disk`);
  };
  await progress('warm-up', 20);

  // ---- authd ----------------------------------------------------------------------------------
  const secretFile = path.join(w.authdState, LOCATOR_SECRET_FILE);
  const secret = readFileSync(secretFile);
  const fay = await w.agent('fay');
  const fayId = (await eventually(async () => {
    const s = await fay.status();
    return s.registered ? s : null;
  }, 30_000, 'fay registered')).locatorId;
  await fay.stop('SIGKILL');
  const eve = w.device('eve'); // enrolled (FULL sync, as devloc enroll) just before the kill
  const devicesBefore = w.devicesOnDisk();
  await w.kill('authd');
  // Agents start while authd is dead: their AUTH_REQUESTs go unanswered, they keep trying.
  const authsBefore = w.requests.authd.copies.get('AUTH_REQUEST') ?? 0;
  const [eveAgent, fayAgain] = await Promise.all([w.agent('eve', { device: eve }), w.agent('fay2', { device: fay.device })]);
  await eventually(async () => (w.requests.authd.copies.get('AUTH_REQUEST') ?? 0) >= authsBefore + 4, 20_000, 'AUTH_REQUESTs retransmitted to the dead authd');
  await progress('authd down: lookups need no authd');
  t.equal((await eveAgent.status()).locatorId, null, 'eve not authenticated while authd is down');
  await w.start('authd');
  const [eveSt, faySt] = await Promise.all([eveAgent, fayAgain].map((a) => eventually(async () => {
    const s = await a.status();
    return s.registered ? s : null;
  }, 40_000, `${a.name} authenticated and registered after the authd restart`)));
  t.match(eveSt!.locatorId, /^[0-9a-f]{32}$/, 'the device enrolled before the kill authenticates');
  t.equal(faySt!.locatorId, fayId, 'a device authenticating again gets the same locator ID');
  const devicesAfter = w.devicesOnDisk();
  t.same([...devicesBefore].filter((d) => !devicesAfter.has(d)), [], `no enrolled device lost (${devicesBefore.size})`);
  t.ok(devicesAfter.has(eve.deviceId), 'the last enrollment is there');
  t.ok(readFileSync(secretFile).equals(secret), 'the locator secret is unchanged');
  const auth = await w.metrics('authd');
  // Once each, unless an agent gave up on a slow REGISTER and authenticated again (its own new
  // request, seen once on a loaded machine): never once per retransmitted copy.
  const grants = auth.sum('auth_ok_total');
  t.ok(grants >= 2 && grants <= 4, `the new authd served them (${grants} grants for 2 agents)`);
  await Promise.all([eveAgent, fayAgain].map((a) => a.stop('SIGTERM')));

  // ---- locatord --------------------------------------------------------------------------------
  await progress('before the locatord kill', 20);
  const regsBefore = await Promise.all(agents.map(async (a) => (await a.status()).counters.registrations));
  const changesBefore = (await w.metrics('locatord')).sum('group_changes_total');
  await eventually(async () => (await w.metrics('locatord')).sum('group_changes_total') >= changesBefore + 4, 20_000, 'group changes under way');
  await w.kill('locatord'); // amid joins and leaves
  const snapshot = copy(acked);
  const changesAtKill = new Map(changes);
  t.comment(`${inFlight()} membership changes unacknowledged at the kill`);
  t.ok(snapshot.groups.size >= 4 && snapshot.members.size > snapshot.groups.size, `load made groups (${snapshot.groups.size}) and memberships (${snapshot.members.size})`);
  checkGroupsOnDisk('right after SIGKILL', snapshot);
  await w.start('locatord');
  checkGroupsOnDisk('after the restart', snapshot);
  // The agents find out by themselves (a refresh or a query answered NO_SESSION) and register again.
  await Promise.all(agents.map((a, i) => eventually(async () => {
    const s = await a.status();
    return s.registered && s.counters.registrations > regsBefore[i]!;
  }, 30_000, `${a.name} registered again`)));
  const now = await Promise.all(agents.map((a) => a.status()));
  await eventually(async () => {
    const found = await ann.control<LookupEntry[]>('lookup', { targets: [bob, cat, dan].map((a) => idOf.get(a.name)!) });
    return found.every((e, j) => e.online && e.addr === now[j + 1]!.observed);
  }, 20_000, 'every agent found again at its address');
  t.pass('every agent queryable again at its address');
  // Served, not only stored: the members of the first groups through the API.
  const agentOf = new Map(agents.map((a) => [idOf.get(a.name)!, a]));
  // The load goes on meanwhile: a member acknowledged at the kill may have left since, so the
  // answer is held to the memberships acknowledged 'in' at the kill that no change touched from
  // then until the answer came.
  for (const [g, owner] of [...snapshot.groups].slice(0, 4)) {
    const m = await agentOf.get(owner)!.control<GroupMembers>('group.members', { group: g }, 20_000);
    const want = [...snapshot.members]
      .filter(([x, state]) => x.startsWith(`${g}/`) && state === 'in' && changes.get(x) === changesAtKill.get(x))
      .map(([x]) => x.split('/')[1]);
    const missing = want.filter((id) => !m.members.some((e) => e.id === id));
    t.same(missing, [], `group ${g.slice(0, 8)}: ${want.length} acknowledged members untouched since the kill served`);
  }
  await progress('after the locatord restart');

  // ---- matchd ----------------------------------------------------------------------------------
  const waiting = await ann.control<MatchResult>('match.submit', { mediaId: 'after-crash-1', minParty: 2, maxParty: 2, maxWaitS: 50 });
  t.equal(waiting.state, 'waiting', 'ann waits for a partner');
  await w.kill('matchd');
  // Started again at once; while it comes up, bob submits: the first copies find no matchd,
  // a retransmission finds the new one.
  const restarting = w.start('matchd');
  const submitsBefore = w.requests.matchd.copies.get('MATCH_SUBMIT') ?? 0;
  // Its failure is handled below, but it may come while the test still awaits the restart: caught
  // here, or it is an unhandled rejection that fails the test (seen under load).
  const bobSubmit = bob.control<MatchResult>('match.submit', { mediaId: 'after-crash-2', minParty: 2, maxParty: 2, maxWaitS: 50 }, 60_000)
    .catch((err: unknown) => err as Error & { code?: string });
  await eventually(async () => (w.requests.matchd.copies.get('MATCH_SUBMIT') ?? 0) > submitsBefore, 20_000, "bob's submit on its way");
  await restarting;
  let bobWaiting = await bobSubmit;
  if (bobWaiting instanceof Error) {
    // matchd took longer to start than bob's retransmissions last: a clear error, and the
    // client (here the test, in practice the application or devloc match) submits again.
    t.match(bobWaiting.code, /^[A-Z_]+$/, `a submit that found no matchd fails with a code: ${bobWaiting.code} (${bobWaiting.message})`);
    bobWaiting = await bob.control<MatchResult>('match.submit', { mediaId: 'after-crash-2', minParty: 2, maxParty: 2, maxWaitS: 50 }, 60_000);
  }
  t.equal(bobWaiting.state, 'waiting', "bob's submit reached the new matchd");
  const [catR, danR, bobR, annR] = await Promise.all([
    cat.control<MatchResult>('match.submit', { mediaId: 'after-crash-1', minParty: 2, maxParty: 2, maxWaitS: 50, wait: true }, 60_000),
    dan.control<MatchResult>('match.submit', { mediaId: 'after-crash-2', minParty: 2, maxParty: 2, maxWaitS: 50, wait: true }, 60_000),
    bob.control<MatchResult>('match.wait', { timeoutS: 55 }, 60_000),
    ann.control<MatchResult>('match.wait', { timeoutS: 55 }, 60_000),
  ]);
  const partner = (r: MatchResult): string | undefined => r.members?.find((m) => !m.self)?.id;
  t.equal(annR.state, 'matched', 'ann: the lost request, submitted again, matched');
  t.equal(partner(annR), idOf.get('cat'), 'ann with cat');
  t.same(annR.previousIds, [waiting.matchId], 'under a new matchId; the lost one in previousIds');
  t.equal(catR.state, 'matched');
  t.equal(partner(catR), idOf.get('ann'), 'cat with ann');
  t.equal(bobR.state, 'matched', 'bob: matched');
  t.equal(partner(bobR), idOf.get('dan'), 'bob with dan');
  t.equal(partner(danR), idOf.get('bob'), 'dan with bob');
  const matchd = await w.metrics('matchd');
  t.equal(matchd.sum('match_formed_total'), 2, 'the new matchd formed two parties');
  t.equal(matchd.sum('match_matched_total'), 4, 'one result per player');
  t.ok(ann.lines.some((l) => l['msg'] === 'match request lost, submitting again'), 'ann logged why it submitted again');

  // ---- at the end: everything acknowledged during the whole run is still there ---------------
  running = false;
  await Promise.all(loops);
  checkGroupsOnDisk('at the end', acked);
  t.ok(load.ok > 100, `load: ${load.ok} operations acknowledged, ${load.failed} failed (${JSON.stringify(Object.fromEntries(load.errors))})`);
  t.same(await w.undocumentedRefusals(), [], 'every refusal the daemons answered (since each last started) is one devloc-protocol(7) lists');
});
