// The ssh transport's lost reason: libvirt reports only a broken pipe when ssh ended
// at once, and trying the SSH port tells "nothing answers there" from the rest.
import { createServer, type AddressInfo } from 'node:net';

import test from 'ava';

import { sshPortUnreachable, sshReasonLost } from '../../src/libvirt/ssh-reachability.js';

async function listeningPort(): Promise<{ port: number; close(): Promise<void> }> {
  const server = createServer((socket) => socket.destroy());
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { port: (server.address() as AddressInfo).port, close: () => new Promise((resolve) => server.close(() => resolve())) };
}

test('a broken pipe or a bare end of data on an ssh URI has lost its reason; other messages and transports have not', (t) => {
  t.true(sshReasonLost('qemu+ssh://root@127.0.0.1:2222/system', 'Cannot write data: Broken pipe (virConnectOpenAuth)'));
  t.true(sshReasonLost('qemu+ssh://127.0.0.1/system', 'End of file while reading data: : Input/output error'));
  t.false(sshReasonLost('qemu+tls://127.0.0.1/system', 'Cannot write data: Broken pipe'));
  t.false(sshReasonLost('qemu+ssh://127.0.0.1/system', 'Cannot recv data: ssh: connect to host 127.0.0.1 port 1: Connection refused'));
  t.false(sshReasonLost(null, 'Cannot write data: Broken pipe'));
});

test('the SSH port is unreachable when nothing listens there, reachable when something does', async (t) => {
  const open = await listeningPort();
  t.false(await sshPortUnreachable(`qemu+ssh://root@127.0.0.1:${open.port}/system?keyfile=/x`));
  await open.close();
  t.true(await sshPortUnreachable(`qemu+ssh://root@127.0.0.1:${open.port}/system`), 'the same port, closed');
  t.false(await sshPortUnreachable('not a uri'), 'an unparsable URI is not claimed unreachable');
});
