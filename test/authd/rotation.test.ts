// Key rotation in process: a new key listed first signs new tickets, the old key still opens
// requests sealed to it, and old tickets stay valid at a verifier trusting both keys.
import t from 'tap';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { ErrorCode } from '../../src/wire/errors.js';
import { authenticate, client, fixture, inProcess, verifierFor, writeAuthdKey } from './fixtures/helpers.js';

t.test('rotation by reload', async (t) => {
  const f = fixture(t, 1);
  const a = await inProcess(t, f, { cookieThreshold: -1 });
  const c = await client(t);
  const d = f.devices[0]!;
  const old = f.authdKey;
  const r1 = await authenticate(c, a.port, { device: d, authd: old });
  t.ok(r1.ok);
  if (!r1.ok) return;
  const oldTicket = r1.grant.tickets[0]!.ticket;

  const { file: newFile, key: fresh } = writeAuthdKey(f.dir, 'authd-new.key');
  t.equal((await authenticate(c, a.port, { device: d, authd: fresh })).ok ? 'ok' : 'refused', 'refused', 'new key unknown before reload');
  a.reload({ keyFiles: [newFile, f.authdKeyFile] });
  t.ok(a.lines.some((l) => l['msg'] === 'keys loaded' && l['signingKid'] === fresh.kid));

  const viaOld = await authenticate(c, a.port, { device: d, authd: old });
  const viaNew = await authenticate(c, a.port, { device: d, authd: fresh });
  t.ok(viaOld.ok && viaNew.ok, 'requests sealed to either key are served');
  if (!viaOld.ok || !viaNew.ok) return;
  const both = verifierFor('locator', old, fresh);
  for (const [name, ticket] of [['old', oldTicket], ['new (old seal)', viaOld.grant.tickets[0]!.ticket], ['new', viaNew.grant.tickets[0]!.ticket]] as const) {
    const v = both.verify(ticket);
    t.ok(v.ok, `${name} ticket verifies at a verifier trusting both keys`);
  }
  const v1 = both.verify(viaOld.grant.tickets[0]!.ticket);
  t.equal(v1.ok && v1.kid, fresh.kid, 'new tickets carry the new kid');
  const onlyNew = verifierFor('locator', fresh).verify(oldTicket);
  t.equal(onlyNew.ok ? 'ok' : onlyNew.code, ErrorCode.BAD_TICKET, 'a verifier that dropped the old key refuses old tickets');
  t.same(Buffer.from(viaNew.grant.locatorId), Buffer.from(r1.grant.locatorId), 'locator ID unchanged by rotation');

  // A broken key file on reload: refused, the keys in use stay.
  const broken = path.join(f.dir, 'broken.key');
  writeFileSync(broken, '{"kind":"authd"}');
  t.throws(() => a.reload({ keyFiles: [broken] }));
  t.ok((await authenticate(c, a.port, { device: d, authd: fresh })).ok, 'still serving with the previous keys');
  // Dropping the old key: requests sealed to it are now BAD_PROOF.
  a.reload({ keyFiles: [newFile] });
  const gone = await authenticate(c, a.port, { device: d, authd: old });
  t.equal(gone.ok ? 'ok' : gone.code, ErrorCode.BAD_PROOF);
});
