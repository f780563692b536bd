// The baseline: a bare node:dgram echo server (a child process of the bench). What the machine's
// UDP path and the event loop do with no work at all; every other figure is shown against it.
import dgram from 'node:dgram';
import { toParent } from './procs.js';

const socket = dgram.createSocket('udp4');
socket.on('message', (m, r) => socket.send(m, r.port, r.address));
socket.bind(0, '127.0.0.1', () => {
  try {
    socket.setRecvBufferSize(4 << 20);
  } catch {
    /* the system maximum applies */
  }
  toParent({ port: socket.address().port });
});
process.on('disconnect', () => process.exit(0));
