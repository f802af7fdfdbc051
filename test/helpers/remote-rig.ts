// The remote test rig scripts/setup-host.sh sets up (scripts/remote-rig.sh): this host's
// libvirtd reached the way a remote hypervisor is, on 127.0.0.1. Tests never skip when it
// is missing: they fail, saying how to set it up.
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import type { ExecutionContext } from 'ava';

import { run } from './process.js';

export const REMOTE_URIS = {
  tls: 'qemu+tls://127.0.0.1/system',
  tcp: 'qemu+tcp://127.0.0.1/system',
  ssh: 'qemu+ssh://root@127.0.0.1/system',
  libssh: 'qemu+libssh://root@127.0.0.1/system',
} as const;

export type RemoteTransport = keyof typeof REMOTE_URIS;

/** Where setup-host.sh keeps the SASL test user's credentials (root only). */
export const SASL_CREDENTIALS_FILE = '/etc/libvirt-backup-tests/sasl.json';

const SETUP_HINT = 'Run `bash scripts/setup-host.sh` as root to set up the remote test rig.';

export async function saslCredentials(): Promise<{ username: string; password: string }> {
  let text: string;
  try {
    text = await readFile(SASL_CREDENTIALS_FILE, 'utf8');
  } catch (error) {
    throw new Error(`the remote test rig's SASL credentials are missing (${SASL_CREDENTIALS_FILE}). ${SETUP_HINT}`, { cause: error });
  }
  const parsed = JSON.parse(text) as { username?: unknown; password?: unknown };
  if (typeof parsed.username !== 'string' || typeof parsed.password !== 'string') {
    throw new Error(`${SASL_CREDENTIALS_FILE} does not hold a username and a password. ${SETUP_HINT}`);
  }
  return { username: parsed.username, password: parsed.password };
}

async function certtool(args: string[]): Promise<void> {
  await run('certtool', args);
}

/**
 * A PKI directory in libvirt's `pkipath=` layout (cacert.pem, clientcert.pem,
 * clientkey.pem) whose CA is not the rig's: libvirtd's certificate does not chain to
 * it, and its client certificate is not one libvirtd trusts either.
 */
export async function foreignPki(t: ExecutionContext): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'lvb-foreign-pki-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  await certtool(['--generate-privkey', '--outfile', join(dir, 'cakey.pem')]);
  await writeFile(join(dir, 'ca.info'), 'cn = an unrelated CA\nca\ncert_signing_key\nexpiration_days = 2\n');
  await certtool([
    '--generate-self-signed',
    '--load-privkey',
    join(dir, 'cakey.pem'),
    '--template',
    join(dir, 'ca.info'),
    '--outfile',
    join(dir, 'cacert.pem'),
  ]);
  await certtool(['--generate-privkey', '--outfile', join(dir, 'clientkey.pem')]);
  await writeFile(join(dir, 'client.info'), 'cn = client\ntls_www_client\nsigning_key\nencryption_key\nexpiration_days = 2\n');
  await certtool([
    '--generate-certificate',
    '--load-privkey',
    join(dir, 'clientkey.pem'),
    '--load-ca-certificate',
    join(dir, 'cacert.pem'),
    '--load-ca-privkey',
    join(dir, 'cakey.pem'),
    '--template',
    join(dir, 'client.info'),
    '--outfile',
    join(dir, 'clientcert.pem'),
  ]);
  return dir;
}

/** An SSH key no server authorizes. */
export async function unauthorizedSshKey(t: ExecutionContext): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'lvb-ssh-key-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  await mkdir(dir, { recursive: true });
  const key = join(dir, 'id_ed25519');
  await run('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', key]);
  return key;
}

/** A port on 127.0.0.1 where nothing listens (taken from the kernel, then let go). */
export async function closedPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as { port: number }).port;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

/** A server on 127.0.0.1 that accepts connections and never says a word: a hypervisor that hangs. */
export async function silentServer(t: ExecutionContext): Promise<number> {
  const sockets = new Set<Socket>();
  const server: Server = createServer((socket) => {
    sockets.add(socket);
    socket.on('error', () => undefined);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.teardown(
    () =>
      new Promise<void>((resolve) => {
        for (const socket of sockets) socket.destroy();
        server.close(() => resolve());
      }),
  );
  return (server.address() as { port: number }).port;
}

/** `uri` with `host:port` in place of its authority's host (the user is kept). */
export function withPort(uri: string, port: number): string {
  return uri.replace(/^([a-z+]+:\/\/(?:[^@/]+@)?)([^/:]+)(?::\d+)?/, `$1$2:${port}`);
}
