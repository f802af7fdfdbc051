import test, { type ExecutionContext } from 'ava';
import { execFile } from 'node:child_process';
import { readFile, readdir, truncate, unlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { BackupSet } from '../../src/backup/set/backup-set.js';
import { BackupSetError } from '../../src/backup/errors.js';
import type { BackupLevel } from '../../src/backup/set/manifest.js';
import { planPrune, prune, type PruneResult } from '../../src/backup/set/prune.js';
import { restore } from '../../src/backup/restore/restore.js';
import { verify } from '../../src/backup/restore/verify.js';
import { ONE_DISK, TWO_DISKS, buildSet, imagesEqual, tempDir, type DiskSpec, type SetBuilder } from './helpers.js';

/** Every backup still in the set restores to exactly the guest content it was taken from. */
async function assertRestorable(t: ExecutionContext, builder: SetBuilder): Promise<void> {
  const set = await BackupSet.open(builder.dir);
  const report = await verify(set);
  t.true(report.ok, JSON.stringify(report.problems, null, 2));
  t.deepEqual(report.problems, [], 'no orphans or journal left');
  for (const backup of set.backups) {
    const out = await tempDir(t, 'restore-');
    const result = await restore(set, { to: out, at: backup.id, format: 'raw' });
    for (const disk of result.disks) {
      t.true(await imagesEqual(disk.path, builder.referenceAt(disk.target, backup.id)), `${disk.target} at ${backup.id}`);
    }
  }
}

async function filesIn(dir: string): Promise<string[]> {
  return (await readdir(dir)).filter((name) => name.endsWith('.qcow2')).sort();
}

interface Scenario {
  levels: BackupLevel[];
  keep: number;
  disks?: DiskSpec[];
  ids: string[];
  levelsAfter: BackupLevel[];
  retained: string[];
  removed: string[];
  merged: { id: string; from: string[]; level: BackupLevel } | null;
  obsolete: string[];
  files?: string[];
}

const scenarios: Record<string, Scenario> = {
  'full and incrementals, keep 2': {
    levels: ['full', 'inc', 'inc', 'inc', 'inc'],
    keep: 2,
    ids: ['0004', '0005'],
    levelsAfter: ['full', 'inc'],
    retained: [],
    removed: ['0001', '0002', '0003'],
    merged: { id: '0004', from: ['0001', '0002', '0003'], level: 'full' },
    obsolete: ['cp-0001', 'cp-0002', 'cp-0003'],
    files: ['vda.0004.full.qcow2', 'vda.0005.inc.qcow2'],
  },
  'full and incrementals, keep 1': {
    levels: ['full', 'inc', 'inc'],
    keep: 1,
    ids: ['0003'],
    levelsAfter: ['full'],
    retained: [],
    removed: ['0001', '0002'],
    merged: { id: '0003', from: ['0001', '0002'], level: 'full' },
    obsolete: ['cp-0001', 'cp-0002'],
    files: ['vda.0003.full.qcow2'],
  },
  'nothing to drop': {
    levels: ['full', 'inc', 'inc'],
    keep: 3,
    ids: ['0001', '0002', '0003'],
    levelsAfter: ['full', 'inc', 'inc'],
    retained: [],
    removed: [],
    merged: null,
    obsolete: ['cp-0002'],
  },
  'full and differentials, keep 2 retains the full': {
    levels: ['full', 'diff', 'diff', 'diff'],
    keep: 2,
    ids: ['0001', '0003', '0004'],
    levelsAfter: ['full', 'diff', 'diff'],
    retained: ['0001'],
    removed: ['0002'],
    merged: null,
    obsolete: ['cp-0002', 'cp-0003'],
    files: ['vda.0001.full.qcow2', 'vda.0003.diff.qcow2', 'vda.0004.diff.qcow2'],
  },
  'full and differentials, keep 1': {
    levels: ['full', 'diff', 'diff'],
    keep: 1,
    ids: ['0003'],
    levelsAfter: ['full'],
    retained: [],
    removed: ['0001', '0002'],
    merged: { id: '0003', from: ['0001'], level: 'full' },
    obsolete: ['cp-0001', 'cp-0002'],
  },
  'two fulls, keep from the second': {
    levels: ['full', 'inc', 'full', 'inc'],
    keep: 2,
    ids: ['0003', '0004'],
    levelsAfter: ['full', 'inc'],
    retained: [],
    removed: ['0001', '0002'],
    merged: null,
    obsolete: ['cp-0001', 'cp-0002'],
    files: ['vda.0003.full.qcow2', 'vda.0004.inc.qcow2'],
  },
  'two fulls, keep 3 merges across the first': {
    levels: ['full', 'inc', 'full', 'inc'],
    keep: 3,
    ids: ['0002', '0003', '0004'],
    levelsAfter: ['full', 'full', 'inc'],
    retained: [],
    removed: ['0001'],
    merged: { id: '0002', from: ['0001'], level: 'full' },
    obsolete: ['cp-0001'],
  },
  'incrementals then a differential: merged onto the retained full, two disks': {
    levels: ['full', 'inc', 'inc', 'diff'],
    keep: 2,
    disks: TWO_DISKS,
    ids: ['0001', '0003', '0004'],
    levelsAfter: ['full', 'diff', 'diff'],
    retained: ['0001'],
    removed: ['0002'],
    merged: { id: '0003', from: ['0002'], level: 'diff' },
    obsolete: ['cp-0002', 'cp-0003'],
    files: ['vda.0001.full.qcow2', 'vda.0003.diff.qcow2', 'vda.0004.diff.qcow2', 'vdb.0001.full.qcow2', 'vdb.0003.full.qcow2', 'vdb.0004.full.qcow2'],
  },
  'an incremental on a differential': {
    levels: ['full', 'inc', 'diff', 'inc'],
    keep: 2,
    ids: ['0003', '0004'],
    levelsAfter: ['full', 'inc'],
    retained: [],
    removed: ['0001', '0002'],
    merged: { id: '0003', from: ['0001'], level: 'full' },
    obsolete: ['cp-0001', 'cp-0002'],
    files: ['vda.0003.full.qcow2', 'vda.0004.inc.qcow2'],
  },
};

for (const [name, scenario] of Object.entries(scenarios)) {
  test(`prune: ${name}`, async (t) => {
    const builder = await buildSet(t, scenario.levels, scenario.disks ?? ONE_DISK);
    const result: PruneResult = await prune(builder.set, { keep: scenario.keep });
    t.deepEqual(result.retained, scenario.retained);
    t.deepEqual(result.removed, scenario.removed);
    t.deepEqual(result.merged, scenario.merged);
    t.deepEqual(result.obsoleteCheckpoints, scenario.obsolete);
    const reopened = await BackupSet.open(builder.dir);
    t.deepEqual(
      reopened.backups.map((backup) => backup.id),
      scenario.ids,
    );
    t.deepEqual(
      reopened.backups.map((backup) => backup.level),
      scenario.levelsAfter,
    );
    if (scenario.files) t.deepEqual(await filesIn(builder.dir), scenario.files);
    t.deepEqual(await filesIn(builder.dir), [...reopened.referencedFiles()].sort(), 'exactly the referenced files remain');
    await assertRestorable(t, builder);
    // Pruning again with the same keep changes nothing.
    const again = await prune(builder.set, { keep: scenario.keep });
    t.deepEqual(again.removed, []);
  });
}

test('prune keeps working with later backups: the next incremental and differential chain correctly', async (t) => {
  const builder = await buildSet(t, ['full', 'inc', 'inc'], TWO_DISKS);
  await prune(builder.set, { keep: 1 });
  await builder.churn(10);
  await builder.backup('inc');
  await builder.churn(11);
  await builder.backup('diff');
  t.deepEqual(
    builder.set.backups.map((backup) => `${backup.id}:${backup.level}:${backup.parent ?? '-'}`),
    ['0003:full:-', '0004:inc:0003', '0005:diff:0003'],
  );
  await assertRestorable(t, builder);
});

test('prune rejects a keep below 1 and needs a writable set', async (t) => {
  const builder = await buildSet(t, ['full']);
  const error = await t.throwsAsync(prune(builder.set, { keep: 0 }), { instanceOf: BackupSetError });
  t.is(error?.code, 'INVALID_ARGUMENT');
  const readOnly = await t.throwsAsync(prune(await BackupSet.open(builder.dir), { keep: 1 }), { instanceOf: BackupSetError });
  t.is(readOnly?.code, 'INVALID_ARGUMENT');
  t.throws(() => planPrune(builder.set.manifest, 1.5));
});

test('an aborted prune leaves the set exactly as it was', async (t) => {
  const builder = await buildSet(t, ['full', 'inc', 'inc']);
  const manifestBefore = await readFile(builder.set.manifestPath, 'utf8');
  const filesBefore = await readdir(builder.dir);
  const controller = new AbortController();
  const error = await t.throwsAsync(prune(builder.set, { keep: 1, signal: controller.signal, onProgress: () => controller.abort() }), {
    instanceOf: BackupSetError,
  });
  t.is(error?.code, 'ABORTED');
  t.is(await readFile(builder.set.manifestPath, 'utf8'), manifestBefore);
  t.deepEqual((await readdir(builder.dir)).sort(), filesBefore.sort());
  await assertRestorable(t, builder);
});

const childScript = fileURLToPath(new URL('prune-crash-child.ts', import.meta.url));

function crashPrune(dir: string, keep: number, step: string): Promise<{ signal: string | null; stdout: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, ['--import=tsx', childScript, dir, String(keep), step], (error, stdout) => {
      resolve({ signal: (error as { signal?: string } | null)?.signal ?? null, stdout });
    });
  });
}

const crashPoints: Array<{ step: string; manifestChanged: boolean; readableBeforeRecovery: boolean; finishedByRecovery: boolean }> = [
  { step: 'afterMerge', manifestChanged: false, readableBeforeRecovery: true, finishedByRecovery: false },
  { step: 'afterRebase', manifestChanged: false, readableBeforeRecovery: false, finishedByRecovery: true },
  { step: 'beforeManifestWrite', manifestChanged: false, readableBeforeRecovery: false, finishedByRecovery: true },
  { step: 'afterManifestWrite', manifestChanged: true, readableBeforeRecovery: true, finishedByRecovery: false },
];

for (const point of crashPoints) {
  test(`a prune killed at ${point.step} leaves a consistent set that the next run completes or cleans`, async (t) => {
    const builder = await buildSet(t, ['full', 'inc', 'inc', 'inc'], TWO_DISKS);
    const dir = builder.dir;
    const manifestBefore = await readFile(builder.set.manifestPath, 'utf8');
    await builder.set.close();

    const crashed = await crashPrune(dir, 2, point.step);
    t.is(crashed.signal, 'SIGKILL', crashed.stdout);

    // The manifest is readable and names only complete files, whichever version it is.
    const afterCrash = await BackupSet.open(dir);
    t.is((await readFile(afterCrash.manifestPath, 'utf8')) === manifestBefore, !point.manifestChanged);
    t.is(afterCrash.interruptedRun?.kind, 'prune');
    const referenced = [...afterCrash.referencedFiles()];
    const present = await filesIn(dir);
    t.true(
      referenced.every((file) => present.includes(file)),
      'every referenced file exists',
    );
    const structural = await verify(afterCrash, { checksums: true });
    if (point.readableBeforeRecovery) {
      t.true(structural.ok, JSON.stringify(structural.problems));
      const out = await tempDir(t, 'restore-');
      for (const backup of afterCrash.backups) {
        await restore(afterCrash, { to: out, at: backup.id, format: 'raw', overwrite: true });
        t.true(await imagesEqual(join(out, 'vda.raw'), builder.referenceAt('vda', backup.id)));
      }
    } else {
      // The header of the backup after the merged one already points at the new file.
      const out = await tempDir(t, 'restore-');
      const error = await t.throwsAsync(restore(afterCrash, { to: out, format: 'raw' }), { instanceOf: BackupSetError });
      t.is(error?.code, 'CHAIN_BROKEN');
      t.regex(error!.message, /an interrupted prune is pending/);
      t.deepEqual(await readdir(out), []);
    }

    // The next write-open (lock of the dead process taken over) finishes or undoes it.
    const next = await BackupSet.openForWrite(dir);
    t.is(next.recovery?.run.kind, 'prune');
    t.is(next.recovery?.completedPrune, point.finishedByRecovery);
    const ids = next.backups.map((backup) => backup.id);
    t.deepEqual(ids, point.step === 'afterMerge' ? ['0001', '0002', '0003', '0004'] : ['0003', '0004']);
    await next.close();
    const fresh = await BackupSet.open(dir);
    t.is(fresh.interruptedRun, null);
    t.deepEqual(await filesIn(dir), [...fresh.referencedFiles()].sort());
    await assertRestorable(t, builder);
  });
}

/** The set's files and manifest, byte for byte, to prove a refusal changed nothing. */
async function snapshotSet(dir: string): Promise<Map<string, Buffer>> {
  const files = new Map<string, Buffer>();
  for (const name of (await readdir(dir)).sort()) if (name !== '.lock') files.set(name, await readFile(join(dir, name)));
  return files;
}

for (const damage of ['a flipped byte', 'a truncation'] as const) {
  for (const where of ['the file merged into the kept backup', 'a kept file prune re-stamps'] as const) {
    test(`prune refuses ${damage} in ${where}: nothing changes and verify still reports it`, async (t) => {
      const builder = await buildSet(t, ['full', 'inc', 'inc', 'inc']);
      // keep 2: 0001..0002 fold into 0003's file, and 0004's header is pointed at it.
      const victim = where === 'the file merged into the kept backup' ? 'vda.0001.full.qcow2' : 'vda.0004.inc.qcow2';
      const path = join(builder.dir, victim);
      const bytes = await readFile(path);
      if (damage === 'a flipped byte') {
        const at = bytes.length - 1000;
        bytes[at] = bytes[at]! ^ 0x01;
        await writeFile(path, bytes);
      } else {
        await truncate(path, bytes.length - 65536);
      }
      const before = await snapshotSet(builder.dir);
      const error = await t.throwsAsync(prune(builder.set, { keep: 2 }), { instanceOf: BackupSetError });
      t.is(error?.code, 'CHECKSUM_MISMATCH', error?.message);
      t.regex(error!.message, new RegExp(`cannot prune: ${victim.replaceAll('.', '\\.')} is damaged .* Nothing was changed`));
      t.deepEqual(await snapshotSet(builder.dir), before);
      const report = await verify(await BackupSet.open(builder.dir));
      t.false(report.ok);
      t.true(report.problems.some((problem) => problem.file === victim && problem.kind === 'checksum-mismatch'));
    });
  }
}

test('prune with a file missing from the chain it merges names the file, and changes nothing', async (t) => {
  const builder = await buildSet(t, ['full', 'inc', 'inc']);
  await unlink(join(builder.dir, 'vda.0001.full.qcow2'));
  const before = await snapshotSet(builder.dir);
  const error = await t.throwsAsync(prune(builder.set, { keep: 1 }), { instanceOf: BackupSetError });
  t.is(error?.code, 'CHAIN_BROKEN');
  t.regex(error!.message, /vda\.0002\.inc\.qcow2: backing file vda\.0001\.full\.qcow2 is missing/);
  t.deepEqual(await snapshotSet(builder.dir), before);
});

test('the files prune merges are private like every backup file, whatever the umask', async (t) => {
  const builder = await buildSet(t, ['full', 'inc', 'inc']);
  const previous = process.umask(0o022);
  try {
    await prune(builder.set, { keep: 1 });
  } finally {
    process.umask(previous);
  }
  const { stat } = await import('node:fs/promises');
  for (const name of await filesIn(builder.dir)) t.is((await stat(join(builder.dir, name))).mode & 0o777, 0o600, name);
});
