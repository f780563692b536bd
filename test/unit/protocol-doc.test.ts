// man/devloc-protocol.7 against the code it documents: the same messages (name and type code),
// the same error codes (name and number), every field of every message (nested ones too) in
// that message's section, an example per message, and generated blocks that are up to date.
// The page is parsed here with its own small regexps, not with the generator, so a generator
// bug cannot hide a drift.
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import t from 'tap';
import { manPath, regenerate } from '../../tools/gen-protocol-man.js';
import { catalog } from '../../src/wire/catalog.js';
import type { MessageType } from '../../src/wire/catalog.js';
import { ErrorCode } from '../../src/wire/errors.js';
import type { Field } from '../../src/wire/schema.js';
import { has, needs } from '../ops/tools.js';

const page = readFileSync(manPath, 'utf8');
const hexType = (n: number): string => `0x${n.toString(16).padStart(2, '0')}`;

/** Lines of the section `.Sh name`, up to the next `.Sh`. */
function section(name: string): string[] {
  const lines = page.split('\n');
  const start = lines.findIndex((l) => l === `.Sh ${name}` || l === `.Sh "${name}"`);
  if (start < 0) return [];
  const end = lines.findIndex((l, i) => i > start && l.startsWith('.Sh '));
  return lines.slice(start + 1, end < 0 ? undefined : end);
}

/** Subsections of `lines` by their `.Ss` title (quotes removed). */
function subsections(lines: string[]): Map<string, string[]> {
  const out = new Map<string, string[]>();
  let current: string[] | undefined;
  for (const l of lines) {
    const m = /^\.Ss "?(.*?)"?$/.exec(l);
    if (m) {
      current = [];
      out.set(m[1]!, current);
    } else current?.push(l);
  }
  return out;
}

/** "key name" of every field, nested maps as "1.2 parent[].child" (the page's convention). */
function expectedFields(fields: readonly Field[], keyPrefix = '', namePrefix = ''): string[] {
  const out: string[] = [];
  for (const f of fields) {
    out.push(`${keyPrefix}${f.key} ${namePrefix}${f.name}`);
    const t = f.type;
    if (t.t === 'struct') out.push(...expectedFields(t.fields, `${keyPrefix}${f.key}.`, `${namePrefix}${f.name}.`));
    if (t.t === 'array' && t.of.t === 'struct') out.push(...expectedFields(t.of.fields, `${keyPrefix}${f.key}.`, `${namePrefix}${f.name}[].`));
  }
  return out.sort();
}

const messages = subsections(section('MESSAGES'));
const specs = Object.entries(catalog).map(([type, spec]) => ({ type: Number(type) as MessageType, spec }));

t.test('the page and the catalog name the same messages with the same type codes', async (t) => {
  const inPage = [...messages.keys()].filter((k) => /^[A-Z_]+ \(0x[0-9a-f]{2}\)$/.test(k)).sort();
  const inCatalog = specs.map(({ type, spec }) => `${spec.name} (${hexType(type)})`).sort();
  t.ok(inCatalog.length >= 33, 'the catalog has its messages');
  t.same(inPage, inCatalog, 'message headings in MESSAGES are the catalog, by name and type code');
  t.same([...messages.keys()].filter((k) => !inPage.includes(k)), [], 'MESSAGES has no other subsections');
});

t.test('each message section lists exactly its fields', async (t) => {
  for (const { type, spec } of specs) {
    const lines = messages.get(`${spec.name} (${hexType(type)})`);
    if (!lines) continue; // reported by the test above
    const listed = lines.map((l) => /^\.It Li (\S+) (\S+) Pq /.exec(l)).filter((m) => m !== null).map((m) => `${m[1]} ${m[2]}`).sort();
    t.same(listed, expectedFields(spec.fields), `${spec.name}: fields by key and name`);
    for (const f of spec.fields) t.ok(lines.some((l) => l.includes(f.name)), `${spec.name}: ${f.name} appears in its section`);
    if (spec.fields.length === 0) t.ok(lines.some((l) => l.includes('empty map')), `${spec.name}: says the body is empty`);
  }
});

t.test("every request a server serves lists its own refusals, each code in its section's Refusals item", async (t) => {
  // Requests (even types) sent to a server: by a terminal, or by authd to a service.
  const served = specs.filter(({ type, spec }) => type % 2 === 0 && ['terminal->server', 'terminal->authd', 'authd->server'].includes(spec.direction));
  t.ok(served.length >= 20, `${served.length} requests`);
  for (const { type, spec } of served) {
    t.ok(spec.refusals !== undefined, `${spec.name}: refusals listed in the catalog`);
    const lines = messages.get(`${spec.name} (${hexType(type)})`) ?? [];
    const at = lines.indexOf('.It Refusals');
    t.ok(at >= 0, `${spec.name}: a Refusals item`);
    const end = lines.findIndex((l, i) => i > at && /^\.It Li /.test(l));
    const text = lines.slice(at, end < 0 ? undefined : end).join(' ');
    for (const r of spec.refusals ?? []) t.match(text, new RegExp(`\\b${r.code}:`), `${spec.name}: ${r.code} in its Refusals`);
  }
});

t.test('the page and ErrorCode list the same error codes with the same numbers', async (t) => {
  const rows = section('ERROR CODES').map((l) => /^\.It Dv ([A-Z_]+) Ta (\d+) Ta /.exec(l)).filter((m) => m !== null).map((m) => `${m[1]}=${m[2]}`).sort();
  const codes = Object.entries(ErrorCode).map(([name, code]) => `${name}=${code}`).sort();
  t.ok(codes.length >= 20, 'ErrorCode has its codes');
  t.same(rows, codes, 'ERROR CODES table is ErrorCode, by name and number');
});

t.test('every message has a hex example', async (t) => {
  const examples = [...subsections(section('EXAMPLES')).keys()];
  for (const { spec } of specs) t.ok(examples.some((e) => e === `${spec.name} example` || e.startsWith(`${spec.name} example `)), `${spec.name} has an example`);
});

t.test('the generated blocks are up to date', async (t) => {
  t.equal(regenerate(page) === page, true, 'man/devloc-protocol.7 is what tools/gen-protocol-man.ts writes (run: npx tsx tools/gen-protocol-man.ts)');
});

t.test('mandoc -T lint -W warning is silent', needs('mandoc', has('mandoc')), async (t) => {
  const r = spawnSync('mandoc', ['-T', 'lint', '-W', 'warning', manPath], { encoding: 'utf8' });
  t.equal(`${r.stdout}${r.stderr}`.trim(), '', 'no warnings');
  t.equal(r.status, 0, 'mandoc exits 0');
});

t.test("the refusal check of the in-process fixtures (test/helpers/refusals.ts) follows the page's lists", async (t) => {
  const { undocumentedRefusal, CheckedMetrics } = await import('../helpers/refusals.js');
  t.equal(undocumentedRefusal('WATCH', 'FULL'), undefined, 'listed for the message');
  t.equal(undocumentedRefusal('WATCH', 'ok'), undefined, 'an answer is no refusal');
  t.equal(undocumentedRefusal('WATCH', 'ADDR_CHALLENGE'), undefined, 'nor a challenge');
  t.equal(undocumentedRefusal('WATCH', 'KICKED'), undefined, 'any session request: the reason its session ended');
  t.equal(undocumentedRefusal('WATCH', 'TRY_LATER'), undefined, "any locatord request: its store's TRY_LATER");
  t.match(undocumentedRefusal('QUERY_ADDR', 'FULL'), /locatord refused QUERY_ADDR with FULL/, 'not listed: reported');
  t.match(undocumentedRefusal('AUTH_REQUEST', 'KICKED'), /AUTH_REQUEST with KICKED/, 'no session, no session ending');
  t.match(undocumentedRefusal('AUTH_REQUEST', 'FORBIDDEN'), /authd refused AUTH_REQUEST with FORBIDDEN/, 'another service, its own list');
  t.match(undocumentedRefusal('GROUP_JOIN', 'INTERNAL'), /INTERNAL/, 'a handler that threw is never documented');
  const reported: string[] = [];
  const m = new CheckedMetrics((why) => reported.push(why));
  m.inc('requests_total', { type: 'WATCH', result: 'FULL' });
  m.inc('requests_total', { type: 'QUERY_ADDR', result: 'FULL' });
  m.inc('refused_total', { code: 'BAD_MAC' });
  t.equal(reported.length, 1, 'only the undocumented handler refusal is reported');
  t.equal(m.get('requests_total', { type: 'QUERY_ADDR', result: 'FULL' }), 1, 'and still counted');
});
