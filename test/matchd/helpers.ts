// Test helpers for matchd: keys and tickets made here (no authd), an in-process matchd, and a
// simulated terminal speaking the agent's side of the match protocol over real UDP on loopback:
// submit (with the ticket on first use), acknowledge pushed results, poll, cancel.
import { randomBytes } from 'node:crypto';
import type { KeyObject } from 'node:crypto';
import { Logger } from '../../src/common/log.js';
import { UdpClient } from '../../src/net/client.js';
import type { Reply } from '../../src/net/client.js';
import { ClientSession } from '../../src/net/clientsession.js';
import type { Address } from '../../src/wire/addr.js';
import type { Bodies } from '../../src/wire/catalog.js';
import { NetMode } from '../../src/wire/constants.js';
import { ErrorCode } from '../../src/wire/errors.js';
import type { RawPair } from '../../src/wire/keys.js';
import { generatePair, newKid, privateKeyObject, publicKeyObject } from '../../src/wire/keys.js';
import { issueTicket } from '../../src/wire/ticket.js';
import type { Matchd, MatchdOptions } from '../../src/matchd/server.js';
import { startMatchd } from '../../src/matchd/server.js';
import { FakeTimers } from '../net/fixtures/net.js';

export const SERVICE = 'match';

export interface Fixture {
  authd: RawPair;
  kid: string;
  authdSecret: KeyObject;
  service: RawPair;
  trusted: Map<string, KeyObject>;
}

export function fixture(): Fixture {
  const authd = generatePair('ed25519');
  const kid = newKid();
  return {
    authd, kid, authdSecret: privateKeyObject('Ed25519', authd),
    service: generatePair('x25519'),
    trusted: new Map([[kid, publicKeyObject('Ed25519', authd.public)]]),
  };
}

/**
 * A fake clock in ms since the epoch, starting now (tickets are checked against it), with timers
 * for matchd's retransmissions: `advance` fires the copies that fall due, synchronously.
 */
export function fakeClock(): { now: () => number; advance: (ms: number) => void; timers: FakeTimers } {
  const timers = new FakeTimers();
  timers.now = Date.now();
  return { now: () => timers.now, advance: (ms) => timers.advance(ms), timers };
}

export function matchd(fx: Fixture, o: Partial<MatchdOptions> = {}): Promise<Matchd> {
  return startMatchd({
    host: '127.0.0.1', port: 0, service: SERVICE, serviceSecret: privateKeyObject('X25519', fx.service),
    trustedKeys: fx.trusted, tickMs: 0, rate: { ratePerS: 0, burst: 1 },
    logger: new Logger({ service: 'matchd', write: () => undefined }), ...o,
  });
}

type SubmitBody = Omit<Bodies['MATCH_SUBMIT'], 'ticket' | 'timeMs'>;

export const defaultSubmit: SubmitBody = { mediaId: 'chess', minParty: 2, maxParty: 2, netMode: NetMode.OPEN, maxWaitS: 60 };

export interface PushedResult {
  rid: string;
  body: Bodies['MATCH_RESULT'];
}

/** A terminal: its own UDP socket, ticket, session keys and locator ID. */
export class Terminal {
  readonly locatorId: Buffer;
  ticket!: Buffer;
  client!: UdpClient;
  cs!: ClientSession;
  dest: Address;
  /** Send the ticket with the next submit (first use, or after NO_SESSION). */
  needTicket = true;
  /** Acknowledge pushed results (off: simulate a terminal whose acks are lost). */
  autoAck = true;
  /** Every MATCH_RESULT copy that verified, in arrival order. */
  readonly pushes: PushedResult[] = [];
  private readonly acks = new Map<string, Buffer>();
  private readonly waiters: { id: string; resolve: (b: Bodies['MATCH_RESULT']) => void }[] = [];

  private constructor(readonly fx: Fixture, dest: Address, readonly now: () => number, readonly cnf: RawPair, readonly bindIp: string) {
    this.locatorId = randomBytes(16);
    this.dest = dest;
  }

  /** `bindIp`: another loopback address (127.0.0.2, ...) gives the terminal an observed IP of its own. */
  static async open(fx: Fixture, dest: Address, now: () => number = Date.now, bindIp = '127.0.0.1'): Promise<Terminal> {
    const t = new Terminal(fx, dest, now, generatePair('x25519'), bindIp);
    t.client = await UdpClient.open({ bind: { host: bindIp, port: 0 }, policy: { initialTimeoutMs: 200, maxRetransmit: 6, deadlineMs: 30_000 } });
    // As authd does: the ticket names the address it was sent to (the session opens validated).
    const iat = Math.floor(now() / 1000);
    t.ticket = issueTicket(
      { locatorId: t.locatorId, aud: SERVICE, iat, exp: iat + 3600, cti: randomBytes(16), cnf: t.cnf.public, addr: t.address },
      Buffer.from(fx.kid, 'hex'), fx.authdSecret,
    );
    t.cs = ClientSession.fromGrant(
      { aud: SERVICE, ticket: t.ticket, serviceKey: fx.service.public, exp: Math.floor(now() / 1000) + 3600 },
      privateKeyObject('X25519', t.cnf),
    )!;
    t.client.onPush = (r) => t.onPush(r);
    return t;
  }

  get address(): Address {
    return { ip: this.bindIp, port: this.client.localPort };
  }

  get locatorHex(): string {
    return this.locatorId.toString('hex');
  }

  /** Distinct results received (the agent deduplicates copies by matchId). */
  get results(): Map<string, Bodies['MATCH_RESULT']> {
    const m = new Map<string, Bodies['MATCH_RESULT']>();
    for (const p of this.pushes) m.set(Buffer.from(p.body.matchId).toString('hex'), p.body);
    return m;
  }

  private onPush(r: Reply): void {
    if (r.msg.name !== 'MATCH_RESULT' || !this.cs.accept(r)) return;
    const body = r.msg.body;
    const id = Buffer.from(body.matchId).toString('hex');
    this.pushes.push({ rid: Buffer.from(r.msg.rid).toString('hex'), body });
    if (this.autoAck) {
      // One ack per result, the identical bytes for every further copy: matchd's response cache
      // then sees a retransmission (a fresh encoding of the same request ID would be a REPLAY).
      let ack = this.acks.get(id);
      if (!ack) {
        ack = this.cs.encode('MATCH_RESULT_ACK', r.msg.rid, { matchId: body.matchId });
        this.acks.set(id, ack);
      }
      this.client.send(this.dest, ack);
    }
    for (const w of [...this.waiters]) {
      if (w.id === id) {
        this.waiters.splice(this.waiters.indexOf(w), 1);
        w.resolve(body);
      }
    }
  }

  /** Resolves with the first result for `matchId` (already received or future). */
  waitResult(matchId: Uint8Array, timeoutMs = 10_000): Promise<Bodies['MATCH_RESULT']> {
    const id = Buffer.from(matchId).toString('hex');
    const seen = this.results.get(id);
    if (seen) return Promise.resolve(seen);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no result for ${id} at ${this.locatorHex}`)), timeoutMs);
      this.waiters.push({ id, resolve: (b) => { clearTimeout(timer); resolve(b); } });
    });
  }

  async request<N extends 'MATCH_SUBMIT' | 'MATCH_STATUS' | 'MATCH_CANCEL'>(name: N, body: Bodies[N]): Promise<Reply> {
    const rid = UdpClient.newRequestId();
    const bytes = this.cs.encode(name, rid, body);
    const r = await this.client.request(this.dest, bytes, rid, { accept: (x) => this.cs.accept(x) });
    // matchd lost our session (restart, key distrusted): the next submit carries the ticket.
    if (r.msg.name === 'ERROR' && r.msg.body.code === ErrorCode.NO_SESSION) this.needTicket = true;
    return r;
  }

  /** MATCH_SUBMIT; carries the ticket on first use. Returns the reply (ACK or ERROR). */
  async submit(over: Partial<SubmitBody> = {}): Promise<Reply> {
    const body: Bodies['MATCH_SUBMIT'] = { ...defaultSubmit, ...over };
    if (this.needTicket) {
      body.ticket = this.ticket;
      body.timeMs = this.now();
      // (Re)opening the session: a restarted matchd numbers its datagrams from 1 again.
      this.cs.restartReceive();
    }
    const r = await this.request('MATCH_SUBMIT', body);
    if (r.msg.name === 'MATCH_SUBMIT_ACK') this.needTicket = false;
    return r;
  }

  /** Submit and return the matchId (throws on refusal). */
  async submitOk(over: Partial<SubmitBody> = {}): Promise<Bodies['MATCH_SUBMIT_ACK']> {
    const r = await this.submit(over);
    if (r.msg.name !== 'MATCH_SUBMIT_ACK') throw new Error(`submit refused: ${JSON.stringify(r.msg.body)}`);
    return r.msg.body;
  }

  close(): Promise<void> {
    return this.client.close();
  }
}

export const hexOf = (b: Uint8Array): string => Buffer.from(b).toString('hex');

/**
 * Wait until `cond` holds: for an event seen only as state (an ack processed by matchd), polled
 * every 10 ms. No timing assertion: only a generous upper bound, after which the test fails.
 */
export async function until(cond: () => boolean, timeoutMs = 10_000, what = 'condition'): Promise<void> {
  const start = Date.now();
  while (!cond()) {
    if (Date.now() - start > timeoutMs) throw new Error(`timeout waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}
