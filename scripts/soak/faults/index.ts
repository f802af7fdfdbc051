import { concurrentBackup } from './concurrent-backup.js';
import { destinationFull } from './destination-full.js';
import { destinationReadOnly } from './destination-readonly.js';
import { domainDestroy } from './domain-destroy.js';
import type { FaultKind } from './fault.js';
import { libvirtdKill } from './libvirtd-kill.js';
import { nbdCut } from './nbd-cut.js';
import { sigkill } from './sigkill.js';
import { sigterm } from './sigterm.js';

export const FAULT_KINDS: readonly FaultKind[] = [
  sigkill,
  sigterm,
  libvirtdKill,
  domainDestroy,
  destinationFull,
  destinationReadOnly,
  nbdCut,
  concurrentBackup,
];

export type { FaultKind, FaultScene, Injection, PlannedFault } from './fault.js';
