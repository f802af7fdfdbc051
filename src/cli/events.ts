import type { BackupEvent } from '../backup/index.js';

/**
 * What commands report while they run. Backups pass the engine's events through as they
 * are; the other commands report in the same shapes (`progress` per disk or file), plus
 * `step` for work whose size is only known as a fraction.
 */
export type CliEvent =
  | BackupEvent
  /** `backup --all`: a domain's event, with whose it is. */
  | (BackupEvent & { host: string; domain: string })
  | { type: 'restore-start'; backupId: string; disks: Array<{ target: string; virtualSize: number; chain: string[] }> }
  | { type: 'file-done'; file: string }
  | { type: 'step'; step: string; file: string; fraction?: number }
  | { type: 'export-ready'; uri: string; exportName: string; socket: string | null; backupId: string; disk: string; virtualSize: number };
