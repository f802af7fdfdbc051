// Memory for O_DIRECT writes: mapped on 2 MiB boundaries and advised for transparent huge
// pages (the kernel's own record of the mapping, /proc/self/smaps, says both), and a
// direct write from buffers carved out of it lands intact on the disk.
import { constants } from 'node:fs';
import { mkdtemp, open, readFile, rm } from 'node:fs/promises';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import test from 'ava';
import { pageAlignedBuffers } from '../../src/common/page-aligned.js';
import { directWriteMemory } from '../../src/backup/qcow2/direct-write-memory.js';
import { nativeAddon } from '../../src/libvirt/native.js';

const MiB = 2 ** 20;
const HUGE_PAGE = 2 * MiB;

/** Mappings advised MADV_HUGEPAGE ("hg" in VmFlags): start address and size in bytes. */
function hugePageAdvised(): Array<{ start: bigint; size: number }> {
  const found: Array<{ start: bigint; size: number }> = [];
  let current: { start: bigint; size: number } | undefined;
  for (const line of readFileSync('/proc/self/smaps', 'utf8').split('\n')) {
    const range = /^([0-9a-f]+)-([0-9a-f]+) /.exec(line);
    if (range) {
      current = { start: BigInt(`0x${range[1]}`), size: Number(BigInt(`0x${range[2]}`) - BigInt(`0x${range[1]}`)) };
    } else if (line.startsWith('VmFlags:') && current && line.split(/\s+/).includes('hg')) {
      found.push(current);
    }
  }
  return found;
}

test.serial('the memory lies on 2 MiB boundaries, advised for huge pages, in whole huge pages', (t) => {
  const before = hugePageAdvised().reduce((sum, mapping) => sum + mapping.size, 0);
  const memory = directWriteMemory(14 * MiB + 1);
  t.is(memory.byteLength, 16 * MiB);
  new Uint8Array(memory).fill(0xa5);
  const advised = hugePageAdvised();
  t.is(advised.reduce((sum, mapping) => sum + mapping.size, 0) - before, 16 * MiB);
  for (const mapping of advised) {
    t.is(mapping.start % BigInt(HUGE_PAGE), 0n, `mapping at 0x${mapping.start.toString(16)} starts off a 2 MiB boundary`);
    t.is(mapping.size % HUGE_PAGE, 0);
  }
  t.true(new Uint8Array(memory).every((byte) => byte === 0xa5));
});

test('an O_DIRECT write from buffers carved out of it lands intact', async (t) => {
  // Not tmpdir(): tmpfs refuses O_DIRECT.
  const dir = await mkdtemp('/var/tmp/lvb-direct-memory-');
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const path = join(dir, 'data');
  const buffers = pageAlignedBuffers(3, 512 * 1024, directWriteMemory);
  buffers.forEach((buffer, index) => {
    for (let at = 0; at < buffer.length; at++) buffer[at] = (at * 13 + index) % 251;
  });
  const file = await open(path, constants.O_WRONLY | constants.O_CREAT | constants.O_DIRECT);
  try {
    const { bytesWritten } = await file.writev(buffers, 0);
    t.is(bytesWritten, 3 * 512 * 1024);
  } finally {
    await file.close();
  }
  t.true((await readFile(path)).equals(Buffer.concat(buffers)));
});

test('bad sizes are refused with what was wrong', (t) => {
  const addon = nativeAddon();
  for (const bad of [0, -1, 1.5, 2 * 1024 * MiB, Number.NaN]) {
    t.throws(() => addon.hugePageMemory(bad), { instanceOf: TypeError, message: /The "bytes" argument must be an integer from 1 to 1 GiB, not / });
  }
  t.throws(() => addon.hugePageMemory('4096' as unknown as number), { instanceOf: TypeError, message: 'The "bytes" argument must be a number' });
});
