// The datagram envelope. Every devloc datagram is one CBOR array:
//
//   [version, type, requestId, body]                     unauthenticated / sealed messages
//   [version, type, requestId, body, [sessionId, seq, mac]]  session-authenticated messages
//
// The MAC is the last 16 bytes of the datagram (the value of the final bstr) and covers every
// byte before it, so it is checked on the received bytes without re-encoding anything.
import type { Bodies, MessageName } from './catalog.js';
import { MessageType, specOf } from './catalog.js';
import type { CborValue } from './cbor.js';
import { cborOut, decodeStrict } from './cbor.js';
import { MAC_BYTES, MAX_DATAGRAM, MAX_DEPTH, MAX_ITEMS, PROTOCOL_VERSION, REQUEST_ID_BYTES, SESSION_ID_BYTES } from './constants.js';
import { ErrorCode } from './errors.js';
import { decodeFields, encodeBody, writeFields } from './schema.js';

export interface SessionAuth {
  /** Session ID: the ticket's cti. */
  sid: Uint8Array;
  /** Sender's sequence number in this session and direction. */
  seq: number;
}

export type Message = {
  [N in MessageName]: {
    name: N;
    type: (typeof MessageType)[N];
    rid: Uint8Array;
    body: Bodies[N];
    auth?: SessionAuth;
  };
}[MessageName];

export type MessageOf<N extends MessageName> = Extract<Message, { name: N }>;

export type DecodeOutcome =
  | { ok: true; msg: Message }
  | {
      ok: false;
      code: ErrorCode;
      reason: string;
      /** Known when the envelope decoded far enough, so a refusal can name the request. */
      rid?: Uint8Array;
      type?: number;
      auth?: SessionAuth;
    };

/** Decode one datagram. Never throws; every refusal carries an error code. */
export function decodeDatagram(bytes: Uint8Array): DecodeOutcome {
  if (bytes.length > MAX_DATAGRAM) {
    return { ok: false, code: ErrorCode.TOO_LARGE, reason: `datagram of ${bytes.length} B exceeds ${MAX_DATAGRAM}` };
  }
  const top = decodeStrict(bytes, { maxDepth: MAX_DEPTH, maxItems: MAX_ITEMS });
  if (!top.ok) return { ok: false, code: top.code, reason: top.reason };
  const v = top.value;
  if (!Array.isArray(v) || v.length < 4 || v.length > 5) {
    // The request ID is still readable when the third item is one, so the refusal can name it.
    const third = Array.isArray(v) ? v[2] : undefined;
    return third instanceof Uint8Array && third.length === REQUEST_ID_BYTES
      ? { ok: false, code: ErrorCode.MALFORMED, reason: 'envelope must be an array of 4 or 5 items', rid: third }
      : { ok: false, code: ErrorCode.MALFORMED, reason: 'envelope must be an array of 4 or 5 items' };
  }
  const [version, type, rid, body, auth] = v as [CborValue, CborValue, CborValue, CborValue, CborValue | undefined];
  if (!(rid instanceof Uint8Array) || rid.length !== REQUEST_ID_BYTES) {
    return { ok: false, code: ErrorCode.MALFORMED, reason: `request ID must be ${REQUEST_ID_BYTES} bytes` };
  }
  if (version !== PROTOCOL_VERSION) {
    return { ok: false, code: ErrorCode.UNSUPPORTED_VERSION, reason: `version ${String(version)} not supported`, rid };
  }
  const spec = typeof type === 'number' ? specOf(type) : undefined;
  if (!spec) return { ok: false, code: ErrorCode.UNKNOWN_TYPE, reason: `unknown message type ${String(type)}`, rid };
  let sessionAuth: SessionAuth | undefined;
  if (auth !== undefined) {
    if (spec.auth !== 'session' && spec.name !== 'ERROR') {
      return { ok: false, code: ErrorCode.BAD_MESSAGE, reason: `${spec.name} takes no session auth`, rid, type: type as number };
    }
    if (
      !Array.isArray(auth) || auth.length !== 3 ||
      !(auth[0] instanceof Uint8Array) || auth[0].length !== SESSION_ID_BYTES ||
      typeof auth[1] !== 'number' || auth[1] < 0 ||
      !(auth[2] instanceof Uint8Array) || auth[2].length !== MAC_BYTES
    ) {
      return { ok: false, code: ErrorCode.BAD_MESSAGE, reason: 'auth must be [sid(16), seq, mac(16)]', rid, type: type as number };
    }
    sessionAuth = { sid: auth[0], seq: auth[1] };
  } else if (spec.auth === 'session') {
    return { ok: false, code: ErrorCode.BAD_MESSAGE, reason: `${spec.name} requires session auth`, rid, type: type as number };
  }
  const fail = (code: ErrorCode, reason: string): DecodeOutcome =>
    sessionAuth
      ? { ok: false, code, reason, rid, type: type as number, auth: sessionAuth }
      : { ok: false, code, reason, rid, type: type as number };
  if (!(body instanceof Map)) return fail(ErrorCode.BAD_MESSAGE, 'body must be a map');
  const fields = decodeFields(spec.fields, body);
  if (!fields.ok) return fail(ErrorCode.BAD_MESSAGE, fields.reason);
  const msg = { name: spec.name, type, rid, body: fields.value } as Message;
  if (sessionAuth) msg.auth = sessionAuth;
  return { ok: true, msg };
}

/** The MAC slot's placeholder: only ever read (copied into the encoded bytes), never written. */
const ZERO_MAC = new Uint8Array(MAC_BYTES);

/**
 * A body encoded once for many datagrams (a push fanned out to its watchers: each copy has its
 * own request ID, session and MAC, the body is the same). encodeDatagram with it gives the same
 * bytes as with the body itself.
 */
export class EncodedBody<N extends MessageName = MessageName> {
  private constructor(readonly name: N, readonly bytes: Buffer) {}

  static of<N extends MessageName>(name: N, body: Bodies[N]): EncodedBody<N> {
    return new EncodedBody(name, encodeBody(specOf(MessageType[name])!.fields, body as Record<string, unknown>));
  }
}

/**
 * Encode a message. With `auth`, the MAC slot is 16 zero bytes: fill it with `session.seal`.
 * Throws only on a programming error (a body that does not fit the schema).
 */
export function encodeDatagram<N extends MessageName>(
  name: N,
  rid: Uint8Array,
  body: Bodies[N] | EncodedBody<N>,
  auth?: SessionAuth,
): Buffer {
  const type = MessageType[name];
  // One pass into the encoder's output: the envelope, the body (already encoded, or field by
  // field), the auth array.
  cborOut.start();
  cborOut.head(4, auth ? 5 : 4);
  cborOut.value(PROTOCOL_VERSION);
  cborOut.value(type);
  cborOut.value(rid);
  if (body instanceof EncodedBody) cborOut.raw(body.bytes);
  else writeFields(specOf(type)!.fields, body as Record<string, unknown>);
  if (auth) {
    cborOut.head(4, 3);
    cborOut.value(auth.sid);
    cborOut.value(auth.seq);
    cborOut.value(ZERO_MAC);
  }
  return cborOut.take();
}

/** Bytes covered by the MAC: everything but the trailing 16-byte tag. */
export function macCovered(datagram: Uint8Array): Uint8Array {
  return datagram.subarray(0, datagram.length - MAC_BYTES);
}

export function macTag(datagram: Uint8Array): Uint8Array {
  return datagram.subarray(datagram.length - MAC_BYTES);
}
