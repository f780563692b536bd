// The lease of a channel opened over the control socket (devloc-agent(8), connect): closed when
// no channel command names it for 60 s, renewed by any of them, channel.recv with max 0 included,
// which takes neither messages nor the loss count. Fake agent and channel, fake clock.
import t from 'tap';
import { EventEmitter } from 'node:events';
import type { Agent } from '../../src/agent/agent.js';
import type { Channel } from '../../src/agent/channel.js';
import { channelRegistry, dispatchChannel } from '../../src/agent/channel-control.js';

class FakeChannel extends EventEmitter {
  state = 'open';
  reason: string | undefined;
  constructor(readonly idHex: string) {
    super();
  }
  close(reason: string): void {
    if (this.state !== 'open') return;
    this.state = 'closed';
    this.reason = reason;
    this.emit('close', reason);
  }
  summary(): Record<string, unknown> {
    return { channel: this.idHex, peer: 'p', names: [], role: 'initiator', path: null, punchMs: null, state: this.state, ...(this.reason ? { reason: this.reason } : {}) };
  }
}

function fakeAgent(): { agent: Agent; channels: Map<string, FakeChannel> } {
  const channels = new Map<string, FakeChannel>();
  const agent = Object.assign(new EventEmitter(), {
    punch: { get: (id: string) => channels.get(id) },
    connect: async () => {
      const ch = new FakeChannel(`c${channels.size + 1}`.padEnd(32, '0'));
      channels.set(ch.idHex, ch);
      ch.once('close', () => channels.delete(ch.idHex)); // as PeerManager.get: live channels only
      return ch as unknown as Channel;
    },
  });
  return { agent: agent as unknown as Agent, channels };
}

t.test('a leased channel closes after 60 s untouched; any channel command renews it', async (t) => {
  let now = 1_000_000;
  const { agent, channels } = fakeAgent();
  const reg = channelRegistry(agent, () => now);
  t.teardown(() => agent.emit('stopped'));
  const { channel } = (await dispatchChannel(agent, 'connect', { peer: 'p' })) as { channel: string };
  const ch = channels.get(channel)!;

  now += 59_000;
  reg.sweep();
  t.equal(ch.state, 'open', 'open at 59 s');
  ch.emit('message', Buffer.from('hello'), { n: 1 });
  ch.emit('loss', { missing: 2 });
  const peek = (await dispatchChannel(agent, 'channel.recv', { channel, max: 0 })) as { messages: unknown[]; lost: number; state: string };
  t.same(peek.messages, [], 'max 0 takes no message');
  t.equal(peek.lost, 0, 'nor the loss count');
  t.equal(peek.state, 'open');

  now += 59_000;
  reg.sweep();
  t.equal(ch.state, 'open', 'the peek renewed the lease');
  const got = (await dispatchChannel(agent, 'channel.recv', { channel, waitMs: 0 })) as { messages: { text: string }[]; lost: number };
  t.same(got.messages.map((m) => m.text), ['hello'], 'the message is still there after the peek');
  t.equal(got.lost, 2, 'and so is the loss count');

  now += 60_001;
  reg.sweep();
  t.equal(ch.state, 'closed', 'closed 60 s after the last command');
  t.equal(ch.reason, 'control client went away');
  const after = (await dispatchChannel(agent, 'channel.recv', { channel, max: 0 })) as { state: string; reason?: string };
  t.equal(after.reason, 'control client went away', 'the reason stays readable');

  now += 30_001;
  reg.sweep();
  await t.rejects(dispatchChannel(agent, 'channel.recv', { channel, max: 0 }), { code: 'NOT_FOUND' }, 'forgotten 30 s after it closed');
});

t.test('an incoming channel has no lease', async (t) => {
  let now = 0;
  const { agent } = fakeAgent();
  const reg = channelRegistry(agent, () => now);
  t.teardown(() => agent.emit('stopped'));
  const ch = new FakeChannel('f'.repeat(32));
  agent.emit('channel', ch as unknown as Channel);
  now += 3_600_000;
  reg.sweep();
  t.equal(ch.state, 'open', 'lives as long as its peer keeps it');
});

t.test('channel.recv refuses a max outside 0..256', async (t) => {
  const { agent } = fakeAgent();
  channelRegistry(agent, () => 0);
  t.teardown(() => agent.emit('stopped'));
  const { channel } = (await dispatchChannel(agent, 'connect', { peer: 'p' })) as { channel: string };
  await t.rejects(dispatchChannel(agent, 'channel.recv', { channel, max: -1 }), { code: 'BAD_REQUEST' });
  await t.rejects(dispatchChannel(agent, 'channel.recv', { channel, max: 257 }), { code: 'BAD_REQUEST' });
});
