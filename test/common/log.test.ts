// Logger: JSON lines, levels, and flood-safe refusal lines on a fake clock.
import t from 'tap';
import { Logger } from '../../src/common/log.js';

function logger(level: 'debug' | 'info' | 'warn' | 'error' = 'info', refusalIntervalMs?: number) {
  const clock = { ms: Date.UTC(2026, 0, 1) };
  const lines: Record<string, unknown>[] = [];
  const raw: string[] = [];
  const log = new Logger({
    service: 'locatord', level, now: () => clock.ms,
    write: (l) => {
      raw.push(l);
      lines.push(JSON.parse(l) as Record<string, unknown>);
    },
    ...(refusalIntervalMs !== undefined ? { refusalIntervalMs } : {}),
  });
  return { log, clock, lines, raw };
}

t.test('one JSON object per line with ts, level, svc, msg and fields', async (t) => {
  const { log, lines, raw } = logger();
  log.info('listening', { udp: 4701 });
  t.equal(raw.length, 1);
  t.notMatch(raw[0]!, /\n/, 'one line');
  t.same(lines[0], { ts: '2026-01-01T00:00:00.000Z', level: 'info', svc: 'locatord', msg: 'listening', udp: 4701 });
});

t.test('levels below the threshold are not written; the level can change', async (t) => {
  const { log, lines } = logger('warn');
  log.debug('d');
  log.info('i');
  log.warn('w');
  log.error('e');
  t.same(lines.map((l) => l['msg']), ['w', 'e']);
  log.level = 'debug';
  log.debug('d2');
  t.equal(lines.at(-1)?.['msg'], 'd2');
});

t.test('refusal(): one line per event per interval, then the suppressed count', async (t) => {
  const { log, clock, lines } = logger('info', 1000);
  for (let i = 0; i < 50; i++) log.refusal('decode:MALFORMED', { from: `198.51.100.${i}:1` });
  t.equal(lines.length, 1, 'a flood of 50 gives one line');
  t.match(lines[0], { level: 'warn', msg: 'refused', event: 'decode:MALFORMED', from: '198.51.100.0:1' });
  t.notOk('suppressedSinceLast' in lines[0]!);
  log.refusal('REGISTER:BAD_MAC', { from: 'x' });
  t.equal(lines.length, 2, 'another event has its own budget');
  clock.ms += 999;
  log.refusal('decode:MALFORMED', { from: 'y' });
  t.equal(lines.length, 2, 'still inside the interval');
  clock.ms += 1;
  log.refusal('decode:MALFORMED', { from: 'z' });
  t.equal(lines.length, 3, 'a line once the interval has passed');
  t.equal(lines[2]?.['suppressedSinceLast'], 50, '49 + 1 suppressed in between');
  clock.ms += 1000;
  log.refusal('decode:MALFORMED', { from: 'w' });
  t.notOk('suppressedSinceLast' in lines[3]!, 'nothing suppressed since');
});

t.test('refusal() memory stays bounded under many distinct events', async (t) => {
  const { log, lines } = logger();
  for (let i = 0; i < 5000; i++) log.refusal(`event-${i}`, {});
  t.equal(lines.length, 5000, 'distinct events are each logged');
  const size = (log as unknown as { lastRefusal: Map<string, unknown> }).lastRefusal.size;
  t.ok(size <= 1001, `tracking at most ~1000 events (${size})`);
});

t.test('refusals follow the level too', async (t) => {
  const { log, lines } = logger('error');
  log.refusal('x', {});
  t.equal(lines.length, 0);
});
