// Certificates made with certtool for tests of TLS (NBD exports, the remote rig aside).
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';

import { run } from './process.js';

/** A self-signed CA made with certtool, valid for two days. */
export async function makeCa(dir: string, name: string): Promise<{ cert: string; key: string }> {
  const key = join(dir, `${name}-key.pem`);
  const cert = join(dir, `${name}-cert.pem`);
  const template = join(dir, `${name}.info`);
  await run('certtool', ['--generate-privkey', '--outfile', key]);
  await writeFile(template, `cn = ${name}\nca\ncert_signing_key\nexpiration_days = 2\n`);
  await run('certtool', ['--generate-self-signed', '--load-privkey', key, '--template', template, '--outfile', cert]);
  return { cert, key };
}

/** A server or client certificate for localhost and 127.0.0.1, signed by `ca`. */
export async function makeSignedCert(
  dir: string,
  name: string,
  ca: { cert: string; key: string },
  role: 'tls_www_server' | 'tls_www_client',
): Promise<{ cert: string; key: string }> {
  const key = join(dir, `${name}-key.pem`);
  const cert = join(dir, `${name}-cert.pem`);
  const template = join(dir, `${name}.info`);
  await run('certtool', ['--generate-privkey', '--outfile', key]);
  await writeFile(template, `cn = localhost\ndns_name = localhost\nip_address = 127.0.0.1\n${role}\nencryption_key\nsigning_key\nexpiration_days = 2\n`);
  await run('certtool', [
    '--generate-certificate',
    '--load-privkey',
    key,
    '--load-ca-certificate',
    ca.cert,
    '--load-ca-privkey',
    ca.key,
    '--template',
    template,
    '--outfile',
    cert,
  ]);
  return { cert, key };
}
