// The message types are computed from the catalog (src/wire/catalog.ts, BodyOf in schema.ts),
// so no hand copy can drift from it. Most of this file is checked by the compiler
// (`npx tsc -p test`, part of `npm test`): `Equal` assertions pin what the derivation gives,
// and `@ts-expect-error` lines prove that changing a field spec changes (or breaks) the type.
// The tap part checks at run time what the types stand for: every field a message type names is
// a field of the catalog, with the same optionality.
import t from 'tap';
import type { Address } from '../../src/wire/addr.js';
import type {
  AddrEntry, AuthGrant, AuthInner, Bodies, Introduction, MatchMember, MemberEntry, MessageName, RegistrationAck, RelayGrant, Requirement, TicketGrant,
} from '../../src/wire/catalog.js';
import { authGrantFields, authInnerFields, catalog, MessageType } from '../../src/wire/catalog.js';
import type { BodyOf, Field, FieldType, Props, ValueOf } from '../../src/wire/schema.js';

// Exact type equality (distinguishes optional from required, readonly from mutable, any).
type Equal<A, B> = (<T>() => T extends A ? 1 : 2) extends <T>() => T extends B ? 1 : 2 ? true : false;
const assertType = <T extends true>(): T => true as T;

// --- The derivation rules, on small specs -----------------------------------------------------
const spec = [
  { key: 1, name: 'id', type: { t: 'bstr', min: 16, max: 16 }, required: true, doc: '' },
  { key: 2, name: 'n', type: { t: 'uint', max: 6 }, doc: '' },
  { key: 3, name: 'where', type: { t: 'array', of: { t: 'addr' }, max: 4 }, required: true, doc: '' },
  { key: 4, name: 'inner', type: { t: 'struct', fields: [{ key: 1, name: 'ok', type: { t: 'bool' }, required: true, doc: '' }] }, doc: '' },
  { key: 5, name: 'p', type: { t: 'props', max: 4 }, doc: '' },
  { key: 6, name: 's', type: { t: 'tstr', max: 9 }, required: false, doc: '' },
] as const satisfies readonly Field[];
type Body = BodyOf<typeof spec>;
assertType<Equal<Body, { id: Uint8Array; where: Address[]; n?: number; inner?: { ok: boolean }; p?: Props; s?: string }>>();
assertType<Equal<BodyOf<readonly []>, Record<string, never>>>();
assertType<Equal<ValueOf<{ t: 'array'; of: { t: 'array'; of: { t: 'tstr'; max: 1 }; max: 1 }; max: 1 }>, string[][]>>();
// A spec that lost its literal types (typed as plain Field[]) gives never, not an index signature.
assertType<Equal<BodyOf<readonly Field[]>, never>>();

// Changing a spec changes the type: required -> optional, uint -> tstr, a rename.
const relaxed = [{ key: 1, name: 'id', type: { t: 'bstr', max: 16 }, doc: '' }] as const satisfies readonly Field[];
const retyped = [{ key: 1, name: 'id', type: { t: 'tstr', max: 16 }, required: true, doc: '' }] as const satisfies readonly Field[];
const renamed = [{ key: 1, name: 'ident', type: { t: 'bstr', max: 16 }, required: true, doc: '' }] as const satisfies readonly Field[];
const strict = [{ key: 1, name: 'id', type: { t: 'bstr', max: 16 }, required: true, doc: '' }] as const satisfies readonly Field[];
export const typed: BodyOf<typeof strict> = { id: new Uint8Array(16) };
export const relaxedOk: BodyOf<typeof relaxed> = {};
// @ts-expect-error -- a required field cannot be left out
export const strictMissing: BodyOf<typeof strict> = {};
// @ts-expect-error -- retyped to text: bytes no longer fit
export const retypedBytes: BodyOf<typeof retyped> = { id: new Uint8Array(16) };
// @ts-expect-error -- renamed: the old name is an excess property
export const renamedOld: BodyOf<typeof renamed> = { id: new Uint8Array(16) };
// @ts-expect-error -- an empty message takes no fields
export const emptyWithField: BodyOf<readonly []> = { x: 1 };

// --- The real catalog --------------------------------------------------------------------------
// Every message has a body type, and none is an index signature (the catalog kept `as const`).
assertType<Equal<keyof Bodies, MessageName>>();
type IndexSignatures = { [N in MessageName]: string extends keyof Bodies[N] ? (Bodies[N] extends Record<string, never> ? never : N) : never }[MessageName];
assertType<Equal<IndexSignatures, never>>();
// The exported entry names are the catalog's structs, wherever the catalog uses them.
assertType<Equal<Bodies['QUERY_ADDR_RESULT'], { entries: AddrEntry[]; nextCursor?: number }>>();
assertType<Equal<Bodies['GROUP_MEMBERS_RESULT'], { members: MemberEntry[]; total: number; nextCursor?: number; name?: string }>>();
assertType<Equal<NonNullable<Bodies['MATCH_SUBMIT']['requirements']>, Requirement[]>>();
assertType<Equal<NonNullable<Bodies['MATCH_RESULT']['members']>, MatchMember[]>>();
assertType<Equal<Bodies['INTRO'], Introduction>>();
assertType<Equal<Bodies['INTRODUCE_ACK'], Introduction>>();
assertType<Equal<Bodies['REGISTER_ACK'], RegistrationAck>>();
assertType<Equal<Bodies['REFRESH_ACK'], RegistrationAck>>();
assertType<Equal<AuthGrant['tickets'], TicketGrant[]>>();
assertType<Equal<AuthGrant['relays'], RelayGrant[] | undefined>>();
// A few shapes spelled out, as the code using them relies on them.
assertType<Equal<RegistrationAck, { observed: Address; ttlS: number; refreshS: number; locatorId: Uint8Array }>>();
assertType<Equal<AuthInner, { deviceId: string; timeMs: number; nonce: Uint8Array; audiences: string[]; cnf: Uint8Array; signature: Uint8Array }>>();
assertType<Equal<TicketGrant, { aud: string; ticket: Uint8Array; serviceKey: Uint8Array; exp: number; addr?: Address }>>();
assertType<Equal<Bodies['REGISTER']['joinGroups'], { groupId: Uint8Array; nonce?: Uint8Array; proof?: Uint8Array }[] | undefined>>();
assertType<Equal<Bodies['PROBE'], Record<string, never>>>();
assertType<Equal<Bodies['ERROR'], { code: number; message?: string; retryAfterMs?: number; cookie?: Uint8Array }>>();

// --- Run time: the field lists the types are computed from --------------------------------------
/** Required and optional field names of a list, recursively, as `a.b` paths. */
function shape(fields: readonly Field[], prefix = ''): string[] {
  const out: string[] = [];
  for (const f of fields) {
    out.push(`${prefix}${f.name}${f.required ? '' : '?'}`);
    let type: FieldType = f.type;
    while (type.t === 'array') type = type.of;
    if (type.t === 'struct') out.push(...shape(type.fields, `${prefix}${f.name}.`));
  }
  return out;
}

t.test('every message spec is named after its type and has unique field keys and names', async (t) => {
  const names = Object.keys(MessageType) as MessageName[];
  t.equal(Object.keys(catalog).length, names.length, 'one spec per message type');
  for (const name of names) {
    const s = catalog[MessageType[name]];
    t.equal(s.name, name, `${name}: spec name`);
    t.equal(new Set(s.fields.map((f) => f.key)).size, s.fields.length, `${name}: keys unique`);
    t.equal(new Set(s.fields.map((f) => f.name)).size, s.fields.length, `${name}: names unique`);
  }
});

t.test('the sealed inner structures are the specs the types come from', async (t) => {
  // AuthInner above is pinned to these names; a spec edit fails here and in the type assertion.
  t.same(shape(authInnerFields), ['deviceId', 'timeMs', 'nonce', 'audiences', 'cnf', 'signature']);
  t.same(shape(authGrantFields), ['locatorId', 'tickets', 'tickets.aud', 'tickets.ticket', 'tickets.serviceKey', 'tickets.exp', 'tickets.addr?', 'nonce',
    'relays?', 'relays.name', 'relays.udp?', 'relays.tcp?', 'relays.tls?', 'relays.tlsName?', 'relays.username', 'relays.password', 'relays.exp']);
  t.same(shape(catalog[MessageType.REGISTER_ACK].fields), ['observed', 'ttlS', 'refreshS', 'locatorId']);
});
