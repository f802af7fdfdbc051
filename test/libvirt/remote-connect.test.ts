// Remote connections against the rig setup-host.sh makes (this host's libvirtd on
// 127.0.0.1 over TLS, TCP with SASL, SSH): every transport connects and lists, and
// every way of failing is a LibvirtConnectError that says which, in bounded time, with
// no secret in it.
import { copyFile, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { hostname, tmpdir } from 'node:os';
import { join } from 'node:path';
import { inspect } from 'node:util';

import test, { type ExecutionContext } from 'ava';

import { connect, CredentialType, LibvirtConnectError, type ConnectFailureReason, type ConnectOptions, type CredentialRequest } from '../../src/index.js';
import { connectSystem, createThrowawayDomain } from '../helpers/daemon.js';
import {
  closedPort,
  foreignPki,
  REMOTE_URIS,
  saslCredentials,
  silentServer,
  unauthorizedSshKey,
  withPort,
  type RemoteTransport,
} from '../helpers/remote-rig.js';

/** Far beyond any failure's normal time: only a hang reaches it. */
const FAILURE_BOUND_MS = 20_000;

let domainName = '';
let removeDomain: (() => Promise<void>) | undefined;

test.before(async () => {
  const conn = await connectSystem();
  const vm = await createThrowawayDomain(conn, 'remote-list', [{ sizeMiB: 1 }], { start: false });
  domainName = vm.name;
  removeDomain = vm.cleanup;
  await conn.close();
});

test.after.always(async () => {
  await removeDomain?.();
});

async function optionsFor(transport: RemoteTransport): Promise<ConnectOptions> {
  return transport === 'tcp' ? { auth: await saslCredentials() } : {};
}

for (const transport of Object.keys(REMOTE_URIS) as RemoteTransport[]) {
  test(`${transport}: connects and lists this host's domains`, async (t) => {
    const conn = await connect(REMOTE_URIS[transport], await optionsFor(transport));
    t.teardown(() => conn.close());
    t.is(await conn.getHostname(), hostname());
    t.regex(await conn.getURI(), /^qemu:\/\/\/system$|^qemu\+/);
    const names = (await conn.listAllDomains()).map((domain) => domain.name);
    t.true(names.includes(domainName), `${domainName} in ${names.join(', ')}`);
  });
}

/** Connecting fails with `reason`, well within the bound, and the error never shows `secret`. */
async function failsWith(
  t: ExecutionContext,
  uri: string,
  options: ConnectOptions,
  reason: ConnectFailureReason,
  secret?: string,
): Promise<LibvirtConnectError> {
  const started = Date.now();
  const error = await t.throwsAsync(connect(uri, options));
  const elapsed = Date.now() - started;
  t.true(error instanceof LibvirtConnectError, `${String(error)}`);
  const failure = error as LibvirtConnectError;
  t.is(failure.reason, reason, `${failure.codeName}: ${failure.message}`);
  t.is(failure.uri, uri);
  t.is(failure.operation, 'virConnectOpenAuth');
  t.true(elapsed < FAILURE_BOUND_MS, `failed after ${elapsed} ms`);
  if (secret !== undefined) {
    for (const shown of [failure.message, failure.stack ?? '', String(failure), JSON.stringify(failure), inspect(failure, { depth: 5 })]) {
      t.false(shown.includes(secret), 'the secret appears in the error');
    }
  }
  return failure;
}

test('tls: a server whose CA this side does not trust is refused as untrusted', async (t) => {
  const pki = await foreignPki(t);
  const error = await failsWith(t, `${REMOTE_URIS.tls}?pkipath=${pki}`, {}, 'untrusted-server');
  t.is(error.codeName, 'VIR_ERR_AUTH_FAILED');
  t.regex(error.message, /certificate/);
});

test("tls: a client certificate that is not signed by the server's CA is refused before anything is sent", async (t) => {
  const pki = await foreignPki(t);
  // The rig's CA with the foreign client certificate: libvirt checks its own first.
  await copyFile('/etc/pki/CA/cacert.pem', `${pki}/cacert.pem`);
  const error = await failsWith(t, `${REMOTE_URIS.tls}?pkipath=${pki}`, {}, 'client-credentials');
  t.regex(error.message, /clientcert\.pem/);
});

test('tcp: a wrong password is refused as an authentication failure, and the password shows nowhere', async (t) => {
  const { username } = await saslCredentials();
  const wrong = 'not-the-password-7f3a9c';
  const error = await failsWith(t, REMOTE_URIS.tcp, { auth: { username, password: wrong } }, 'auth-failed', wrong);
  t.is(error.codeName, 'VIR_ERR_AUTH_FAILED');
});

test('tcp: without credentials libvirt is told nothing and nothing prompts', async (t) => {
  const error = await failsWith(t, REMOTE_URIS.tcp, {}, 'auth-failed');
  t.regex(error.message, /credentials/);
});

test('tcp: the right password shows nowhere either when the attempt times out', async (t) => {
  const { username, password } = await saslCredentials();
  const port = await silentServer(t);
  await failsWith(t, withPort(REMOTE_URIS.tcp, port), { auth: { username, password }, timeoutMs: 1500 }, 'timeout', password);
});

test('ssh: an unknown host key fails at once instead of asking on the terminal', async (t) => {
  // The rig knows 127.0.0.1's key, not localhost's.
  const error = await failsWith(t, 'qemu+ssh://root@localhost/system', {}, 'untrusted-server');
  t.regex(error.message, /Host key verification failed/);
});

test('ssh: a key the server does not authorize is an authentication failure', async (t) => {
  const key = await unauthorizedSshKey(t);
  const error = await failsWith(t, `${REMOTE_URIS.ssh}?keyfile=${key}`, {}, 'auth-failed');
  t.regex(error.message, /Permission denied/);
});

test('libssh: an unknown host key is asked about through the callback, and refusing it fails', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'lvb-known-hosts-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  await writeFile(join(dir, 'known_hosts'), '');
  const asked: CredentialRequest[] = [];
  await failsWith(
    t,
    `${REMOTE_URIS.libssh}?known_hosts=${join(dir, 'known_hosts')}`,
    {
      auth: (requests) => {
        asked.push(...requests);
        return requests.map(() => null);
      },
    },
    'untrusted-server',
  );
  t.true(asked.some((request) => request.type === CredentialType.ECHOPROMPT && /host key/.test(request.prompt)));
});

test('libssh: a key the server does not authorize is an authentication failure', async (t) => {
  const key = await unauthorizedSshKey(t);
  await failsWith(t, `${REMOTE_URIS.libssh}?keyfile=${key}`, {}, 'auth-failed');
});

for (const transport of Object.keys(REMOTE_URIS) as RemoteTransport[]) {
  test(`${transport}: a closed port is unreachable`, async (t) => {
    const port = await closedPort();
    await failsWith(t, withPort(REMOTE_URIS[transport], port), await optionsFor(transport), 'unreachable');
  });
}

test('tls: a server that accepts and never answers times out, and the attempt keeps nothing waiting', async (t) => {
  const port = await silentServer(t);
  const error = await failsWith(t, withPort(REMOTE_URIS.tls, port), { timeoutMs: 1000 }, 'timeout');
  t.is(error.codeName, 'VIR_ERR_OPERATION_TIMEOUT');
  t.regex(error.message, /did not finish within 1000 ms/);
});

test('tcp: an asynchronous callback answers libvirt while it waits on a call thread', async (t) => {
  const { username, password } = await saslCredentials();
  const asked: string[] = [];
  const conn = await connect(REMOTE_URIS.tcp, {
    auth: async (requests) => {
      asked.push(...requests.map((request) => request.typeName));
      await new Promise((resolve) => setTimeout(resolve, 50));
      return requests.map((request) => (request.type === CredentialType.PASSPHRASE ? password : username));
    },
  });
  t.teardown(() => conn.close());
  t.true(asked.includes('AUTHNAME') && asked.includes('PASSPHRASE'), asked.join(', '));
  t.is(await conn.getHostname(), hostname());
});

test('tcp: a callback that throws, never answers, or answers the wrong count is refused', async (t) => {
  const { password } = await saslCredentials();
  await failsWith(
    t,
    REMOTE_URIS.tcp,
    {
      auth: () => {
        throw new Error(`no secret today (${password})`);
      },
    },
    'auth-failed',
    password,
  );
  await failsWith(t, REMOTE_URIS.tcp, { auth: () => [password] }, 'auth-failed', password);
  await failsWith(t, REMOTE_URIS.tcp, { auth: () => new Promise<never>(() => undefined), timeoutMs: 1000 }, 'timeout');
});

test('bad auth and timeout options are refused before anything is sent, naming the field and not the value', async (t) => {
  const secret = 'hunter2-secret';
  await t.throwsAsync(connect(REMOTE_URIS.tcp, { auth: 42 as never }), { instanceOf: TypeError, message: /options\.auth must be/ });
  const typed = await t.throwsAsync(connect(REMOTE_URIS.tcp, { auth: { username: 'u', password: 7 as never } }), { instanceOf: TypeError });
  t.regex(typed.message, /options\.auth\.password must be a string/);
  const unknown = await t.throwsAsync(connect(REMOTE_URIS.tcp, { auth: { user: secret } as never }), { instanceOf: TypeError });
  t.false(unknown.message.includes(secret));
  await t.throwsAsync(connect(REMOTE_URIS.tcp, { timeoutMs: -1 }), { instanceOf: TypeError, message: /timeoutMs/ });
});
