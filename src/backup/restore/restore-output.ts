// The file a restore writes: created with a fixed mode, then filled by positioned
// writes of guest ranges in whatever order the chain files yield them.
import { open, type FileHandle } from 'node:fs/promises';
import { openDirect } from '../../common/direct-io.js';
import { nativeAddon } from '../../libvirt/native.js';
import type { ChainCopyPlan } from '../qcow2/chain-copy-plan.js';
import type { GuestWriter } from '../qcow2/chain-stream.js';
import { BackupSetError } from '../errors.js';
import { CLUSTER_SIZE } from '../qcow2/qcow2-layout.js';
import { Qcow2PositionedWriter } from '../qcow2/qcow2-writer.js';

/** Disk images hold whatever the guest stored, secrets included: private by default. */
export const DEFAULT_OUTPUT_MODE = 0o600;

/** QEMU opens L1 tables of up to 32 MiB; with our 64 KiB clusters that is 2 PiB of disk. */
const MAX_QCOW2_VIRTUAL_SIZE = ((32 * 2 ** 20) / 8) * (CLUSTER_SIZE / 8) * CLUSTER_SIZE;

/**
 * Creates `path` (which must not exist) with exactly `mode`: the mode given to open()
 * is narrowed by the umask, so it is set again on the open file.
 */
export async function createPrivateFile(path: string, mode = DEFAULT_OUTPUT_MODE): Promise<FileHandle> {
  const file = await open(path, 'wx', mode);
  try {
    await file.chmod(mode);
    return file;
  } catch (error) {
    await file.close();
    throw error;
  }
}

export interface RestoreOutput extends GuestWriter {
  /** After every write has settled: waits for write-back and fsyncs. */
  finish(): Promise<void>;
  /** Once no write is in flight, whatever happened: releases what the output holds besides `file`. */
  close(): Promise<void>;
}

/** Sizes the empty `file` for `plan` and returns where its guest bytes go. */
export async function openRestoreOutput(
  file: FileHandle,
  format: 'raw' | 'qcow2',
  plan: ChainCopyPlan,
  options: { signal?: AbortSignal } = {},
): Promise<RestoreOutput> {
  if (format === 'qcow2' && plan.virtualSize > MAX_QCOW2_VIRTUAL_SIZE) {
    throw new BackupSetError('INVALID_ARGUMENT', `a disk of ${plan.virtualSize} bytes is too large for a qcow2 image with 64 KiB clusters; restore it as raw`);
  }
  const direct = await openDirect(file);
  const close = async () => void (await direct?.close());
  try {
    const writeFd = (direct ?? file).fd;
    if (format === 'raw') {
      // Sparse: ranges that read as zeroes are never written.
      await file.truncate(plan.virtualSize);
      const writer = new (nativeAddon().FileWriter)(writeFd);
      return {
        write: (buffers, guestOffset) => writer.write(buffers, guestOffset),
        finish: async () => void (await writer.finish()),
        close,
      };
    }
    const writer = await Qcow2PositionedWriter.create(file, { virtualSize: plan.virtualSize, runs: plan.dataRuns }, { ...options, writeFd });
    return {
      write: (buffers, guestOffset) => writer.write(buffers, guestOffset),
      finish: async () => void (await writer.finish()),
      close,
    };
  } catch (error) {
    await close();
    throw error;
  }
}
