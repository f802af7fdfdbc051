// A push job QEMU still runs after libvirtd forgot it: ended through QEMU's monitor.
import { basename, dirname } from 'node:path';

import type { Domain } from '../../libvirt/domain.js';
import { readJournal } from '../set/run-journal.js';
import type { DomainRunRecord } from './domain-lock.js';
import { BackupError, type BackupEvent } from './engine-types.js';
import { QemuMonitor, type QemuJob, type QemuNode } from './qemu-monitor.js';
import { removeBackupBitmaps } from './stale-backup-bitmaps.js';

/** How long QEMU may take to end a cancelled job (it stops at the next cluster). */
const CANCEL_END_MS = 60_000;
const POLL_MS = 200;

/** libvirt names a backup's block job `backup-<disk>-<target node>`, its target nodes `libvirt-N-format` over `libvirt-N-storage`. */
const LIBVIRT_BACKUP_JOB = /^backup-(.+)-(libvirt-\d+-format)$/;

/** One block job of a push backup that libvirt no longer knows, and what it left in QEMU. */
interface ForgottenJob {
  jobId: string;
  disk: string;
  targetFile: string;
}

/**
 * libvirt 9.0 restarted in the middle of starting or ending a push backup can lose the
 * job while QEMU's block job goes on writing the target and keeps the `backup-<disk>`
 * bitmap it works from: libvirt then reports no job, every later push backup fails with
 * "Bitmap already exists", and recovery would remove files QEMU still writes. Only after
 * a push run that died (its domain lock record says so) is QEMU asked directly, since
 * libvirt marks a domain whose monitor was used directly as tainted. Jobs are ended only
 * when every file they write is one the dead run's set journal lists as its own.
 */
export async function endPushJobLibvirtForgot(domain: Domain, interrupted: DomainRunRecord | null, emit: (event: BackupEvent) => void): Promise<number> {
  if (interrupted?.transport !== 'push') return 0;
  const qemu = new QemuMonitor(domain);
  const jobs = await findForgottenJobs(qemu);
  for (const job of jobs) {
    if (!(await journalOwns(interrupted.set, job.targetFile))) {
      throw new BackupError(
        'DOMAIN_BUSY',
        `QEMU runs a backup job (${job.jobId}, writing ${job.targetFile}) on domain ${domain.name} that libvirt does not know and that no interrupted run of libvirt-backup started; end it or restart libvirtd`,
      );
    }
  }
  for (const job of jobs) {
    await qemu.command('block-job-cancel', { device: job.jobId, force: true });
    await waitUntilJobGone(qemu, job.jobId, domain.name);
  }
  const released = await releaseTargetNodes(qemu, interrupted.set);
  await removeBackupBitmaps(qemu, domain);
  if (jobs.length === 0 && released.length === 0) return 0;
  const files = [...new Set([...jobs.map((job) => job.targetFile), ...released])];
  emit({
    type: 'notice',
    message:
      `${jobs.length > 0 ? `ended the push backup job${jobs.length === 1 ? '' : 's'} that QEMU still ran and ` : ''}released the target${files.length === 1 ? '' : 's'} ` +
      `(${files.join(', ')}) QEMU still held for an interrupted run after libvirtd had lost track of its job; libvirt marks the domain as tainted (custom-monitor) for this`,
  });
  return jobs.length + released.length;
}

/** The nodes QEMU still has open on files the dead run's journal lists (its targets), removed format first. */
async function releaseTargetNodes(qemu: QemuMonitor, setDir: string): Promise<string[]> {
  const nodes = (await qemu.command('query-named-block-nodes', { flat: true })) as QemuNode[];
  const owned: QemuNode[] = [];
  for (const node of nodes) if (node.file !== undefined && (await journalOwns(setDir, node.file))) owned.push(node);
  // A format node sits on its storage node, which cannot go first.
  owned.sort((a, b) => Number(b['node-name'].endsWith('-format')) - Number(a['node-name'].endsWith('-format')));
  for (const node of owned) await qemu.command('blockdev-del', { 'node-name': node['node-name'] });
  return [...new Set(owned.map((node) => node.file!))];
}

async function findForgottenJobs(qemu: QemuMonitor): Promise<ForgottenJob[]> {
  const qemuJobs = (await qemu.command('query-jobs')) as QemuJob[];
  const backups = qemuJobs.filter((job) => job.type === 'backup' && LIBVIRT_BACKUP_JOB.test(job.id));
  if (backups.length === 0) return [];
  const nodes = (await qemu.command('query-named-block-nodes', { flat: true })) as QemuNode[];
  const found: ForgottenJob[] = [];
  for (const job of backups) {
    const [, disk, formatNode] = LIBVIRT_BACKUP_JOB.exec(job.id)!;
    const target = nodes.find((node) => node['node-name'] === formatNode);
    if (target?.file === undefined) continue;
    found.push({ jobId: job.id, disk: disk!, targetFile: target.file });
  }
  return found;
}

async function journalOwns(setDir: string, file: string): Promise<boolean> {
  if (dirname(file) !== setDir) return false;
  const journal = await readJournal(setDir).catch(() => null);
  return journal?.kind === 'backup' && journal.creates.includes(basename(file));
}

async function waitUntilJobGone(qemu: QemuMonitor, jobId: string, domainName: string): Promise<void> {
  const deadline = Date.now() + CANCEL_END_MS;
  for (;;) {
    const job = ((await qemu.command('query-jobs')) as QemuJob[]).find((candidate) => candidate.id === jobId);
    if (job === undefined) return;
    // libvirt starts backup jobs without auto-dismiss: a concluded job waits to be dismissed.
    if (job.status === 'concluded') {
      await qemu.command('job-dismiss', { id: jobId });
      return;
    }
    if (Date.now() > deadline) {
      throw new BackupError(
        'DOMAIN_BUSY',
        `QEMU did not end the backup job ${jobId} of domain ${domainName} within ${CANCEL_END_MS / 1000} s of being cancelled`,
      );
    }
    await new Promise((resolveSleep) => setTimeout(resolveSleep, POLL_MS));
  }
}
