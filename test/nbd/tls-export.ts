import type { ExecutionContext } from 'ava';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';

import { makeCa, makeSignedCert } from '../helpers/certificates.js';
import { run, tempDir } from './helpers.js';

/** Certificates made for the test, qemu-nbd's in its own layout, and a small qcow2 to serve. */
export async function tlsExport(t: ExecutionContext) {
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
  const serverArgs = [
    '--object',
    `tls-creds-x509,id=tls0,endpoint=server,dir=${credentials},verify-peer=on`,
    '--tls-creds',
    'tls0',
    '--read-only',
    '-f',
    'qcow2',
    image,
  ];
  return { dir, serverArgs, ca, otherCa, client, expected: await readFile(expectedFile) };
}
