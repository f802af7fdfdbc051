// Shared by the recovery tests: a two-disk domain backed up twice (its references kept
// per point), and domains run from its set that clean up after themselves.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import type { ExecutionContext } from 'ava';

import { runBackup } from '../../src/backup/engine/engine.js';
import { runFromBackup, type RunFromBackupResult } from '../../src/backup/index.js';
import { LibvirtError, type Connection, type Domain } from '../../src/index.js';
import { destroyAndUndefine, uniqueName } from '../helpers/daemon.js';
import { run } from '../helpers/process.js';
import { mirroredDomain, type MirroredDomain } from './engine-helpers.js';

export interface BackedUpDomain {
  m: MirroredDomain;
  /** The set directory. */
  dest: string;
  /** Backup ids, oldest first. */
  points: string[];
}

/** Two 16 MiB disks, a full and an incremental backup with different data on each disk at each point. */
export async function backedUpDomain(t: ExecutionContext, conn: Connection, label: string): Promise<BackedUpDomain> {
  const m = await mirroredDomain(t, conn, label, [{ sizeMiB: 16 }, { sizeMiB: 16 }]);
  const dest = join(m.dir, 'set');
  const points: string[] = [];
  for (const [step, pattern] of [0x11, 0x22].entries()) {
    await m.write(0, pattern, `${step * 2}M`, '2M');
    await m.write(1, pattern + 1, `${step * 3}M`, '1M');
    const result = await runBackup({ domain: m.vm.name, dest, connection: conn });
    await m.snapshot(result.backupId);
    points.push(result.backupId);
  }
  return { m, dest, points };
}

export interface RecoveredVm {
  result: RunFromBackupResult;
  domain: Domain;
  overlayDir: string;
}

/** Runs a new domain from `dest` at `at`; destroyed, undefined and its files removed at the end of the test. */
export async function recoveredVm(t: ExecutionContext, conn: Connection, dest: string, at?: string): Promise<RecoveredVm> {
  const overlayDir = await mkdtemp(join(tmpdir(), 'lvb-overlays-'));
  const name = uniqueName('run');
  t.teardown(async () => {
    const domain = await conn.lookupDomainByName(name).catch((error: unknown) => {
      if (error instanceof LibvirtError) return null;
      throw error;
    });
    if (domain !== null) await destroyAndUndefine(domain).catch(() => undefined);
    await rm(overlayDir, { recursive: true, force: true });
  });
  const result = await runFromBackup({ dir: dest, ...(at !== undefined ? { at } : {}), name, connection: conn, overlayDir });
  return { result, domain: await conn.lookupDomainByName(name), overlayDir };
}

/** The disk sources of a domain as `virsh domblklist` shows them (live, or the persistent definition). */
export async function diskSources(name: string, inactive = false): Promise<Record<string, string>> {
  const out = await run('virsh', ['-c', 'qemu:///system', 'domblklist', name, ...(inactive ? ['--inactive'] : [])]);
  const sources: Record<string, string> = {};
  for (const line of out.split('\n').slice(2)) {
    const [target, source] = line.trim().split(/\s+/);
    if (target && source) sources[target] = source;
  }
  return sources;
}
