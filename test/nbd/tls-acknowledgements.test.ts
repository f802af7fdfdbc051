import test from 'ava';
import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

import { toolEnvironment } from '../helpers/process.js';
import { tlsExport } from './tls-export.js';

const FIXTURE = fileURLToPath(new URL('../fixtures/tls-exchanges.ts', import.meta.url));

// QEMU's NBD server leaves Nagle on and sends each TLS record with a send of its own, so
// the second record of an answer waits until the first is acknowledged. A client that
// delays its acknowledgements (Linux: 40 ms) stalls on every such answer: the handshake,
// each negotiated option, each block-status reply. The count of delayed acknowledgements
// is read in a network namespace of the test's own, where no other traffic adds to it.
test('a relayed TLS connection over TCP acknowledges at once: no exchange waits for a delayed acknowledgement', async (t) => {
  const { dir, serverArgs, ca, client } = await tlsExport(t);
  const rounds = 4;
  const delayedAcks = String.raw`awk '/^TcpExt:/ { if (!names) { for (i = 1; i <= NF; i++) field[$i] = i; names = 1 } else print $field["DelayedACKs"] }' /proc/net/netstat`;
  const script = [
    'set -e',
    'ip link set lo up',
    'qemu-nbd --fork --persistent --pid-file "$0/qemu-nbd.pid" --bind 127.0.0.1 --port 10809 "$@"',
    'trap \'kill "$(cat "$0/qemu-nbd.pid")"\' EXIT',
    `before=$(${delayedAcks})`,
    `"$NODE" --import=tsx "$FIXTURE" 10809 "$CA" "$CERT" "$KEY" ${rounds}`,
    `echo "delayed=$(( $(${delayedAcks}) - before ))"`,
  ].join('\n');
  const { stdout: output } = await promisify(execFile)('unshare', ['--net', 'sh', '-c', script, dir, ...serverArgs], {
    env: { ...toolEnvironment(), NODE: process.execPath, FIXTURE, CA: ca.cert, CERT: client.cert, KEY: client.key },
    timeout: 120_000,
  });
  t.regex(output, new RegExp(`"answers":${rounds * 3}`), output);
  const delayed = Number(/delayed=(\d+)/.exec(output)?.[1]);
  // Without quick acknowledgements: 24 in these 4 rounds, every one a 40 ms stall. A
  // relay thread kept off the CPU past 40 ms by a loaded machine may let one through.
  t.true(delayed <= 1, `${delayed} delayed acknowledgements in ${rounds} rounds of a handshake and 3 block-status queries`);
});
