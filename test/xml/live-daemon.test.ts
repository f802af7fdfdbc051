import test from 'ava';
import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { promisify } from 'node:util';
import {
  buildBackupXml,
  buildCheckpointXml,
  checkpointDisksFor,
  classifyCheckpointDisks,
  parseBackupXml,
  parseCheckpointXml,
  parseDomainXml,
  XmlValidationError,
  type BackupSpec,
} from '../../src/xml/index.js';
import { writeBackupXml } from '../../src/xml/backup.js';
import { writeCheckpointXml } from '../../src/xml/checkpoint.js';
import { probeDaemon, startLiveDomain, type LiveDomain } from './helpers/live-domain.js';

const run = promisify(execFile);

// In CI these tests prove the XML against a real libvirt, so a missing daemon is a failure, not a skip.
const unreachable = await probeDaemon();
const live = unreachable === undefined ? test.serial : process.env.CI === 'true' ? test.serial : test.skip;
if (unreachable !== undefined && process.env.CI === 'true') {
  test('libvirtd on qemu:///system is reachable', (t) => {
    t.fail(`libvirtd is not reachable, so the live XML tests cannot run: ${unreachable}`);
  });
}

let domain: LiveDomain | undefined;
const the = (): LiveDomain => {
  if (domain === undefined) throw new Error('the test domain was not started');
  return domain;
};

test.before(async () => {
  if (unreachable !== undefined) return;
  domain = await startLiveDomain([
    { dev: 'vda', format: 'qcow2' },
    { dev: 'vdb', format: 'qcow2' },
    { dev: 'vdc', format: 'raw' },
  ]);
});

test.after.always(async () => {
  await domain?.dispose();
});

const FIRST = 'lvb-first';
const SECOND = 'lvb-second';
const DESCRIPTION = 'nightly & <weekly> "checkpoint" — café 日本';

live('the disk helper reads the live domain: qcow2 disks take bitmaps, the raw one does not', async (t) => {
  const summary = parseDomainXml(await the().domainXml());
  t.is(summary.name, the().name);
  t.regex(summary.uuid ?? '', /^[0-9a-f-]{36}$/);
  const { bitmap, excluded } = classifyCheckpointDisks(summary);
  t.deepEqual(
    bitmap.map((disk) => disk.target?.dev),
    ['vda', 'vdb'],
  );
  t.deepEqual(
    excluded.map(({ disk }) => disk.target?.dev),
    ['vdc'],
  );
});

live('createCheckpoint accepts built XML; getXMLDesc parses into bitmap names and sizes', async (t) => {
  const summary = parseDomainXml(await the().domainXml());
  await the().createCheckpoint(buildCheckpointXml({ name: FIRST, description: DESCRIPTION, disks: checkpointDisksFor(summary) }));
  await the().guestWrite(0, '1M', '128k');
  await the().guestWrite(0, '4M', '64k');
  await the().guestWrite(1, '0', '64k');

  const described = parseCheckpointXml(await the().checkpointXml(FIRST, { size: true }));
  t.is(described.name, FIRST);
  t.is(described.description, DESCRIPTION);
  t.is(typeof described.creationTime, 'number');
  t.is(described.parent, undefined);
  t.deepEqual(described.disks, [
    { name: 'vda', checkpoint: 'bitmap', bitmap: FIRST, size: 196608 },
    { name: 'vdb', checkpoint: 'bitmap', bitmap: FIRST, size: 65536 },
    { name: 'vdc', checkpoint: 'no' },
  ]);
  t.is(described.domain?.name, the().name);
  t.is(described.domain?.uuid, summary.uuid);
  t.deepEqual(
    described.domain?.disks.map((disk) => disk.target?.dev),
    ['vda', 'vdb', 'vdc'],
  );
});

live('a checkpoint read back, rebuilt and redefined is unchanged', async (t) => {
  const original = await the().checkpointXml(FIRST);
  const spec = parseCheckpointXml(original);
  await the().createCheckpoint(buildCheckpointXml(spec, { redefine: true }), { redefine: true });
  t.deepEqual(parseCheckpointXml(await the().checkpointXml(FIRST)), spec);
});

live('backupBegin accepts a built pull backup; backupGetXMLDesc parses into what libvirt chose', async (t) => {
  const socket = join(the().workDir, 'nbd.sock');
  const spec: BackupSpec = {
    mode: 'pull',
    incremental: FIRST,
    server: { transport: 'unix', socket },
    disks: [
      {
        name: 'vda',
        type: 'file',
        exportname: 'export-vda',
        exportbitmap: 'changes-vda',
        scratch: { file: join(the().workDir, 'vda.scratch') },
        driver: { type: 'qcow2' },
      },
      { name: 'vdb', type: 'file', scratch: { file: join(the().workDir, 'vdb.scratch') } },
      { name: 'vdc', backup: 'no' },
    ],
  };
  await the().backupBegin(
    buildBackupXml(spec),
    buildCheckpointXml({ name: SECOND, disks: [{ name: 'vda' }, { name: 'vdb' }, { name: 'vdc', checkpoint: 'no' }] }),
  );
  try {
    const running = parseBackupXml(await the().backupXml());
    t.is(running.mode, 'pull');
    if (running.mode !== 'pull') return;
    t.is(running.incremental, FIRST);
    t.deepEqual(running.server, { transport: 'unix', socket });
    const [vda, vdb, vdc] = running.disks ?? [];
    t.like(vda, {
      name: 'vda',
      backup: 'yes',
      type: 'file',
      backupmode: 'incremental',
      incremental: FIRST,
      exportname: 'export-vda',
      exportbitmap: 'changes-vda',
    });
    t.like(vdb, { name: 'vdb', backup: 'yes', type: 'file', backupmode: 'incremental', incremental: FIRST, exportname: 'vdb', exportbitmap: `backup-vdb` });
    t.like(vdc, { name: 'vdc', backup: 'no' });
    t.is(typeof vda?.index, 'number');
    t.is(vda?.scratch?.file, join(the().workDir, 'vda.scratch'));
    // What libvirt reports is read back whole, and the output-only index is not sent back.
    t.deepEqual(parseBackupXml(writeBackupXml(running)), running);
    t.throws(() => buildBackupXml(running), { instanceOf: XmlValidationError, message: /^disks\[0\]\.index: output-only/ });
  } finally {
    await the().abortJob();
    await the().waitForJobEnd();
  }
  const second = parseCheckpointXml(await the().checkpointXml(SECOND));
  t.is(second.parent, FIRST);
  t.deepEqual(second.disks, [
    { name: 'vda', checkpoint: 'bitmap', bitmap: SECOND },
    { name: 'vdb', checkpoint: 'bitmap', bitmap: SECOND },
    { name: 'vdc', checkpoint: 'no' },
  ]);
});

live('backupBegin accepts a built push backup, and the target is written', async (t) => {
  const target = join(the().workDir, 'vda & <full> é.qcow2');
  await the().backupBegin(
    buildBackupXml({
      mode: 'push',
      disks: [
        { name: 'vda', type: 'file', backupmode: 'full', target: { file: target }, driver: { type: 'qcow2' } },
        { name: 'vdb', backup: 'no' },
        { name: 'vdc', backup: 'no' },
      ],
    }),
  );
  await the().waitForJobEnd();
  const { stdout } = await run('qemu-img', ['info', '--output=json', '-U', target]);
  const info = JSON.parse(stdout) as { format: string; 'virtual-size': number };
  t.is(info.format, 'qcow2');
  t.is(info['virtual-size'], 64 * 1024 * 1024);
});

const SCHEMA_REFUSAL = /failed to validate against schema/;

/** Runs a call that must fail; if libvirt accepted it after all, `undo` cleans up before the test fails. */
async function refusal(call: () => Promise<void>, undo: () => Promise<void>): Promise<string> {
  try {
    await call();
  } catch (error) {
    return error instanceof Error ? error.message : String(error);
  }
  await undo();
  return 'libvirt accepted it';
}

live('libvirt itself refuses the output-only constructs the builders refuse', async (t) => {
  const scratch = (disk: string) => ({ file: join(the().workDir, `${disk}.refused.scratch`) });
  const pull: BackupSpec = {
    mode: 'pull',
    server: { transport: 'unix', socket: join(the().workDir, 'refused.sock') },
    disks: [
      { name: 'vda', type: 'file', scratch: scratch('vda') },
      { name: 'vdb', backup: 'no' },
      { name: 'vdc', backup: 'no' },
    ],
  };
  t.notThrows(() => buildBackupXml(pull), 'the spec itself is valid input');
  const stopJob = async () => {
    await the().abortJob();
    await the().waitForJobEnd();
  };
  const variants: Record<string, BackupSpec> = {
    'disk index': { ...pull, disks: [{ ...pull.disks![0]!, index: 3 }, ...pull.disks!.slice(1)] } as BackupSpec,
    'disk state': { ...pull, disks: [{ ...pull.disks![0]!, extra: { attributes: { state: 'running' } } }, ...pull.disks!.slice(1)] } as BackupSpec,
    privateData: { ...pull, extra: { elements: ["<privateData><objects><TLSx509 alias='x'/></objects></privateData>"] } },
  };
  for (const [construct, spec] of Object.entries(variants)) {
    t.throws(() => buildBackupXml(spec), { instanceOf: XmlValidationError, message: /output-only/ }, `${construct}: our builder refuses it`);
    t.regex(await refusal(() => the().backupBegin(writeBackupXml(spec)), stopJob), SCHEMA_REFUSAL, `${construct}: libvirt refuses it too`);
  }

  const active = { name: 'lvb-active', extra: { elements: ['<active>1</active>'] } };
  t.throws(() => buildCheckpointXml(active), { instanceOf: XmlValidationError, message: /<active> is output-only/ });
  t.regex(
    await refusal(
      () => the().createCheckpoint(writeCheckpointXml(active)),
      async () => undefined,
    ),
    SCHEMA_REFUSAL,
  );
});

live('beyond its schema, libvirt needs a redefinition to carry creationTime, and ignores it on a new checkpoint', async (t) => {
  const redefinition = { name: 'lvb-no-time', disks: [{ name: 'vda' }, { name: 'vdb' }, { name: 'vdc', checkpoint: 'no' as const }] };
  t.throws(() => buildCheckpointXml(redefinition, { redefine: true }), { instanceOf: XmlValidationError, message: /^creationTime: required with REDEFINE/ });
  t.regex(
    await refusal(
      () => the().createCheckpoint(writeCheckpointXml(redefinition), { redefine: true }),
      async () => undefined,
    ),
    /missing creationTime/,
  );

  // Runs last: the checkpoint it leaves would become the parent of later ones.
  const withOutputFields = { ...redefinition, name: 'lvb-ignored', creationTime: 1, parent: 'no-such-checkpoint' };
  t.throws(() => buildCheckpointXml(withOutputFields, { redefine: false }), { instanceOf: XmlValidationError, message: /^creationTime: set by libvirt/ });
  await the().createCheckpoint(writeCheckpointXml(withOutputFields));
  const created = parseCheckpointXml(await the().checkpointXml('lvb-ignored'));
  t.not(created.creationTime, 1, 'libvirt set its own creation time');
  t.not(created.parent, 'no-such-checkpoint', 'and its own parent');
});
