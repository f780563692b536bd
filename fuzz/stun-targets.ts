// Fuzz targets for the agent's STUN/TURN codec and client (src/agent/turn/), registered in
// allTargets() (targets.ts). Promises checked:
//   stun         decodeStun never throws; refusals carry MALFORMED or TOO_LARGE and a reason;
//                a decoded message re-encodes and decodes to the same fields; verifyIntegrity
//                never throws and never accepts a key it was not made with.
//   channeldata  decodeChannelData never throws; what it accepts re-encodes to the input (minus
//                optional UDP padding); streamFrameLength agrees with it over a stream.
//   turn-client  a TurnClient holding an allocation, fed hostile relay datagrams, never throws,
//                stays allocated, and delivers data only from the permitted peer or bound channel.
import { createHmac } from 'node:crypto';
import type { DecodedStun, StunMessage } from '../src/agent/turn/codec.js';
import { decodeChannelData, decodeStun, encodeChannelData, encodeStun, longTermKey, Method, streamFrameLength, verifyIntegrity } from '../src/agent/turn/codec.js';
import type { LinkHandlers } from '../src/agent/turn/client.js';
import { TurnClient } from '../src/agent/turn/client.js';
import { ErrorCode } from '../src/wire/errors.js';
import type { Target } from './targets.js';
import { PropertyViolation } from './targets.js';

function must(cond: unknown, what: string): asserts cond {
  if (!cond) throw new PropertyViolation(what);
}
const norm = (reason: string): string => reason.replace(/0x[0-9a-f]+/gi, 'H').replace(/\d+/g, '#').slice(0, 48);

const tid = Buffer.from('00112233445566778899aabb', 'hex');
const key = Buffer.from('fuzz-key');
const peer = { ip: '192.0.2.10', port: 4000 };

function stunSeeds(): Buffer[] {
  const msgs: [StunMessage, boolean, boolean][] = [
    [{ method: Method.Allocate, cls: 'request', tid, attrs: { requestedTransport: 17, lifetime: 600, username: '1800000000:ab', realm: 'devloc.test', nonce: 'n' } }, true, true],
    [{ method: Method.Allocate, cls: 'success', tid, attrs: { xorRelayedAddress: { ip: '192.0.2.1', port: 50000 }, xorMappedAddress: { ip: '2001:db8::1', port: 1 }, lifetime: 600, software: 'coturn' } }, true, true],
    [{ method: Method.Allocate, cls: 'error', tid, attrs: { errorCode: { code: 401, reason: 'Unauthorized' }, realm: 'devloc.test', nonce: 'abc' } }, false, true],
    [{ method: Method.Data, cls: 'indication', tid, attrs: { xorPeerAddresses: [peer], data: Buffer.from('payload') } }, false, false],
    [{ method: Method.CreatePermission, cls: 'request', tid, attrs: { xorPeerAddresses: [peer, { ip: '2001:db8::2', port: 0 }] } }, true, false],
    [{ method: Method.ChannelBind, cls: 'request', tid, attrs: { channelNumber: 0x4001, xorPeerAddresses: [peer], dontFragment: true } }, false, true],
  ];
  return msgs.map(([m, mi, fp]) => encodeStun(m, { ...(mi ? { integrityKey: key } : {}), fingerprint: fp }));
}

const canonical = (m: DecodedStun): string => JSON.stringify(Object.entries(m.attrs).sort(([x], [y]) => (x < y ? -1 : 1)));
function same(a: DecodedStun, b: DecodedStun): boolean {
  return a.method === b.method && a.cls === b.cls && a.tid.equals(b.tid) && canonical(a) === canonical(b);
}

function stunTarget(): Target {
  return {
    name: 'stun',
    doc: 'decodeStun: refusal codes, decode(encode(m)) = m, verifyIntegrity strict and total',
    seeds: stunSeeds(),
    prepare(input, rng) {
      // Often fix the length field so mutations get past the header check.
      if (input.length >= 20 && rng.chance(0.5)) {
        const b = Buffer.from(input.subarray(0, 20 + ((input.length - 20) & ~3)));
        b.writeUInt16BE(b.length - 20, 2);
        return b;
      }
      return input;
    },
    run(input) {
      const r = decodeStun(input);
      if (!r.ok) {
        must(r.code === ErrorCode.MALFORMED || r.code === ErrorCode.TOO_LARGE, `refusal code ${r.code}`);
        must(typeof r.reason === 'string' && r.reason.length > 0, 'refusal without a reason');
        return `err:${norm(r.reason)}`;
      }
      const m = r.msg;
      must(m.tid.length === 12, 'transaction ID size');
      const verified = verifyIntegrity(m, key);
      must(!verifyIntegrity(m, Buffer.from('another key')) || m.integrityAt === undefined, 'integrity accepted with a wrong key');
      // Unknown attributes may be re-ordered by the encoder; everything typed must survive.
      const enc = encodeStun(m);
      const again = decodeStun(enc);
      must(again.ok && same(again.msg, m), 'decode(encode(m)) differs from m');
      return `ok:${m.cls}:${m.method}:${Object.keys(m.attrs).sort().join(',')}:${verified}:${m.fingerprint}`;
    },
  };
}

function channelDataTarget(): Target {
  return {
    name: 'channeldata',
    doc: 'decodeChannelData over UDP and streams; streamFrameLength agrees with the stream decoder',
    seeds: [encodeChannelData(0x4000, Buffer.from('abc'), false), encodeChannelData(0x4fff, Buffer.from('abcdefg'), true), encodeChannelData(0x4001, Buffer.alloc(0), true)],
    run(input) {
      const out: string[] = [];
      for (const stream of [false, true]) {
        const r = decodeChannelData(input, stream);
        if (!r.ok) {
          must(r.code === ErrorCode.MALFORMED, `refusal code ${r.code}`);
          out.push(`err:${norm(r.reason)}`);
          continue;
        }
        const enc = encodeChannelData(r.frame.channel, r.frame.data, stream);
        // Padding content is ignored (RFC 8656 §12), so only header and data must match.
        const n = 4 + r.frame.data.length;
        must(enc.subarray(0, n).equals(input.subarray(0, n)), 'ChannelData does not re-encode to its input');
        if (stream) must(streamFrameLength(input) === input.length, 'stream framing disagrees with the decoder');
        out.push('ok');
      }
      return out.join('/');
    },
  };
}

/** A client with an allocation, a permission for `peer` and a channel to it, on a fake link that answers like coturn. */
async function allocatedClient(): Promise<{ client: TurnClient; feed(b: Buffer): void }> {
  let h: LinkHandlers | undefined;
  const creds = { username: '4000000000:ab', password: createHmac('sha1', 's').update('4000000000:ab').digest('base64') };
  const k = longTermKey(creds.username, 'fuzz', creds.password);
  const client = new TurnClient({
    server: { host: '192.0.2.1', port: 3478, transport: 'udp' },
    credentials: creds,
    // Refresh timers must not keep the fuzzer's process alive.
    clock: { now: () => Date.now(), setTimeout: (fn, ms) => setTimeout(fn, ms).unref(), clearTimeout: (t) => clearTimeout(t as NodeJS.Timeout) },
    link: async (_s, handlers) => {
      h = handlers;
      return {
        reliable: false,
        close() {},
        send(bytes) {
          const r = decodeStun(bytes);
          if (!r.ok || r.msg.cls !== 'request') return true;
          const m = r.msg;
          const reply = m.attrs.username === undefined
            ? encodeStun({ method: m.method, cls: 'error', tid: m.tid, attrs: { errorCode: { code: 401, reason: 'Unauthorized' }, realm: 'fuzz', nonce: 'n' } })
            : encodeStun({ method: m.method, cls: 'success', tid: m.tid, attrs: m.method === Method.Allocate ? { xorRelayedAddress: { ip: '192.0.2.1', port: 50000 }, lifetime: 600 } : {} }, { integrityKey: k });
          queueMicrotask(() => h!.packet(reply));
          return true;
        },
      };
    },
  });
  client.on('error', () => {});
  await client.allocate();
  await client.bindChannel(peer);
  return { client, feed: (b) => h!.packet(b) };
}

function clientTarget(): Target {
  let made: Promise<{ client: TurnClient; feed(b: Buffer): void }> | undefined;
  return {
    name: 'turn-client',
    doc: 'TurnClient fed hostile relay datagrams: never throws, stays allocated, data only from the permitted peer',
    seeds: [...stunSeeds(), encodeChannelData(0x4000, Buffer.from('hi'), false), encodeChannelData(0x4002, Buffer.from('hi'), false)],
    async run(input) {
      made ??= allocatedClient();
      const { client, feed } = await made;
      let from: string | undefined;
      const on = (p: { ip: string; port: number }): void => {
        from = `${p.ip}`;
      };
      client.on('data', on);
      const before = { ...client.stats.dropped };
      try {
        feed(input);
      } finally {
        client.off('data', on);
      }
      must(client.isAllocated, 'a relay datagram ended the allocation');
      if (from !== undefined) must(from === peer.ip, `data delivered from ${from}, which is not permitted`);
      const dropped = Object.keys(client.stats.dropped).find((k) => client.stats.dropped[k] !== before[k]);
      return from !== undefined ? 'data' : dropped === undefined ? 'ignored' : `drop:${norm(dropped)}`;
    },
  };
}

export function stunTargets(): Target[] {
  return [stunTarget(), channelDataTarget(), clientTarget()];
}
