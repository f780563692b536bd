// The transport section: DatagramServer (with sessions, response cache, replay window) in its
// own process, trivial handlers, driven like the echo baseline. Two kinds of request:
// unauthenticated REFLECT, and session REFRESH (MAC verify + MAC seal per request).
import { randomBytes } from 'node:crypto';
import { generatePair, privateKeyObject } from '../src/wire/keys.js';
import { issueTicket } from '../src/wire/ticket.js';
import { runLoad } from './baseline.js';
import type { SessionGrant } from './loadgen.js';
import type { NetServerCommand } from './net-server.js';
import { forkSibling } from './procs.js';
import type { BenchContext, BenchResult } from './types.js';

export async function runTransport(ctx: BenchContext): Promise<BenchResult[]> {
  const authd = generatePair('ed25519');
  const service = generatePair('x25519');
  const kid = Buffer.from('be7c0001', 'hex');
  const aud = 'locatord';
  const now = Math.floor(Date.now() / 1000);
  const grants: SessionGrant[] = Array.from({ length: 2 }, () => {
    const cnf = generatePair('x25519');
    const exp = now + 3600;
    const ticket = issueTicket({ locatorId: randomBytes(16), aud, iat: now, exp, cti: randomBytes(16), cnf: cnf.public }, kid, privateKeyObject('Ed25519', authd));
    return { aud, ticketHex: ticket.toString('hex'), serviceKeyHex: service.public.toString('hex'), exp, cnfSecretHex: cnf.secret.toString('hex'), cnfPublicHex: cnf.public.toString('hex') };
  });
  const server = forkSibling('net-server');
  try {
    const cmd: NetServerCommand = {
      serviceSecretHex: service.secret.toString('hex'), servicePublicHex: service.public.toString('hex'),
      authdPublicHex: authd.public.toString('hex'), kidHex: kid.toString('hex'), audience: aud,
    };
    const { port } = await server.ask<{ port: number }>(cmd);
    ctx.log(`transport: DatagramServer on 127.0.0.1:${port}`);
    const out: BenchResult[] = [];
    const reflect = await runLoad({ port, seconds: ctx.seconds, kind: 'reflect', payloadBytes: 64 });
    out.push({
      section: 'transport', name: 'DatagramServer unauthenticated (REFLECT 64 B)', value: reflect.perS, unit: 'req/s', latency: reflect.latency,
      extra: { lost: reflect.lost, errors: reflect.errors, replyBytesPerRequestByte: reflect.replyBytes / Math.max(1, reflect.requestBytes) },
    });
    const session = await runLoad({ port, seconds: ctx.seconds, kind: 'session', grants });
    out.push({
      section: 'transport', name: 'DatagramServer session (REFRESH, MAC both ways)', value: session.perS, unit: 'req/s', latency: session.latency,
      extra: { lost: session.lost, errors: session.errors },
    });
    return out;
  } finally {
    server.kill();
  }
}
