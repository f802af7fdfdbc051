import test, { type ExecutionContext } from 'ava';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { NbdClient, NbdOptionError } from '../../src/nbd/index.js';
import { makeCa, makeSignedCert } from '../helpers/certificates.js';
import { run, startQemuNbd, tempDir } from './helpers.js';

/** qemu-nbd serving a small qcow2 over TLS, certificates made for the test. */
async function serveWithTls(t: ExecutionContext) {
  const dir = await tempDir(t, 'nbd-tls-');
  const ca = await makeCa(dir, 'test-ca');
  const otherCa = await makeCa(dir, 'other-ca');
  const server = await makeSignedCert(dir, 'server', ca, 'tls_www_server');
  const client = await makeSignedCert(dir, 'client', ca, 'tls_www_client');
  // qemu wants fixed file names in one directory.
  const credentials = join(dir, 'qemu-creds');
  await mkdir(credentials);
  await writeFile(join(credentials, 'ca-cert.pem'), await readFile(ca.cert));
  await writeFile(join(credentials, 'server-cert.pem'), await readFile(server.cert));
  await writeFile(join(credentials, 'server-key.pem'), await readFile(server.key));

  const image = join(dir, 'disk.qcow2');
  await run('qemu-img', ['create', '-q', '-f', 'qcow2', image, '2M']);
  await run('qemu-io', ['-f', 'qcow2', '-c', 'write -P 0x42 64k 300k', image]);
  const expectedFile = join(dir, 'expected.raw');
  await run('qemu-img', ['convert', '-O', 'raw', image, expectedFile]);
  const socket = join(dir, 'tls.sock');
  await startQemuNbd(t, { path: socket }, [
    '--object',
    `tls-creds-x509,id=tls0,endpoint=server,dir=${credentials},verify-peer=on`,
    '--tls-creds',
    'tls0',
    '--read-only',
    '-f',
    'qcow2',
    image,
  ]);
  return { socket, ca, otherCa, client, expected: await readFile(expectedFile) };
}

test('a TLS export reads the same bytes, with a client certificate', async (t) => {
  const { socket, ca, client: clientCert, expected } = await serveWithTls(t);
  const client = await NbdClient.connect({
    path: socket,
    tls: { ca: await readFile(ca.cert), cert: await readFile(clientCert.cert), key: await readFile(clientCert.key) },
  });
  t.teardown(() => client.close());
  await client.ready();
  // Over TLS every request in flight goes on one connection, 8 MiB deep (see client.ts).
  t.true(client.canMultiConn);
  t.is(client.connectionCount, 1);
  t.is(client.maxBytesInFlight, 8 * 1024 * 1024);
  t.true((await client.read(0, client.size)).equals(expected));
  let dataBytes = 0;
  for await (const chunk of client.chunks()) if (chunk.kind === 'data') dataBytes += chunk.length;
  t.true(dataBytes > 0 && dataBytes < client.size);
});

test('a TLS export refuses a client that trusts another CA, or that skips TLS', async (t) => {
  const { socket, otherCa, client: clientCert } = await serveWithTls(t);
  const error = await t.throwsAsync(
    NbdClient.connect({
      path: socket,
      tls: { ca: await readFile(otherCa.cert), cert: await readFile(clientCert.cert), key: await readFile(clientCert.key) },
    }),
  );
  t.regex(error.message, /certificate/i);
  const plain = await t.throwsAsync(NbdClient.connect({ path: socket }), { instanceOf: NbdOptionError });
  t.is(plain.code, 'NBD_REP_ERR_TLS_REQD');
});
