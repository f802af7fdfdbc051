import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { CheckpointCreateFlags, CheckpointXMLFlags, type Connection, JobType } from '../../../src/index.js';
import { connectSystem, createThrowawayDomain, guestWrite } from '../../helpers/daemon.js';

/**
 * The libvirt calls the XML tests need, in one place so that they can move
 * from virsh to our own binding without touching the tests: each method maps
 * to one libvirt API (named in its comment).
 */
export interface LiveDomain {
  readonly name: string;
  readonly workDir: string;
  /** virDomainGetXMLDesc */
  domainXml(): Promise<string>;
  /** virDomainCheckpointCreateXML, optionally with REDEFINE */
  createCheckpoint(xml: string, options?: { redefine?: boolean }): Promise<void>;
  /** virDomainCheckpointGetXMLDesc, optionally with SIZE */
  checkpointXml(name: string, options?: { size?: boolean }): Promise<string>;
  /** virDomainBackupBegin */
  backupBegin(backupXml: string, checkpointXml?: string): Promise<void>;
  /** virDomainBackupGetXMLDesc */
  backupXml(): Promise<string>;
  /** virDomainAbortJob */
  abortJob(): Promise<void>;
  /** Waits until no job runs (a push backup finishing by itself). */
  waitForJobEnd(timeoutMs?: number): Promise<void>;
  /** Writes guest-visible data into a disk, as a guest would, so that bitmaps see it. */
  guestWrite(diskIndex: number, offset: string, length: string): Promise<void>;
  /** Destroys the transient domain and removes its images and work files. */
  dispose(): Promise<void>;
}

/** Whether the daemon answers; the reason when it does not. */
export async function probeDaemon(): Promise<string | undefined> {
  try {
    const conn = await connectSystem();
    await conn.close();
    return undefined;
  } catch (error) {
    return error instanceof Error ? error.message : String(error);
  }
}

export interface DiskPlan {
  dev: string;
  format: 'qcow2' | 'raw';
}

/** Starts a domain with the given disks (64 MiB images, named vda, vdb... in order) through our binding. */
export async function startLiveDomain(disks: readonly DiskPlan[]): Promise<LiveDomain> {
  disks.forEach((disk, i) => {
    if (disk.dev !== `vd${String.fromCharCode(97 + i)}`) throw new Error(`disks must be vda, vdb... in order, got ${disk.dev}`);
  });
  const conn: Connection = await connectSystem();
  let vm;
  try {
    vm = await createThrowawayDomain(
      conn,
      'xml',
      disks.map((disk) => ({ format: disk.format, sizeMiB: 64 })),
    );
  } catch (error) {
    await conn.close();
    throw error;
  }
  const { domain } = vm;
  const workDir = await mkdtemp(join(tmpdir(), `${vm.name}-`));
  return {
    name: vm.name,
    workDir,
    domainXml: () => domain.getXMLDesc(),
    createCheckpoint: async (xml, options = {}) => {
      await domain.createCheckpoint(xml, options.redefine === true ? CheckpointCreateFlags.REDEFINE : 0);
    },
    checkpointXml: async (checkpoint, options = {}) =>
      (await domain.lookupCheckpointByName(checkpoint)).getXMLDesc(options.size === true ? CheckpointXMLFlags.SIZE : 0),
    backupBegin: (backupXml, checkpointXml) => domain.backupBegin(backupXml, checkpointXml ?? null),
    backupXml: () => domain.backupGetXMLDesc(),
    abortJob: () => domain.abortJob(),
    waitForJobEnd: async (timeoutMs = 30_000) => {
      await conn.waitFor('job-completed', {
        match: (d) => d.uuid === domain.uuid,
        check: async () => (await domain.getJobInfo()).type === JobType.NONE,
        timeoutMs,
        description: `the job on ${vm.name} to end`,
      });
    },
    guestWrite: (diskIndex, offset, length) => guestWrite(domain, diskIndex, 0xab, offset, length),
    dispose: async () => {
      await domain.abortJob().catch(() => undefined);
      await vm.cleanup();
      await rm(workDir, { recursive: true, force: true });
      await conn.close();
    },
  };
}
