// A DatagramServer with sessions and trivial handlers (a child process of the bench): the cost
// of the transport itself (decode, MAC, response cache, replay window, reply encoding and MAC)
// on top of the echo baseline. Handlers do no work: REFLECT answers the observed address,
// REGISTER / REFRESH answer an ACK.
import { Logger } from '../src/common/log.js';
import { Metrics } from '../src/common/metrics.js';
import { bindUdp, DatagramServer } from '../src/net/server.js';
import { ServerSessions } from '../src/net/sessions.js';
import { privateKeyObject, publicKeyObject } from '../src/wire/keys.js';
import { TicketVerifier } from '../src/wire/ticket.js';
import { toParent } from './procs.js';

export interface NetServerCommand {
  serviceSecretHex: string;
  servicePublicHex: string;
  authdPublicHex: string;
  kidHex: string;
  audience: string;
}

process.once('message', (c: NetServerCommand) => {
  (async () => {
    const verifier = new TicketVerifier({ keys: new Map([[c.kidHex, publicKeyObject('Ed25519', Buffer.from(c.authdPublicHex, 'hex'))]]), audience: c.audience });
    const sessions = new ServerSessions({
      verifier,
      serviceSecret: privateKeyObject('X25519', { secret: Buffer.from(c.serviceSecretHex, 'hex'), public: Buffer.from(c.servicePublicHex, 'hex') }),
    });
    const socket = await bindUdp({ host: '127.0.0.1', port: 0, receiveBufferBytes: 4 << 20 });
    const ack = { ttlS: 90, refreshS: 25 };
    new DatagramServer({
      service: 'bench', socket, sessions, logger: new Logger({ service: 'bench', write: () => undefined }), metrics: new Metrics(),
      handlers: {
        REFLECT: (ctx) => ctx.reply('REFLECT_RESULT', { observed: ctx.from, from: ctx.from }),
        REGISTER: (ctx) => ctx.reply('REGISTER_ACK', { observed: ctx.from, ...ack, locatorId: ctx.session!.locatorId }),
        REFRESH: (ctx) => ctx.reply('REFRESH_ACK', { observed: ctx.from, ...ack, locatorId: ctx.session!.locatorId }),
      },
    });
    toParent({ port: socket.address().port });
  })().catch((err: Error) => toParent({ error: err.message }));
});
process.on('disconnect', () => process.exit(0));
