// DeferredClaim (net/sessions.ts): the shared replay window's claim a handler's store takes,
// folded into its write or alone. One question to the window at most; a verdict once settled.
import t from 'tap';
import { ClaimRefused, DeferredClaim } from '../../src/net/sessions.js';
import type { ClaimVerdict } from '../../src/net/sessions.js';
import { recordingWindow } from './fixtures/net.js';

const owner = { sidHex: '00'.repeat(16), locatorHex: '11'.repeat(16) };

function windowSaying(...verdicts: (ClaimVerdict | Error)[]): ReturnType<typeof recordingWindow> {
  const w = recordingWindow();
  w.verdicts.push(...verdicts);
  return w;
}

t.test('taken alone: asked once, then its verdict', async (t) => {
  const w = windowSaying('ok');
  const c = new DeferredClaim(owner, 7, 1000, '192.0.2.1|1', w);
  t.equal(c.state, 'pending');
  t.equal(await c.take(), 'ok');
  t.equal(c.state, 'taken');
  await c.ensure();
  t.equal(await c.take(), 'ok');
  t.equal(w.claims.length, 1, 'the window was asked once');
});

t.test('refused alone: ensure throws ClaimRefused with the verdict, every time, asking once', async (t) => {
  const w = windowSaying('elsewhere');
  const c = new DeferredClaim(owner, 7, 1000, '192.0.2.1|1', w);
  await t.rejects(c.ensure(), { name: 'ClaimRefused', verdict: 'elsewhere' });
  t.same([c.state, c.verdict], ['refused', 'elsewhere']);
  await t.rejects(c.ensure(), { name: 'ClaimRefused', verdict: 'elsewhere' });
  t.equal(w.claims.length, 1);
  t.ok(new ClaimRefused('old') instanceof Error);
});

t.test('folded into a store command: settled by it, never asked alone', async (t) => {
  const w = windowSaying();
  const c = new DeferredClaim(owner, 7, 1000, '192.0.2.1|1', w);
  c.asking();
  t.equal(c.state, 'unsettled');
  c.settle('replay');
  await t.rejects(c.ensure(), { name: 'ClaimRefused', verdict: 'replay' });
  const d = new DeferredClaim(owner, 8, 1000, '192.0.2.1|1', w);
  d.asking();
  d.settle('ok');
  await d.ensure();
  t.equal(w.claims.length, 0);
});

t.test('the store fails: unsettled, and never read as taken afterwards', async (t) => {
  const w = windowSaying(new Error('redis down'));
  const c = new DeferredClaim(owner, 7, 1000, '192.0.2.1|1', w);
  await t.rejects(c.take(), /redis down/);
  t.equal(c.state, 'unsettled');
  await t.rejects(c.ensure(), /unsettled/, 'not "ok": whether it was taken is unknown');
  t.equal(w.claims.length, 1);
});
