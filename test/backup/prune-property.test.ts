import test from 'ava';
import fc from 'fast-check';
import { readdir } from 'node:fs/promises';
import { BackupSet } from '../../src/backup/set/backup-set.js';
import type { BackupLevel } from '../../src/backup/set/manifest.js';
import { prune } from '../../src/backup/set/prune.js';
import { restore } from '../../src/backup/restore/restore.js';
import { verify } from '../../src/backup/restore/verify.js';
import { TWO_DISKS, buildSet, imagesEqual, tempDir } from './helpers.js';

// Any chain of full/inc/diff backups, pruned to any keep: the newest `keep` points (and
// whatever else stays) restore to exactly what they were, and the set verifies clean.
test('prune keeps every remaining point restorable, for arbitrary chains', async (t) => {
  const levels = fc.array(fc.constantFrom<BackupLevel>('inc', 'inc', 'diff', 'full'), { minLength: 1, maxLength: 5 });
  let checked = 0;
  await fc.assert(
    fc.asyncProperty(levels, fc.integer({ min: 1, max: 6 }), async (rest, keepWish) => {
      const all: BackupLevel[] = ['full', ...rest];
      const keep = Math.min(keepWish, all.length);
      const builder = await buildSet(t, all, TWO_DISKS);
      const before = builder.set.backups.map((backup) => backup.id);
      const result = await prune(builder.set, { keep });
      const set = await BackupSet.open(builder.dir);
      const ids = set.backups.map((backup) => backup.id);
      const label = `${all.join(',')} keep ${keep}`;
      if (JSON.stringify(ids.slice(-keep)) !== JSON.stringify(before.slice(-keep))) throw new Error(`${label}: newest points not kept: ${ids}`);
      if (ids.length !== keep + result.retained.length) throw new Error(`${label}: unexpected survivors ${ids}`);
      const report = await verify(set);
      if (!report.ok || report.problems.length > 0) throw new Error(`${label}: ${JSON.stringify(report.problems)}`);
      const onDisk = (await readdir(builder.dir)).filter((name) => name.endsWith('.qcow2')).sort();
      if (JSON.stringify(onDisk) !== JSON.stringify([...set.referencedFiles()].sort())) throw new Error(`${label}: files ${onDisk}`);
      for (const backup of set.backups) {
        const out = await tempDir(t, 'restore-');
        const restored = await restore(set, { to: out, at: backup.id, format: 'raw' });
        for (const disk of restored.disks) {
          if (!(await imagesEqual(disk.path, builder.referenceAt(disk.target, backup.id)))) throw new Error(`${label}: ${disk.target} at ${backup.id} differs`);
        }
      }
      const serving = new Set([set.latest()?.checkpoint, ...set.backups.filter((backup) => backup.level === 'full').map((backup) => backup.checkpoint)]);
      for (const name of result.obsoleteCheckpoints) if (serving.has(name)) throw new Error(`${label}: ${name} still serves`);
      await builder.set.close();
      checked++;
    }),
    { numRuns: 12 },
  );
  t.is(checked, 12);
});
