// Loopback: a real UDP server with sessions, a real client; register opens a session from the
// ticket, later messages are MAC-only, retransmissions are answered from the cache.
import t from 'tap';
import { randomBytes } from 'node:crypto';
import { Logger } from '../../src/common/log.js';
import { Metrics } from '../../src/common/metrics.js';
import { UdpClient } from '../../src/net/client.js';
import { ClientSession } from '../../src/net/clientsession.js';
import { bindUdp, DatagramServer } from '../../src/net/server.js';
import { ServerSessions } from '../../src/net/sessions.js';
import { generatePair, privateKeyObject, publicKeyObject } from '../../src/wire/keys.js';
import { issueTicket, TicketVerifier } from '../../src/wire/ticket.js';
import { ErrorCode } from '../../src/wire/errors.js';

t.test('session opens from a ticket, then MAC-only; replay refused', async (t) => {
  const authd = generatePair('ed25519');
  const service = generatePair('x25519');
  const cnf = generatePair('x25519');
  const now = Math.floor(Date.now() / 1000);
  const locatorId = randomBytes(16);
  const cti = randomBytes(16);
  const ticket = issueTicket({ locatorId, aud: 'locator', iat: now, exp: now + 3600, cti, cnf: cnf.public }, Buffer.from('01', 'hex'), privateKeyObject('Ed25519', authd));
  const verifier = new TicketVerifier({ keys: new Map([['01', publicKeyObject('Ed25519', authd.public)]]), audience: 'locator' });
  const sessions = new ServerSessions({ verifier, serviceSecret: privateKeyObject('X25519', service) });
  const socket = await bindUdp({ host: '127.0.0.1', port: 0 });
  const lines: string[] = [];
  const metrics = new Metrics();
  let executed = 0;
  const server = new DatagramServer({
    service: 'test', socket, logger: new Logger({ service: 'test', write: (l) => lines.push(l) }), metrics, sessions,
    handlers: {
      REGISTER: (ctx) => {
        executed++;
        return ctx.reply('REGISTER_ACK', { observed: ctx.from, ttlS: 90, refreshS: 25, locatorId: ctx.session!.locatorId });
      },
      REFRESH: (ctx) => ctx.reply('REFRESH_ACK', { observed: ctx.from, ttlS: 90, refreshS: 25, locatorId: ctx.session!.locatorId }),
    },
  });
  t.teardown(() => server.close());
  const client = await UdpClient.open({ bind: { host: '127.0.0.1', port: 0 }, policy: { initialTimeoutMs: 10_000 } }); // no retransmission under load: the test sends copies itself
  t.teardown(() => client.close());
  const cs = ClientSession.fromGrant({ aud: 'locator', ticket, serviceKey: service.public, exp: now + 3600 }, privateKeyObject('X25519', cnf))!;
  const dest = { ip: '127.0.0.1', port: socket.address().port };
  const rid = UdpClient.newRequestId();
  const reg = cs.encode('REGISTER', rid, { ticket, timeMs: Date.now() });
  const r = await client.request(dest, reg, rid, { accept: (x) => cs.accept(x) });
  t.equal(r.msg.name, 'REGISTER_ACK');
  if (r.msg.name === 'REGISTER_ACK') {
    t.same(r.msg.body.observed, { ip: '127.0.0.1', port: client.localPort });
    t.ok(Buffer.from(r.msg.body.locatorId).equals(locatorId));
  }
  // Retransmission of the same bytes: answered from the cache, not executed again.
  const before = metrics.get('retransmissions_answered_total');
  const again = await client.request(dest, reg, rid, { accept: () => true });
  t.equal(again.msg.name, 'REGISTER_ACK', 'retransmission answered');
  t.equal(metrics.get('retransmissions_answered_total'), before + 1, 'from the response cache');
  for (let i = 0; i < 3; i++) {
    const rid2 = UdpClient.newRequestId();
    const ref = await client.request(dest, cs.encode('REFRESH', rid2, {}), rid2, { accept: (x) => cs.accept(x) });
    t.equal(ref.msg.name, 'REFRESH_ACK');
  }
  t.equal(executed, 1);
  t.equal(verifier.signatureChecks, 1, 'one signature check for the session');
  // A new request replaying an old sequence number is refused with REPLAY.
  // A second session object starts its sequence at 1 again: every message it sends is old.
  const cs2 = ClientSession.fromGrant({ aud: 'locator', ticket, serviceKey: service.public, exp: now + 3600 }, privateKeyObject('X25519', cnf))!;
  const rid4 = UdpClient.newRequestId();
  const old = cs2.encode('REFRESH', rid4, {});
  const rr = await client.request(dest, old, rid4, { accept: (x) => cs2.accept(x) });
  t.equal(rr.msg.name, 'ERROR');
  if (rr.msg.name === 'ERROR') t.equal(rr.msg.body.code, ErrorCode.REPLAY);
  t.ok(lines.some((l) => l.includes('REPLAY')), 'refusal logged');
});
