// The manifest's per-disk record of compression: optional (manifests without it read as
// plain files), kept through a round trip, and checked like every other field.
import test from 'ava';

import { BackupSetError } from '../../src/backup/errors.js';
import { parseManifest, serializeManifest, type DiskRecord, type Manifest } from '../../src/backup/set/manifest.js';
import { DOMAIN } from './helpers.js';

function manifestWith(extra: Partial<Record<keyof DiskRecord, unknown>>): Manifest {
  return {
    format: 'libvirt-backup-set',
    version: 2,
    domain: { ...DOMAIN },
    backups: [
      {
        id: '0001',
        level: 'full',
        transport: 'pull',
        startedAt: '2024-05-01T02:00:00.000Z',
        completedAt: '2024-05-01T02:01:00.000Z',
        checkpoint: 'cp-0001',
        checkpointXml: '<domaincheckpoint/>',
        parent: null,
        disks: [
          {
            target: 'vda',
            sourceFormat: 'qcow2',
            level: 'full',
            file: 'vda.0001.full.qcow2',
            backingFile: null,
            virtualSize: 4194304,
            fileSize: 4653056,
            dataBytes: 1048576,
            checksum: `xxh128:${'a'.repeat(32)}`,
            ...extra,
          } as DiskRecord,
        ],
      },
    ],
  };
}

test('compression and storedBytes round-trip; a disk without them is plain', (t) => {
  const compressed = manifestWith({ compression: 'zstd', storedBytes: 300_000 });
  t.deepEqual(parseManifest(serializeManifest(compressed)), compressed);
  const plain = parseManifest(serializeManifest(manifestWith({})));
  t.false(Object.hasOwn(plain.backups[0]!.disks[0]!, 'compression'));
  t.false(Object.hasOwn(plain.backups[0]!.disks[0]!, 'storedBytes'));
});

test('a wrong compression or storedBytes is refused, naming the field', (t) => {
  const cases: Array<[Partial<Record<keyof DiskRecord, unknown>>, RegExp]> = [
    [{ compression: 'lz4' }, /backups\[0\]\.disks\[0\]\.compression: must be one of 'zstd', 'zlib', found string "lz4"/],
    [{ storedBytes: -1 }, /backups\[0\]\.disks\[0\]\.storedBytes: must be a non-negative integer/],
    [{ storedBytes: 5_000_000 }, /backups\[0\]\.disks\[0\]\.storedBytes: must not be more than fileSize \(4653056\)/],
  ];
  for (const [extra, message] of cases) {
    const error = t.throws(() => parseManifest(JSON.stringify(manifestWith(extra))), { instanceOf: BackupSetError });
    t.regex(error.message, message);
  }
});
