import type { BackupOptions } from '../../backup/index.js';
import type { BackupArgs } from '../args.js';

/** What the command line says about how each domain is backed up. */
export function backupOptions(args: BackupArgs): Omit<BackupOptions, 'domain' | 'dest' | 'connection'> {
  return {
    level: args.level,
    transport: args.transport,
    disks: args.disks,
    ...(args.scratchDir !== undefined ? { scratchDir: args.scratchDir } : {}),
    ...(args.compress !== undefined ? { compress: args.compress } : {}),
    remote: {
      ...(args.nbdHost !== undefined ? { nbdHost: args.nbdHost } : {}),
      ...(args.nbdPorts !== undefined ? { nbdPorts: args.nbdPorts } : {}),
      tls: args.nbdTls,
      ...(args.tlsDir !== undefined ? { tlsDir: args.tlsDir } : {}),
    },
    destShared: args.destShared,
    ...(args.startPaused ? { startPaused: true } : {}),
    ...(args.quiesce !== undefined ? { quiesce: args.quiesce } : {}),
    ...(args.freezeMountpoints.length > 0 ? { freezeMountpoints: args.freezeMountpoints } : {}),
  };
}
