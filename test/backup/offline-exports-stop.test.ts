// A shut-off domain's exports end when asked, even a qemu-nbd that did not take the first
// SIGTERM (one that arrives while it is still starting is lost). The qemu-nbd here runs
// under a shell that ignores SIGTERM, standing for one that lost it.
import { chmodSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { execFileSync, spawnSync } from 'node:child_process';

import test from 'ava';

import { OfflineExports } from '../../src/backup/engine/offline-images.js';
import { diskImage } from './exported-disk.js';

test('stop() ends a qemu-nbd that ignores SIGTERM within seconds', async (t) => {
  const { dir, image, disk } = await diskImage(t, 'lvb-offline-stop-', '16M');
  // The real qemu-nbd outlives its killed shell: found by its socket.
  t.teardown(() => {
    spawnSync('pkill', ['-KILL', '-f', `socket=${join(dir, 'vda.sock')}`]);
  });
  const bin = join(dir, 'bin');
  execFileSync('mkdir', [bin]);
  const qemuNbd = execFileSync('sh', ['-c', 'command -v qemu-nbd'], { encoding: 'utf8' }).trim();
  writeFileSync(join(bin, 'qemu-nbd'), `#!/bin/sh\ntrap '' TERM\n${qemuNbd} "$@" &\nwait\n`);
  chmodSync(join(bin, 'qemu-nbd'), 0o755);
  const path = process.env['PATH'];
  process.env['PATH'] = `${bin}:${path}`;
  t.teardown(() => {
    process.env['PATH'] = path;
  });
  const exports = await OfflineExports.start([disk], new Map([['vda', image]]), null, dir);
  const started = Date.now();
  await exports.stop();
  const took = Date.now() - started;
  t.true(took >= 4_000 && took < 10_000, `stopped after ${took} ms`);
});
