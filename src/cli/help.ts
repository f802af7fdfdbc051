import { EXIT_CODES_HELP } from './exit-codes.js';

export const COMMAND_NAMES = ['backup', 'restore', 'verify', 'list', 'prune', 'run', 'migrate-storage', 'export'] as const;
export type CommandName = (typeof COMMAND_NAMES)[number];

export function isCommandName(value: string): value is CommandName {
  return (COMMAND_NAMES as readonly string[]).includes(value);
}

const COMMAND_HELP: Record<CommandName, string> = {
  backup: `Usage: libvirt-backup backup DOMAIN --dest DIR [options]
       libvirt-backup backup --all --dest ROOT [--match PATTERN] [--connect URI]... [--parallel N] [options]

Backs up the disks of DOMAIN (name or UUID) into the backup set DIR, created on
first use. A shut-off domain is backed up too: its image files are read here with
qemu-nbd, read-only, none of its code runs, and its checkpoints go on as if it ran.
With --level auto, takes a full backup when the set has no usable chain and an
incremental otherwise.

Options:
  --dest DIR                 backup set directory of this domain (required)
  --level auto|full|inc|diff default auto
  --transport pull|push      pull: read the disks over NBD (default); push: libvirt writes the files
  --disk TARGET              back up only this disk (vda); repeat or separate with commas
  --scratch-dir DIR          pull: where QEMU keeps the old content of clusters the guest
                             overwrites during the backup (default: DIR of --dest). It may
                             need up to the data the disks hold; the run keeps that much
                             free and ends the job before it could run out (NO_SPACE)
  --compress zstd|zlib       pull: store the clusters compressed (qcow2 compressed clusters,
                             which qemu-img and QEMU read); zstd is faster and smaller
  --connect URI              libvirt URI (default qemu:///system); see Remote hypervisors
  --username NAME            SASL or SSH user, when the URI does not name one
  --password-file FILE       file whose first line is the password (SASL) or key passphrase
  --connect-timeout SECONDS  give up connecting after this long (default 30)
  --start-paused             a shut-off domain: start it paused for the backup (then shut it
                             off) instead of reading its images here with qemu-nbd; needed
                             on a remote hypervisor and for push
  --quiesce[=yes|try|no]     guest-consistent: freeze the guest's file systems through its
                             QEMU guest agent while the backup job starts, thaw them right
                             after (the manifest records it). yes (--quiesce alone): fail,
                             creating nothing, when no agent answers; try: then back up
                             crash-consistent with a notice. Default no
  --freeze-mountpoint PATH   freeze only this guest mount point (/, /var); repeat for more;
                             implies --quiesce
  --dry-run                  say the level and, per disk, the bytes the backup would copy
                             (bitmap sizes, or the allocated data for a full); create nothing
  --json                     one JSON object per line per event, then a result or error object
  -h, --help                 this help

Remote hypervisors (qemu+tls://HOST/system, qemu+tcp://, qemu+ssh://, qemu+libssh://):
the job's NBD server listens on TCP on HOST and the disks are read over TLS; the
scratch files stay on the hypervisor, next to the disks.
  --nbd-host ADDRESS         address the NBD server listens on and is reached at
                             (default the URI's host)
  --nbd-ports FIRST-LAST     ports to try for it (default 10809-10999; open them to this host)
  --nbd-tls yes|no           NBD over TLS (default yes)
  --tls-dir DIR              cacert.pem, clientcert.pem and clientkey.pem for NBD over TLS
                             (default the URI's pkipath, else libvirt's client PKI paths)
  --dest-shared              --dest is storage the hypervisor sees at the same path: allows
                             --transport push, where libvirt writes the files on its side

Many domains (--all): every running domain of each --connect URI, each into its own
set ROOT/HOST/DOMAIN (HOST: the hypervisor's host name; a domain reached through two
URIs is backed up once). One domain's failure does not stop the others; the summary
(and --json's result) says per domain what happened, and the exit code is 0 only when
every domain was backed up.
  --all                      back up every running domain (--dest is then the root)
  --match PATTERN            only domains whose name matches this glob (*, ?, [a-z]); repeat for more
  --parallel N               back up N domains at once (default 1)

On failure or interruption the files of this run are removed and manifest.json is
left exactly as it was.`,
  restore: `Usage: libvirt-backup restore DIR --to PATH [options]
       libvirt-backup restore DIR --pool POOL [--connect URI] [--define NAME] [options]

Writes a standalone image (no backing file) of each disk as it was at one backup.
PATH is a file when one disk is restored, or an existing directory that receives
TARGET.FORMAT per disk. Outputs appear only when complete, with mode 0600.

Every file of the chain is read once, and checked against the checksum and size in
the manifest in that same read: a damaged file stops the restore (exit 3) and
nothing is written. Partial outputs left by a restore that was killed are removed
by the next restore into the same directory.

With --pool, each disk becomes a new volume NAME-TARGET.FORMAT in a libvirt storage
pool (NAME: the --define name, else DOMAIN-BACKUP), uploaded through libvirt streams:
this works on a remote host (qemu+tls://, qemu+ssh://) and reads none of its files.
Ranges that read as zeroes travel as holes and stay unallocated. An existing volume
is never overwritten; a restore that fails or is interrupted removes the volumes it
made. --define NAME then defines a new domain (not started) from the set's domain
XML, its disks on the new volumes, with a new UUID and new MAC addresses.

Options:
  --to PATH                  output file or directory
  --pool POOL                restore into new volumes of this storage pool instead
  --connect URI              libvirt URI of the pool's host (default qemu:///system)
  --username NAME, --password-file FILE, --connect-timeout SECONDS
                             how to log in to it (see 'backup --help')
  --define NAME              with --pool: define a domain NAME on the new volumes
  --at BACKUP                backup id to restore (default the newest; see 'list')
  --disk TARGET              restore only this disk
  --format qcow2|raw         output format (default qcow2)
  --overwrite                replace existing output files
  --no-verify                restore even from damaged files (salvage): mismatches are
                             reported as notices, unreadable files go through qemu-img
  --json                     JSON lines instead of human output
  -h, --help                 this help`,
  verify: `Usage: libvirt-backup verify DIR [options]

Re-reads every file of the set and checks it against the manifest: presence, size,
checksum, qcow2 consistency, backing file, and that every chain is complete. Reads only.
Exits with 3 when problems are found.

Options:
  --json                     JSON lines instead of human output
  -h, --help                 this help`,
  list: `Usage: libvirt-backup list DIR [options]

Shows the backups of the set, oldest first.

Options:
  --json                     the list as a JSON document
  -h, --help                 this help`,
  run: `Usage: libvirt-backup run DIR --name NAME [options]

Starts a new domain NAME straight from a backup point, in seconds whatever the size
of its disks: each disk is a thin qcow2 overlay whose backing chain is the point's
files (which are only read: the set never changes), and the domain is the set's
saved definition with a new name, UUID and MAC addresses. The set records the new
domain, and prune refuses the files it runs from until migrate-storage moved it.
On the hypervisor host itself the overlays are files (--overlay-dir); with
--overlay-pool they are volumes of a storage pool, which also works on a remote
hypervisor that sees the set at the same path (see "Running a VM from a backup").

Options:
  --name NAME                the new domain's name (required)
  --at BACKUP                backup id to run from (default the newest; see 'list')
  --overlay-dir DIR          where the overlays go (default /var/lib/libvirt/images)
  --overlay-pool POOL        make the overlays as volumes of this storage pool instead
  --connect URI              libvirt URI (default qemu:///system)
  --username NAME            SASL or SSH user, when the URI does not name one
  --password-file FILE       file whose first line is the password (SASL) or key passphrase
  --connect-timeout SECONDS  give up connecting after this long (default 30)
  --json                     JSON lines instead of human output
  -h, --help                 this help`,
  'migrate-storage': `Usage: libvirt-backup migrate-storage DOMAIN --to DIR|--pool POOL [options]

Moves the disks of a domain started by 'run' to their permanent place while it runs:
each disk is block-copied whole (the backup's data and every write since), and once
all copies mirror their disks, each disk switches over and its overlay is removed.
After this the domain no longer depends on the backup set. Interrupted (or failing)
before the switch, the copies are removed and the domain runs on its overlays.

Options:
  --to DIR                   directory on the hypervisor host for DOMAIN-TARGET.qcow2
  --pool POOL                new volumes DOMAIN-TARGET.qcow2 in this storage pool instead
  --connect URI              libvirt URI (default qemu:///system)
  --username NAME            SASL or SSH user, when the URI does not name one
  --password-file FILE       file whose first line is the password (SASL) or key passphrase
  --connect-timeout SECONDS  give up connecting after this long (default 30)
  --json                     JSON lines instead of human output
  -h, --help                 this help`,
  export: `Usage: libvirt-backup export DIR --disk TARGET [options]

Serves one disk of a backup point read-only over NBD (qemu-nbd) until interrupted,
for guestfish --ro, nbdfuse, nbd-client or any NBD client. Prints the NBD URI.

Options:
  --disk TARGET              the disk to serve (required)
  --at BACKUP                backup id (default the newest)
  --socket PATH              unix socket to listen on (default one in a new private directory)
  --tcp HOST:PORT            listen on TCP instead, with TLS
  --tls-dir DIR              with --tcp: ca-cert.pem, server-cert.pem and server-key.pem
  --json                     JSON lines instead of human output
  -h, --help                 this help`,
  prune: `Usage: libvirt-backup prune DIR --keep N [options]

Keeps the newest N restore points and removes the older ones, merging their data
into the oldest kept backup so every kept point stays restorable. Then deletes the
libvirt checkpoints no future backup starts from (when the domain still exists).

Options:
  --keep N                   restore points to keep, at least 1 (required)
  --connect URI              libvirt URI (default qemu:///system)
  --username NAME            SASL or SSH user, when the URI does not name one
  --password-file FILE       file whose first line is the password (SASL) or key passphrase
  --connect-timeout SECONDS  give up connecting after this long (default 30)
  --json                     JSON lines instead of human output
  -h, --help                 this help`,
};

export function commandHelp(command: CommandName): string {
  return `${COMMAND_HELP[command]}\n\n${EXIT_CODES_HELP}\n`;
}

export function overallHelp(): string {
  return `Usage: libvirt-backup COMMAND [options]

Full, incremental and differential backups of libvirt VM disks as plain qcow2 chains.

Commands:
  backup DOMAIN --dest DIR   take a backup (full or incremental, chosen by itself)
  restore DIR --to PATH      write a standalone image of a point in time
  restore DIR --pool POOL    the same into new volumes of a libvirt storage pool
  verify DIR                 check every file and chain of a backup set
  list DIR                   show the backups of a set
  prune DIR --keep N         drop old restore points, keeping the rest restorable
  run DIR --name NAME        start a new domain straight from a backup point
  migrate-storage DOMAIN --to DIR
                             move a domain started by run off its backup set
  export DIR --disk TARGET   serve a disk of a backup point read-only over NBD

Run 'libvirt-backup COMMAND --help' for the options of a command.

Options:
  -h, --help                 this help
  -V, --version              print the version

Environment:
  LIBVIRT_BACKUP_DEBUG=1     print stack traces of errors

${EXIT_CODES_HELP}
`;
}
