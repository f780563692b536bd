// The Redis fixtures' own guarantees, which every Redis test relies on: a port taken between
// finding it free and redis-server's bind is noticed (another process answering there) and the
// Cluster nodes start again on other ports, leaving nothing running behind.
import t from 'tap';
import type { Test } from 'tap';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { portFree } from '../../src/common/preflight.js';
import { needs } from '../ops/tools.js';
import { clusterNodePorts, expectOwnServers, hasRedis, startClusterNodes } from './fixtures/redis-server.js';

const noRedis = needs('redis-server and redis-cli', hasRedis()).skip; // required in CI

/**
 * Another process listening on a free 127.0.0.1 port and answering anything with +PONG: a
 * stranger where a redis-server was to be. (A process of its own: the fixture asks redis-cli with
 * spawnSync, which would block a server in this one.)
 */
async function stranger(t: Test): Promise<number> {
  const code = "const s=require('net').createServer(c=>{c.on('data',()=>c.write('+PONG\\r\\n'));c.on('error',()=>c.destroy())});s.listen(0,'127.0.0.1',()=>console.log(s.address().port))";
  const child = spawn(process.execPath, ['-e', code], { stdio: ['ignore', 'pipe', 'inherit'] });
  t.teardown(() => {
    child.kill('SIGKILL');
  });
  const [line] = (await once(child.stdout!.setEncoding('utf8'), 'data')) as [string];
  return Number(line.trim());
}

const listening = async (port: number): Promise<boolean> => (await portFree('tcp', '127.0.0.1', port)) !== null;

t.test('startClusterNodes: a port another process answers on is given up, the nodes start again elsewhere', { skip: noRedis }, async (t) => {
  const taken = await stranger(t);
  const handedOut: number[][] = [];
  const nodes = await startClusterNodes(t, 3, () => [], async (n) => {
    // The first attempt gets the stranger's port among free ones; later attempts only free ones.
    const ports = handedOut.length === 0 ? [taken, ...(await clusterNodePorts(n - 1))] : await clusterNodePorts(n);
    handedOut.push(ports);
    return ports;
  });
  t.equal(handedOut.length, 2, 'a second attempt');
  t.notOk(nodes.ports.includes(taken), 'not on the taken port');
  t.same(nodes.ports, handedOut[1]);
  t.doesNotThrow(() => expectOwnServers(nodes.procs), 'each port answered by its own redis-server');
  t.equal(nodes.procs.size, 3, 'only the second attempt\'s servers are kept');
  for (const p of handedOut[0]!.slice(1)) t.notOk(await listening(p), `the first attempt's server on ${p} was stopped`);
});

t.test('startClusterNodes: after three attempts it fails, and stops every server it started', { skip: noRedis }, async (t) => {
  const taken = await stranger(t);
  const handedOut: number[][] = [];
  await t.rejects(
    startClusterNodes(t, 2, () => [], async (n) => {
      const ports = [taken, ...(await clusterNodePorts(n - 1))];
      handedOut.push(ports);
      return ports;
    }),
    /another process answers there/,
  );
  t.equal(handedOut.length, 3, 'three attempts');
  for (const ports of handedOut) for (const p of ports.slice(1)) t.notOk(await listening(p), `the server on ${p} was stopped`);
});
