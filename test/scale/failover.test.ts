// Redis Cluster failover under two devloc-locatord processes (issue 14): 3 masters + 3 replicas,
// cluster-node-timeout 1000 (fixtures/redis-replicas.ts).
// First, the master holding the shard of instance two's relay channel (sharded pub/sub) is
// SIGKILLed while instance one relays introductions to it: they are refused (NOT_FOUND or
// TRY_LATER) until the shard's replica is promoted, then work again (the SSUBSCRIBE followed).
// Then terminals keep REFRESHing through one instance and QUERY_STATUSing through the other,
// back to back, while the master owning one terminal's slot is SIGKILLed:
//   - that slot is served again within cluster-node-timeout + 3 s of the replica's promotion
//     (promotion seen by polling the replica's ROLE; measured to the first answer after it);
//   - nothing acknowledged that Redis kept is lost: the registration made before the kill was
//     replicated (WAIT 1) and is still there after it (REFRESHes acknowledged in the last
//     moments before a kill may not have reached the replica: Redis replicates asynchronously);
//   - every other terminal (slots on the live masters) is served throughout: no TRY_LATER.
import t from 'tap';
import { daemonAddress, redisLocatord } from './fixtures/locatord.js';
import { keySlot } from '../../src/locatord/store/redis-client.js';
import type { Reply } from '../../src/net/client.js';
import type { MessageOf } from '../../src/wire/envelope.js';
import { ErrorCode } from '../../src/wire/errors.js';
import { errorCodeOf, makeKeys, pushClient, Terminal } from '../locatord/fixtures/helpers.js';
import { startReplicatedCluster } from './fixtures/redis-replicas.js';
import { hasRedis } from './fixtures/redis-server.js';

const noRedis = hasRedis() ? false : 'redis-server / redis-cli not on the PATH';
// Six redis-servers, two daemons, two failovers of ~3 s each: ~25-50 s alone, more on a busy
// machine; above the suite's 120 s per file.
t.setTimeout(300_000);

/** Polls `get` every 20 ms until it gives something; rejects after `ms`. */
function until<T>(get: () => T | undefined, ms: number): Promise<T> {
  const deadline = Date.now() + ms;
  return new Promise((resolve, reject) => {
    const check = (): void => {
      const v = get();
      if (v !== undefined) return resolve(v);
      if (Date.now() > deadline) return reject(new Error(`nothing within ${ms} ms`));
      setTimeout(check, 20);
    };
    check();
  });
}

interface Outcome {
  atMs: number;
  ok: boolean;
  code: number;
}

t.test('Cluster failover under load: the dead master\'s slot resumes after promotion, the others never stop, nothing acknowledged is lost; relayed introductions follow the shard', { skip: noRedis, timeout: 280_000 }, async (t) => {
  const cluster = await startReplicatedCluster(t);
  const keys = makeKeys();
  const start = (): ReturnType<typeof redisLocatord> => redisLocatord(t, keys, cluster.url, { redisTimeoutMs: 1000 });
  const [one, two] = await Promise.all([start(), start()]);
  const dest = daemonAddress;

  // Sharded pub/sub: kill the master of the shard holding instance two's relay channel while
  // instance one relays introductions to it.
  const inst = two.listening['instance'] as string;
  const shard = await cluster.ownerOf(keySlot(`dl:relay:${inst}`));
  const shardView = await cluster.nodes(shard);
  const shardId = shardView.find((n) => n.port === shard)!.id;
  const shardReplica = shardView.find((n) => n.masterId === shardId && !n.failing)!.port;
  const { client: targetClient, pushes } = await pushClient(t);
  const target = await Terminal.open(t, keys, dest(two), { client: targetClient });
  await target.expect(t, 'REGISTER_ACK', target.register({ reachable: true }));
  const asker = await Terminal.open(t, keys, dest(one));
  await asker.expect(t, 'REGISTER_ACK', asker.register({}));
  /** One INTRODUCE; ok when acknowledged and the target got the INTRO of that channel. */
  const introduce = async (): Promise<{ ok: boolean; code: number; atMs: number }> => {
    const r = await asker.request('INTRODUCE', { target: target.locatorId });
    if (r.msg.name !== 'INTRODUCE_ACK') return { ok: false, code: errorCodeOf(r), atMs: Date.now() };
    const channelId = Buffer.from(r.msg.body.channelId);
    const push = await until(() => pushes.find((p) => p.msg.name === 'INTRO' && channelId.equals(Buffer.from((p.msg as MessageOf<'INTRO'>).body.channelId))), 5000);
    target.client.send(dest(two), target.session.encode('INTRO_ACK', push.msg.rid, { channelId }));
    return { ok: true, code: -1, atMs: Date.now() };
  };
  t.same(await introduce().then((r) => r.code), -1, 'relayed introduction before the kill');
  const intros: { ok: boolean; code: number; atMs: number }[] = [];
  let relaying = true;
  const relayLoop = (async () => {
    while (relaying) {
      // -3: acknowledged, but no INTRO reached the target within 5 s (counted, not thrown: a
      // thrown one ended this loop, and the wait below then said only "nothing within").
      intros.push(await introduce().catch(() => ({ ok: false, code: -3, atMs: Date.now() })));
    }
  })();
  await cluster.kill(shard);
  const shardPromotedAt = await cluster.waitPromoted(shardReplica);
  const codes = (): string => JSON.stringify(intros.filter((o) => !o.ok).reduce<Record<number, number>>((a, o) => ({ ...a, [o.code]: (a[o.code] ?? 0) + 1 }), {}));
  const relayResumedAt = (await until(() => intros.find((o) => o.ok && o.atMs >= shardPromotedAt), 30_000).catch((err: Error) => {
    throw new Error(`${err.message}: relayed introductions not served again after the promotion (refusals by code: ${codes()})`);
  })).atMs;
  relaying = false;
  await relayLoop;
  t.comment(`relay: served again ${relayResumedAt - shardPromotedAt} ms after promotion; ${intros.filter((o) => !o.ok).length} introductions refused meanwhile`);
  t.ok(intros.filter((o) => !o.ok).every((o) => o.code === ErrorCode.NOT_FOUND || o.code === ErrorCode.TRY_LATER), 'refused meanwhile with NOT_FOUND or TRY_LATER');
  t.ok((await introduce()).ok, 'relayed introductions work after the failover');

  // Nine terminals: the test needs one on a master that still has a replica and one on
  // another master (all nine on one master: a chance of 3 x 3^-9, 0.015%).
  const terms = await Promise.all(Array.from({ length: 9 }, () => Terminal.open(t, keys, dest(one))));
  for (const term of terms) {
    await term.expect(t, 'REGISTER_ACK', term.register({ visibility: 0 }));
    // Both instances hold the session before the kill (the session key may live on the victim).
    term.dest = dest(two);
    await term.expect(t, 'REFRESH_ACK', term.request('REFRESH', {}));
  }
  const ownerOf = new Map<Terminal, number>();
  for (const term of terms) ownerOf.set(term, await cluster.ownerOf(keySlot(term.locatorId.toString('hex'))));
  // A master that still has a replica (the relay's failover above promoted one without).
  const view0 = await cluster.nodes(ownerOf.get(terms[0]!)!);
  const hasReplica = (port: number): boolean => {
    const id = view0.find((n) => n.port === port)?.id;
    return view0.some((n) => n.masterId === id && !n.failing);
  };
  const victimTerm = terms.find((x) => hasReplica(ownerOf.get(x)!))!;
  const victim = ownerOf.get(victimTerm)!;
  const others = terms.filter((x) => ownerOf.get(x) !== victim);
  t.ok(others.length > 0, 'terminals on the other masters too');
  const view = await cluster.nodes(victim);
  const victimId = view.find((n) => n.port === victim)!.id;
  const replica = view.find((n) => n.masterId === victimId && !n.failing)!.port;
  // Acknowledged and replicated: the victim terminal's registration is on its replica.
  t.equal(await cluster.cli(victim, 'WAIT', '1', '2000'), '1', 'registration replicated before the kill');

  // Load: each terminal alternates REFRESH through one and QUERY_STATUS through two.
  const log = new Map<Terminal, Outcome[]>(terms.map((x) => [x, []]));
  let running = true;
  const loop = async (term: Terminal): Promise<void> => {
    for (let i = 0; running; i++) {
      term.dest = i % 2 ? dest(two) : dest(one);
      let r: Reply;
      try {
        r = await (i % 2 ? term.request('QUERY_STATUS', { ids: [term.locatorId] }) : term.request('REFRESH', {}));
      } catch {
        log.get(term)!.push({ atMs: Date.now(), ok: false, code: -2 });
        continue;
      }
      const ok = r.msg.name === 'REFRESH_ACK' || (r.msg.name === 'QUERY_STATUS_RESULT' && r.msg.body.online[0] === true);
      log.get(term)!.push({ atMs: Date.now(), ok, code: errorCodeOf(r) });
    }
  };
  const loops = terms.map(loop);
  // Some answers before the kill.
  await until(() => (terms.every((x) => log.get(x)!.length >= 5) ? true : undefined), 30_000);
  t.ok(terms.every((x) => log.get(x)!.every((o) => o.ok)), 'all served before the kill');

  const killedAt = Date.now();
  await cluster.kill(victim);
  const promotedAt = await cluster.waitPromoted(replica);
  // Serving of the victim's slot resumes: the first success after promotion.
  const resumedAt = (await until(() => log.get(victimTerm)!.find((o) => o.ok && o.atMs >= promotedAt), 30_000)).atMs;
  // A little more load after recovery, then stop.
  const after = log.get(victimTerm)!.length;
  await until(() => (log.get(victimTerm)!.length >= after + 6 ? true : undefined), 30_000);
  running = false;
  await Promise.all(loops);

  const bound = cluster.nodeTimeoutMs + 3000;
  t.comment(`promotion ${promotedAt - killedAt} ms after the kill; victim slot served again ${resumedAt - promotedAt} ms after promotion (bound ${bound} ms)`);
  t.ok(resumedAt - promotedAt <= bound, `victim slot resumed within cluster-node-timeout + 3 s of promotion (${resumedAt - promotedAt} ms)`);
  const failedVictim = log.get(victimTerm)!.filter((o) => !o.ok);
  t.ok(failedVictim.every((o) => o.code === ErrorCode.TRY_LATER), `the victim's failures were TRY_LATER (${failedVictim.length})`);
  t.ok(log.get(victimTerm)!.slice(-6).every((o) => o.ok), 'and it keeps being served');
  const failedOthers = others.flatMap((x) => log.get(x)!.filter((o) => !o.ok));
  t.same(failedOthers, [], 'every other slot served throughout');
  t.ok(others.every((x) => log.get(x)!.some((o) => o.atMs > killedAt && o.atMs < promotedAt)), 'including between the kill and the promotion');
  // Nothing acknowledged was lost: the registration (replicated) is still there.
  victimTerm.dest = dest(two);
  const st = await victimTerm.expect(t, 'QUERY_STATUS_RESULT', victimTerm.request('QUERY_STATUS', { ids: [victimTerm.locatorId] }));
  t.same(st.body.online, [true], 'registration kept across the failover');
  t.ok(one.lines.some((l) => l['msg'] === 'redis connection lost'), 'the loss was logged');

});
