import test from 'ava';
import { chmod, mkdir, readFile, readdir, stat, writeFile } from 'node:fs/promises';
import { spawn } from 'node:child_process';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { BackupSet } from '../../src/backup/set/backup-set.js';
import { BackupSetError } from '../../src/backup/errors.js';
import { JOURNAL_FILE } from '../../src/backup/set/run-journal.js';
import { LOCK_FILE } from '../../src/backup/set/set-lock.js';
import { DOMAIN, ONE_DISK, buildSet, deadPid, fileExists, qemuImg, tempDir } from './helpers.js';

test('open gives clear errors for a missing directory and a directory that is not a set', async (t) => {
  const root = await tempDir(t);
  const missing = await t.throwsAsync(BackupSet.open(join(root, 'nope')), { instanceOf: BackupSetError });
  t.is(missing?.code, 'SET_NOT_FOUND');
  t.is(missing?.message, `backup set directory ${join(root, 'nope')} does not exist`);
  const notSet = await t.throwsAsync(BackupSet.openForWrite(root), { instanceOf: BackupSetError });
  t.is(notSet?.code, 'NOT_A_SET');
  t.is(notSet?.message, `${root} is not a backup set: manifest.json is missing`);
  t.deepEqual(await readdir(root), [], 'no lock file left behind');
});

test('create refuses an existing set and an unwritable destination', async (t) => {
  const root = await tempDir(t);
  const set = await BackupSet.create(join(root, 'set'), DOMAIN);
  await set.close();
  const exists = await t.throwsAsync(BackupSet.create(join(root, 'set'), DOMAIN), { instanceOf: BackupSetError });
  t.is(exists?.code, 'SET_EXISTS');
  t.deepEqual(await readdir(join(root, 'set')), ['manifest.json']);
  if (process.getuid?.() !== 0) {
    await mkdir(join(root, 'ro'));
    await chmod(join(root, 'ro'), 0o555);
    const unwritable = await t.throwsAsync(BackupSet.create(join(root, 'ro', 'set'), DOMAIN), { instanceOf: BackupSetError });
    t.is(unwritable?.code, 'SET_IO');
    t.regex(unwritable!.message, /permission denied/);
  }
  const fileAsDir = join(root, 'file');
  await writeFile(fileAsDir, '');
  const notDir = await t.throwsAsync(BackupSet.create(join(fileAsDir, 'set'), DOMAIN), { instanceOf: BackupSetError });
  t.is(notDir?.code, 'SET_IO');
});

test('a set belonging to another domain is refused, matched by UUID', async (t) => {
  const root = await tempDir(t);
  const dir = join(root, 'set');
  const set = await BackupSet.create(dir, DOMAIN);
  set.assertDomain({ name: 'renamed-vm1', uuid: DOMAIN.uuid.toUpperCase() });
  const error = t.throws(() => set.assertDomain({ name: 'vm1', uuid: '11111111-2222-3333-4444-555555555555' }), { instanceOf: BackupSetError });
  t.is(error?.code, 'FOREIGN_DOMAIN');
  t.is(error?.message, `backup set ${dir} belongs to domain 'vm1' (uuid ${DOMAIN.uuid}), not to 'vm1' (uuid 11111111-2222-3333-4444-555555555555)`);
  await set.close();
  const before = await readFile(join(dir, 'manifest.json'), 'utf8');
  const viaOpen = await t.throwsAsync(BackupSet.openOrCreate(dir, { name: 'other', uuid: '11111111-2222-3333-4444-555555555555', xml: '<domain/>' }), {
    instanceOf: BackupSetError,
  });
  t.is(viaOpen?.code, 'FOREIGN_DOMAIN');
  t.is(await readFile(join(dir, 'manifest.json'), 'utf8'), before);
  t.false(await fileExists(join(dir, LOCK_FILE)), 'lock released after refusing');
});

test('a second writer is refused with the holder named; the lock is released on close', async (t) => {
  const root = await tempDir(t);
  const dir = join(root, 'set');
  const first = await BackupSet.create(dir, DOMAIN);
  const error = await t.throwsAsync(BackupSet.openForWrite(dir), { instanceOf: BackupSetError });
  t.is(error?.code, 'SET_LOCKED');
  t.regex(error!.message, new RegExp(`locked by another run \\(pid ${process.pid} on ${hostname()} \\(this process\\), since `));
  const reader = await BackupSet.open(dir);
  t.is(reader.domain.name, 'vm1', 'readers do not need the lock');
  await first.close();
  const second = await BackupSet.openForWrite(dir);
  t.true(second.writable);
  await second.close();
  t.false(await fileExists(join(dir, LOCK_FILE)));
});

test('a lock whose holder died is free at once, whatever its file says; a live holder in another process is refused', async (t) => {
  const root = await tempDir(t);
  const dir = join(root, 'set');
  await (await BackupSet.create(dir, DOMAIN)).close();
  // What a run killed outright leaves: a lock file nobody holds (here one naming another host, or empty).
  for (const content of [JSON.stringify({ pid: 4242, hostname: 'elsewhere.example', startedAt: '2024-01-01T00:00:00.000Z' }), '']) {
    await writeFile(join(dir, LOCK_FILE), content);
    const set = await BackupSet.openForWrite(dir);
    t.is(JSON.parse(await readFile(join(dir, LOCK_FILE), 'utf8')).pid, process.pid);
    await set.close();
  }

  const holder = spawn(process.execPath, ['--import=tsx', fileURLToPath(new URL('./lock-holder-child.ts', import.meta.url)), dir], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  t.teardown(() => holder.kill('SIGKILL'));
  await new Promise<void>((resolve) => holder.stdout!.once('data', () => resolve()));
  const error = await t.throwsAsync(BackupSet.openForWrite(dir), { instanceOf: BackupSetError });
  t.is(error?.code, 'SET_LOCKED');
  t.regex(error!.message, new RegExp(`locked by another run \\(pid ${holder.pid} on ${hostname()}, since `));
  const exited = new Promise((resolve) => holder.once('exit', resolve));
  holder.kill('SIGKILL');
  await exited;
  const set = await BackupSet.openForWrite(dir);
  t.true(set.writable, "the kernel released the dead holder's lock");
  await set.close();
});

test('two processes racing for a lock whose holder died: exactly one wins, 100 times', async (t) => {
  const root = await tempDir(t);
  const dir = join(root, 'set');
  await (await BackupSet.create(dir, DOMAIN)).close();
  const racerPath = fileURLToPath(new URL('./lock-racer-child.ts', import.meta.url));
  const racers = [0, 1].map(() => {
    const child = spawn(process.execPath, ['--import=tsx', racerPath, dir], { stdio: ['pipe', 'pipe', 'inherit'] });
    t.teardown(() => child.kill('SIGKILL'));
    const lines = createInterface({ input: child.stdout! })[Symbol.asyncIterator]();
    return {
      async ask(command: string): Promise<string> {
        child.stdin!.write(`${command}\n`);
        const next = await lines.next();
        if (next.done) throw new Error('racer exited');
        return next.value;
      },
    };
  });
  for (let round = 0; round < 100; round += 1) {
    // The file a holder killed outright leaves behind, naming a process that is gone.
    await writeFile(join(dir, LOCK_FILE), JSON.stringify({ pid: deadPid(), hostname: hostname(), startedAt: new Date().toISOString() }));
    const answers = await Promise.all(racers.map((racer) => racer.ask('try')));
    t.is(answers.filter((answer) => answer === 'won').length, 1, `round ${round}: ${answers.join(', ')}`);
    await Promise.all(racers.map((racer) => racer.ask('release')));
  }
});

test('chain helpers: next id, levels, parents, file names', async (t) => {
  const builder = await buildSet(t, ['full', 'inc', 'diff', 'full', 'inc']);
  const set = builder.set;
  t.is(set.nextId(), '0006');
  t.is(set.latest()?.id, '0005');
  t.is(set.lastFull()?.id, '0004');
  t.is(set.nextLevelParent('inc')?.id, '0005');
  t.is(set.nextLevelParent('diff')?.id, '0004');
  t.is(set.nextLevelParent('full'), null);
  t.deepEqual(
    set.chainFor('vda', '0003').map((link) => link.disk.file),
    ['vda.0001.full.qcow2', 'vda.0003.diff.qcow2'],
  );
  t.deepEqual(
    set.chainFor('vda').map((link) => link.backupId),
    ['0004', '0005'],
  );
  t.is(BackupSet.fileName('vda', '0007', 'inc'), 'vda.0007.inc.qcow2');
  const info = JSON.parse(await qemuImg('info', '--output=json', '--backing-chain', join(set.dir, 'vda.0003.diff.qcow2')));
  t.deepEqual(
    info.map((image: { filename: string }) => image.filename),
    ['vda.0003.diff.qcow2', 'vda.0001.full.qcow2'].map((file) => join(set.dir, file)),
  );

  const fresh = await BackupSet.create(join(await tempDir(t), 'set'), DOMAIN);
  t.teardown(() => fresh.close());
  const noBase = t.throws(() => fresh.nextLevelParent('inc'), { instanceOf: BackupSetError });
  t.regex(noBase!.message, /take a full backup first/);
  t.is(fresh.nextId(), '0001');
});

test('commit refuses a record that does not match its files, leaving the manifest unchanged', async (t) => {
  const builder = await buildSet(t, ['full'], ONE_DISK);
  const set = builder.set;
  const manifestBefore = await readFile(set.manifestPath, 'utf8');
  const base = set.backups[0]!;
  const id = set.nextId();
  const file = `vda.${id}.inc.qcow2`;
  await set.beginRun([file]);
  await qemuImg('create', '-q', '-f', 'qcow2', '-F', 'qcow2', '-b', 'vda.0001.full.qcow2', set.pathOf(file));
  const size = (await stat(set.pathOf(file))).size;
  const record = {
    ...base,
    id,
    level: 'inc' as const,
    parent: '0001',
    checkpoint: 'cp-2',
    checkpointXml: null,
    disks: [
      {
        ...base.disks[0]!,
        level: 'inc' as const,
        file,
        backingFile: 'vda.0001.full.qcow2',
        fileSize: size,
        dataBytes: 0,
        checksum: `xxh128:${'0'.repeat(32)}`,
      },
    ],
  };
  const wrongSha = await t.throwsAsync(set.commitBackup(record), { instanceOf: BackupSetError });
  t.is(wrongSha?.code, 'RECORD_INVALID');
  t.regex(wrongSha!.message, /^vda\.0002\.inc\.qcow2: checksum is xxh128:[0-9a-f]{32}, the record says xxh128:0{32}$/);
  const wrongSize = await t.throwsAsync(set.commitBackup({ ...record, disks: [{ ...record.disks[0]!, fileSize: 1 }] }), { instanceOf: BackupSetError });
  t.regex(wrongSize!.message, /file is \d+ bytes, the record says 1/);
  const badField = await t.throwsAsync(set.commitBackup({ ...record, parent: null }), { instanceOf: BackupSetError });
  t.is(badField?.message, 'cannot commit backup 0002: backups[1].parent: must name the backup an inc backup is relative to');
  const wrongId = await t.throwsAsync(set.commitBackup({ ...record, id: '0009' }), { instanceOf: BackupSetError });
  t.is(wrongId?.message, `backup id '0009' is not the next id '0002'`);
  t.is(await readFile(set.manifestPath, 'utf8'), manifestBefore);
});

test('an aborted run removes exactly its files and the journal', async (t) => {
  const builder = await buildSet(t, ['full'], ONE_DISK);
  const set = builder.set;
  const before = (await readdir(set.dir)).sort();
  const run = await set.beginRun(['vda.0002.inc.qcow2']);
  t.true(await fileExists(join(set.dir, JOURNAL_FILE)));
  await qemuImg('create', '-q', '-f', 'qcow2', '-F', 'qcow2', '-b', 'vda.0001.full.qcow2', set.pathOf('vda.0002.inc.qcow2'));
  t.deepEqual(await run.abort(), ['vda.0002.inc.qcow2']);
  t.deepEqual((await readdir(set.dir)).sort(), before);
  const clash = await t.throwsAsync(set.beginRun(['vda.0001.full.qcow2']), { instanceOf: BackupSetError });
  t.regex(clash!.message, /already exists: it belongs to a completed backup/);
});

test('the next run cleans up after a crashed one and never deletes referenced files', async (t) => {
  const builder = await buildSet(t, ['full', 'inc'], ONE_DISK);
  const dir = builder.dir;
  await builder.set.close();
  // A crashed run: journal naming its partial file plus (wrongly) a completed one, pid dead.
  await qemuImg('create', '-q', '-f', 'qcow2', '-F', 'qcow2', '-b', 'vda.0002.inc.qcow2', join(dir, 'vda.0003.inc.qcow2'));
  await writeFile(join(dir, '.vda.0003.inc.qcow2.partial'), 'junk');
  const journal = {
    format: 'libvirt-backup-run',
    kind: 'backup',
    pid: deadPid(),
    hostname: hostname(),
    startedAt: '2024-01-01T00:00:00.000Z',
    creates: ['vda.0003.inc.qcow2', '.vda.0003.inc.qcow2.partial', 'vda.0002.inc.qcow2', 'never-created.qcow2'],
    deletes: [],
  };
  await writeFile(join(dir, JOURNAL_FILE), JSON.stringify(journal));
  await writeFile(join(dir, LOCK_FILE), JSON.stringify({ pid: journal.pid, hostname: hostname(), startedAt: journal.startedAt }));

  const reader = await BackupSet.open(dir);
  t.is(reader.interruptedRun?.pid, journal.pid);
  t.true(await fileExists(join(dir, 'vda.0003.inc.qcow2')), 'a read-only open cleans nothing');

  const set = await BackupSet.openForWrite(dir);
  t.teardown(() => set.close());
  t.deepEqual(set.recovery?.removedFiles.sort(), ['.vda.0003.inc.qcow2.partial', 'vda.0003.inc.qcow2']);
  t.is(set.recovery?.run.pid, journal.pid);
  t.deepEqual((await readdir(dir)).sort(), ['.lock', 'manifest.json', 'vda.0001.full.qcow2', 'vda.0002.inc.qcow2']);
});

test('a journal whose run is still alive blocks writing', async (t) => {
  const builder = await buildSet(t, ['full'], ONE_DISK);
  const dir = builder.dir;
  await builder.set.close();
  const journal = {
    format: 'libvirt-backup-run',
    kind: 'backup',
    pid: process.ppid,
    hostname: hostname(),
    startedAt: '2024-01-01T00:00:00.000Z',
    creates: ['vda.0002.inc.qcow2'],
    deletes: [],
  };
  await writeFile(join(dir, JOURNAL_FILE), JSON.stringify(journal));
  const error = await t.throwsAsync(BackupSet.openForWrite(dir), { instanceOf: BackupSetError });
  t.is(error?.code, 'RUN_IN_PROGRESS');
  t.false(await fileExists(join(dir, LOCK_FILE)));
  t.true(await fileExists(join(dir, JOURNAL_FILE)));
});

test('a journal from another host is cleaned once its lock is gone', async (t) => {
  const builder = await buildSet(t, ['full'], ONE_DISK);
  const dir = builder.dir;
  await builder.set.close();
  await writeFile(join(dir, 'vda.0002.inc.qcow2'), 'partial');
  const journal = {
    format: 'libvirt-backup-run',
    kind: 'backup',
    pid: 77,
    hostname: 'elsewhere.example',
    startedAt: '2024-01-01T00:00:00.000Z',
    creates: ['vda.0002.inc.qcow2'],
    deletes: [],
  };
  await writeFile(join(dir, JOURNAL_FILE), JSON.stringify(journal));
  const set = await BackupSet.openForWrite(dir);
  t.teardown(() => set.close());
  t.deepEqual(set.recovery?.removedFiles, ['vda.0002.inc.qcow2']);
  t.false(await fileExists(join(dir, JOURNAL_FILE)));
});

test('opening a set for writing removes the temporary file of an atomic write whose process died, and only those', async (t) => {
  const set = (await buildSet(t, ['full'])).set;
  await set.close();
  const stale = `.manifest.json.tmp-${deadPid()}-0123abcd`;
  const live = `.manifest.json.tmp-${process.pid}-89abcdef`;
  await writeFile(join(set.dir, stale), '{"partial":');
  await writeFile(join(set.dir, live), '{"partial":');
  const manifest = await readFile(join(set.dir, 'manifest.json'));
  const opened = await BackupSet.openForWrite(set.dir);
  await opened.close();
  t.false(await fileExists(join(set.dir, stale)), 'a dead writer left it: removed');
  t.true(await fileExists(join(set.dir, live)), 'a live writer may still rename it: kept');
  t.deepEqual(await readFile(join(set.dir, 'manifest.json')), manifest);
});
