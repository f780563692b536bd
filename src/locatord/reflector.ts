// The NAT reflector, RFC 5780 style: REFLECT -> REFLECT_RESULT {observed, from, otherPort,
// otherIp?}. Sockets on the primary port and an alternate port of the listen address, and, with
// an alternate address, on both ports of that one too. A REFLECT with change bits is answered
// from the socket on the other port (bit 0) and/or the other address (bit 1), so an agent can
// classify its NAT: mapping by comparing `observed` as seen on the primary and the alternate port,
// filtering by whether change-port / change-address answers arrive at all.
//
// Unauthenticated, so: a REFLECT proves nothing about its source and is never charged to one;
// every REFLECT draws on the budget shared by all sources (50 x --reflector-rate and -burst,
// net/server.ts), and no answer is ever larger than the REFLECT that caused it (agents pad REFLECT). DatagramServer enforces that for answers from the
// receiving socket; answers from another socket are sent here, with the same rule.
import type dgram from 'node:dgram';
import type { Logger } from '../common/log.js';
import type { Metrics } from '../common/metrics.js';
import type { HandlerResult, RequestContext } from '../net/server.js';
import { bindUdp, DatagramServer } from '../net/server.js';
import { RateLimiter } from '../net/ratelimit.js';
import type { Address } from '../wire/addr.js';
import { formatAddress, ipToBytes, normaliseIp } from '../wire/addr.js';
import type { Bodies } from '../wire/catalog.js';
import { encodeDatagram } from '../wire/envelope.js';
import { ErrorCode } from '../wire/errors.js';

export const CHANGE_PORT = 1;
export const CHANGE_ADDRESS = 2;

export interface ReflectorOptions {
  host: string;
  port: number;
  altPort: number;
  altIp?: string;
  ratePerS: number;
  burst: number;
  receiveBufferBytes?: number;
  logger: Logger;
  metrics: Metrics;
}

interface Endpoint {
  /** 0 = primary address, 1 = alternate address. */
  ipIndex: number;
  /** 0 = primary port, 1 = alternate port. */
  portIndex: number;
  server: DatagramServer;
  local: Address;
}

export class Reflector {
  readonly limiter: RateLimiter;
  private readonly endpoints: Endpoint[] = [];

  private constructor(private readonly opts: ReflectorOptions) {
    this.limiter = new RateLimiter({ ratePerS: opts.ratePerS, burst: opts.burst });
    opts.metrics.counter('reflections_total', 'REFLECT answers sent, by change bits');
  }

  /** Bind every socket (primary, alternate port, and the alternate address's two if configured). */
  static async start(opts: ReflectorOptions): Promise<Reflector> {
    const r = new Reflector(opts);
    const bind = async (host: string, port: number): Promise<dgram.Socket> =>
      bindUdp({ host, port, ...(opts.receiveBufferBytes ? { receiveBufferBytes: opts.receiveBufferBytes } : {}) });
    try {
      const primary = await bind(opts.host, opts.port);
      r.add(primary, 0, 0);
      // Port 0 asks for any free port: the alternate address then uses the same two numbers.
      const port = primary.address().port;
      r.add(await bind(opts.host, opts.altPort), 0, 1);
      const altPort = r.endpoints[1]!.local.port;
      if (opts.altIp) {
        r.add(await bind(opts.altIp, port), 1, 0);
        r.add(await bind(opts.altIp, altPort), 1, 1);
      }
    } catch (err) {
      await r.close();
      throw err;
    }
    return r;
  }

  private add(socket: dgram.Socket, ipIndex: number, portIndex: number): void {
    const a = socket.address();
    const ep: Endpoint = {
      ipIndex, portIndex, local: { ip: normaliseIp(a.address), port: a.port },
      server: new DatagramServer({
        service: 'reflector', socket, logger: this.opts.logger, metrics: this.opts.metrics, rateLimiter: this.limiter,
        // Stateless: nothing is cached, a retransmitted REFLECT is simply answered again.
        replyCacheMax: 1, exchangeLifetimeMs: 1,
        handlers: { REFLECT: (ctx) => this.reflect(ep, ctx) },
      }),
    };
    this.endpoints.push(ep);
  }

  get port(): number {
    return this.endpoints[0]!.local.port;
  }

  get altPort(): number {
    return this.endpoints[1]!.local.port;
  }

  private endpoint(ipIndex: number, portIndex: number): Endpoint | undefined {
    return this.endpoints.find((e) => e.ipIndex === ipIndex && e.portIndex === portIndex);
  }

  private reflect(at: Endpoint, ctx: RequestContext<'REFLECT'>): HandlerResult {
    const change = ctx.msg.body.change ?? 0;
    const ipIndex = change & CHANGE_ADDRESS ? 1 - at.ipIndex : at.ipIndex;
    const portIndex = change & CHANGE_PORT ? 1 - at.portIndex : at.portIndex;
    const out = this.endpoint(ipIndex, portIndex);
    if (!out) return { error: ErrorCode.BAD_MESSAGE, message: 'no alternate address configured' };
    const other = this.endpoint(at.ipIndex, 1 - at.portIndex)!;
    const body: Bodies['REFLECT_RESULT'] = { observed: ctx.from, from: out.local, otherPort: other.local.port };
    const otherIp = this.endpoint(1 - at.ipIndex, at.portIndex);
    if (otherIp) {
      const b = ipToBytes(otherIp.local.ip);
      if (b) body.otherIp = b;
    }
    this.opts.metrics.inc('reflections_total', { change: String(change) });
    if (out === at) return ctx.reply('REFLECT_RESULT', body);
    const bytes = encodeDatagram('REFLECT_RESULT', ctx.msg.rid, body);
    // Anti-amplification, as DatagramServer does for its own answers.
    if (bytes.length > ctx.raw.length) {
      this.opts.metrics.inc('dropped_total', { reason: 'amplification' });
      this.opts.logger.refusal('drop:amplification', { from: formatAddress(ctx.from), type: 'REFLECT', reply: bytes.length, request: ctx.raw.length });
      return null;
    }
    out.server.send(bytes, ctx.from);
    return null;
  }

  setRate(ratePerS: number, burst: number): void {
    this.limiter.setRate(ratePerS, burst);
  }

  async close(): Promise<void> {
    await Promise.all(this.endpoints.map((e) => e.server.close()));
  }
}
