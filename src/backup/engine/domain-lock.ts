import { join } from 'node:path';
import { BackupError } from './engine-types.js';
import { BackupSetError } from '../errors.js';
import { describeFsError } from '../../common/fs-errors.js';
import { FileLock } from '../set/file-lock.js';
import { currentOwner, describeOwner, parseOwner, type ProcessOwner } from '../set/process-liveness.js';
import type { BackupTransport } from '../set/manifest.js';

/** What a backup run of a domain is doing, kept up to date in the domain's lock file. */
export interface DomainRunRecord extends ProcessOwner {
  domain: { name: string; uuid: string };
  /** Absolute path of the set being written. */
  set: string;
  transport: BackupTransport;
  /** Directory of the NBD socket (pull). */
  socketDir?: string;
  /** The checkpoint libvirt creates with the job. */
  checkpoint?: string;
  /** Scratch files outside the set directory (the set's journal covers those inside). */
  scratchFiles?: string[];
  /** `host:port` of a remote pull job's NBD server: how the job is known as this run's. */
  nbdServer?: string;
  /** Set before the run asks the guest agent to freeze, cleared once thawed: a run that dies between leaves the guest for the next to thaw. */
  guestFrozen?: boolean;
  /** The run started the shut-off domain paused (the next run stops it if it died). */
  startedPaused?: boolean;
}

/**
 * One backup of a domain at a time, across sets: libvirt runs one job per domain, and a
 * second run that mistook the first's job for a leftover would end it. Held with flock in
 * the private run directory, so a run that dies frees the domain at once, and the record
 * it leaves tells the next run what to clean up (job, socket, scratch, checkpoint).
 */
export class DomainLock {
  private keepRecord = false;

  private constructor(
    private readonly lock: FileLock,
    private record: DomainRunRecord,
    /** The record of a run of this domain that died without releasing the lock. */
    readonly interrupted: DomainRunRecord | null,
  ) {}

  static path(runDir: string, uuid: string): string {
    return join(runDir, `domain-${uuid.toLowerCase()}.lock`);
  }

  static async acquire(runDir: string, record: Omit<DomainRunRecord, keyof ProcessOwner>): Promise<DomainLock> {
    const path = DomainLock.path(runDir, record.domain.uuid);
    let taken: FileLock | { heldBy: string };
    try {
      taken = await FileLock.tryAcquire(path);
    } catch (error) {
      throw new BackupSetError('SET_IO', `cannot create the domain lock ${path}: ${describeFsError(error)}`, { path, cause: error });
    }
    if (!(taken instanceof FileLock)) {
      const holder = parseRecord(taken.heldBy);
      const who = holder ? `${describeOwner(holder)}, into ${holder.set}` : 'another process';
      throw new BackupError('DOMAIN_BUSY', `domain ${record.domain.name} is being backed up by another run (${who}); one backup of a domain runs at a time`);
    }
    const full: DomainRunRecord = { ...currentOwner(), ...record };
    const lock = new DomainLock(taken, full, parseRecord(taken.previous) ?? null);
    await lock.save();
    return lock;
  }

  get current(): Readonly<DomainRunRecord> {
    return this.record;
  }

  /** Records what the run is about to create, before it creates it. */
  async update(changes: Partial<Omit<DomainRunRecord, keyof ProcessOwner | 'domain'>>): Promise<void> {
    this.record = { ...this.record, ...changes };
    await this.save();
  }

  /**
   * Leaves the record for the next run of the domain when the lock is released, as a run
   * that died would: for a job this run could not end, whose files it could not remove.
   */
  keepRecordForNextRun(): void {
    this.keepRecord = true;
  }

  /** The clean-up after a run that died could not be finished: its record is left for the next run, as that run left it. */
  async keepInterruptedForNextRun(): Promise<void> {
    if (this.interrupted === null) return;
    this.record = this.interrupted;
    await this.save();
    this.keepRecord = true;
  }

  async release(): Promise<void> {
    await this.lock.release({ keepRecord: this.keepRecord });
  }

  private async save(): Promise<void> {
    await this.lock.record(`${JSON.stringify(this.record)}\n`);
  }
}

function parseRecord(text: string): DomainRunRecord | undefined {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    return undefined;
  }
  const owner = parseOwner(value);
  if (!owner) return undefined;
  const record = value as Record<string, unknown>;
  const domain = record['domain'] as Record<string, unknown> | undefined;
  if (typeof domain?.['name'] !== 'string' || typeof domain['uuid'] !== 'string' || typeof record['set'] !== 'string') return undefined;
  const transport = record['transport'] === 'push' ? 'push' : 'pull';
  const strings = (key: string): string[] | undefined => {
    const list = record[key];
    return Array.isArray(list) && list.every((item) => typeof item === 'string') ? (list as string[]) : undefined;
  };
  const optional = (key: string): string | undefined => (typeof record[key] === 'string' ? (record[key] as string) : undefined);
  const socketDir = optional('socketDir');
  const checkpoint = optional('checkpoint');
  const scratchFiles = strings('scratchFiles');
  const nbdServer = optional('nbdServer');
  const startedPaused = record['startedPaused'] === true;
  const guestFrozen = record['guestFrozen'] === true;
  return {
    ...owner,
    domain: { name: domain['name'], uuid: domain['uuid'] },
    set: record['set'],
    transport,
    ...(socketDir !== undefined ? { socketDir } : {}),
    ...(checkpoint !== undefined ? { checkpoint } : {}),
    ...(scratchFiles !== undefined ? { scratchFiles } : {}),
    ...(nbdServer !== undefined ? { nbdServer } : {}),
    ...(startedPaused ? { startedPaused } : {}),
    ...(guestFrozen ? { guestFrozen } : {}),
  };
}
