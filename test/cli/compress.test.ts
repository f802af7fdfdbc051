// `backup --compress` as operators run it: the files hold compressed clusters, `list`
// shows the bytes stored against the guest data, in its table and in --json, and a
// compressed set restores and verifies like any other.
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';

import test from 'ava';

import { imagesIdentical, mirroredDomain } from '../backup/engine-helpers.js';
import { connectSystem } from '../helpers/daemon.js';
import { runCli } from './helpers.js';

interface ListedDisk {
  target: string;
  compression: string | null;
  storedBytes: number;
  fileSize: number;
  dataBytes: number;
}

test('backup --compress zstd, then a plain incremental: list shows stored against guest bytes; restore and verify', async (t) => {
  const conn = await connectSystem();
  t.teardown(() => conn.close());
  const m = await mirroredDomain(t, conn, 'cli-compress', [{ sizeMiB: 64 }]);
  const dest = join(m.dir, 'set');
  await m.write(0, 0x11, '0', '8M');
  const full = await runCli(['backup', m.vm.name, '--dest', dest, '--compress', 'zstd']);
  t.is(full.code, 0, full.stderr);
  await m.write(0, 0x22, '16M', '1M');
  await m.snapshot('inc');
  const inc = await runCli(['backup', m.vm.name, '--dest', dest]);
  t.is(inc.code, 0, inc.stderr);

  const listed = await runCli(['list', dest, '--json']);
  t.is(listed.code, 0, listed.stderr);
  const document = JSON.parse(listed.stdout) as { backups: Array<{ storedBytes: number; dataBytes: number; disks: ListedDisk[] }> };
  const [compressed, plain] = document.backups;
  t.is(compressed!.disks[0]!.compression, 'zstd');
  t.is(compressed!.dataBytes, 8 * 2 ** 20);
  t.true(compressed!.storedBytes < compressed!.dataBytes / 8, `${compressed!.storedBytes} bytes stored for ${compressed!.dataBytes}`);
  t.true(compressed!.disks[0]!.storedBytes < compressed!.disks[0]!.fileSize);
  t.is(plain!.disks[0]!.compression, null);
  t.is(plain!.disks[0]!.storedBytes, plain!.disks[0]!.fileSize);

  const table = await runCli(['list', dest]);
  const lines = table.stdout.trimEnd().split('\n');
  t.regex(lines[1]!, /\bCOMPRESSED\s+DATA\s+STORED\s+SIZE$/);
  t.regex(lines[2]!, /^0001\s+full\s.*\svda\s+zstd\s+8\.0 MiB\s/);
  t.regex(lines[3]!, /^0002\s+inc\s.*\svda\s+-\s+1\.0 MiB\s/);

  t.is((await runCli(['verify', dest])).code, 0);
  const out = join(m.dir, 'restored');
  await mkdir(out);
  const restored = await runCli(['restore', dest, '--to', join(out, 'vda.raw'), '--format', 'raw']);
  t.is(restored.code, 0, restored.stderr);
  t.true(await imagesIdentical(join(out, 'vda.raw'), 'raw', m.referenceAt('inc', 0), 'raw'));
});
