// A shut-off domain's exports end when asked, even a qemu-nbd that did not take the first
// SIGTERM (one that arrives while it is still starting is lost). The qemu-nbd here runs
// under a shell that ignores SIGTERM, standing for one that lost it.
import { chmodSync, writeFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execFileSync, spawnSync } from 'node:child_process';

import test from 'ava';

import { OfflineExports } from '../../src/backup/engine/offline-images.js';
import type { DiskPlan } from '../../src/backup/engine/run-context.js';
import { qemuImg } from './qcow2-helpers.js';

test('stop() ends a qemu-nbd that ignores SIGTERM within seconds', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'lvb-offline-stop-'));
  const image = { target: 'vda', path: join(dir, 'vda.qcow2'), format: 'qcow2' };
  t.teardown(async () => {
    // The real qemu-nbd outlives its killed shell: found by its socket.
    spawnSync('pkill', ['-KILL', '-f', `socket=${join(dir, 'vda.sock')}`]);
    await rm(dir, { recursive: true, force: true });
  });
  await qemuImg('create', '-q', '-f', 'qcow2', image.path, '16M');
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
  const disk = {
    target: 'vda',
    format: 'qcow2',
    tracksChanges: true,
    level: 'full',
    file: 'vda.full.qcow2',
    backingFile: null,
    virtualSize: 0,
    dataBytes: 0,
  } satisfies DiskPlan;
  const exports = await OfflineExports.start([disk], new Map([['vda', image]]), null, dir);
  const started = Date.now();
  await exports.stop();
  const took = Date.now() - started;
  t.true(took >= 4_000 && took < 10_000, `stopped after ${took} ms`);
});
