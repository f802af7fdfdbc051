import { execFile } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);

export const SCHEMA_DIR = '/usr/share/libvirt/schemas';
export const CHECKPOINT_SCHEMA = `${SCHEMA_DIR}/domaincheckpoint.rng`;
export const BACKUP_SCHEMA = `${SCHEMA_DIR}/domainbackup.rng`;

/**
 * The libvirt version the installed schemas belong to (they ship with the
 * library), so that documents are built for the version they are checked
 * against.
 */
export async function installedSchemaVersion(): Promise<number> {
  const { stdout } = await run('pkg-config', ['--modversion', 'libvirt']);
  const match = /^(\d+)\.(\d+)\.(\d+)/.exec(stdout.trim());
  if (match === null) throw new Error(`cannot read libvirt's version from pkg-config: ${stdout}`);
  return Number(match[1]) * 1_000_000 + Number(match[2]) * 1_000 + Number(match[3]);
}

export interface XmllintVerdict {
  valid: boolean;
  /** xmllint's complaints about this document, if any. */
  messages: string[];
}

/**
 * Validates many documents with one xmllint run (starting xmllint and
 * loading libvirt's schemas dominates the cost), one verdict per document.
 */
export async function validateWithXmllint(schema: string, documents: readonly string[]): Promise<XmllintVerdict[]> {
  if (documents.length === 0) return [];
  const directory = await mkdtemp(join(tmpdir(), 'lvb-xmllint-'));
  try {
    const files = documents.map((_, index) => join(directory, `doc${index}.xml`));
    await Promise.all(documents.map((xml, index) => writeFile(files[index]!, xml)));
    let stderr: string;
    try {
      ({ stderr } = await run('xmllint', ['--noout', '--relaxng', schema, ...files], { maxBuffer: 64 * 1024 * 1024 }));
    } catch (error) {
      const failure = error as { stderr?: string; code?: number | string };
      if (typeof failure.stderr !== 'string' || failure.code === 'ENOENT') throw error;
      stderr = failure.stderr;
    }
    const lines = stderr.split('\n');
    return files.map((file) => {
      const own = lines.filter((line) => line.startsWith(`${file}:`) || line.startsWith(`${file} `));
      const valid = own.includes(`${file} validates`);
      if (!valid && !own.some((line) => line === `${file} fails to validate`)) {
        throw new Error(`xmllint gave no verdict for ${file}:\n${stderr}`);
      }
      return { valid, messages: own.filter((line) => line.startsWith(`${file}:`)) };
    });
  } finally {
    await rm(directory, { recursive: true, force: true });
  }
}
