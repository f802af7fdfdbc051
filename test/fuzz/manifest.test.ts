// The manifest reader against damaged and hostile files: valid manifests (any chain of
// full, incremental and differential backups, versions 1 and 2) with fields mutated,
// removed, added, duplicated and cross-wired, and their text cut or garbled. Every
// case ends in a manifest that is safe to act on and survives a write and a read, or
// in BackupSetError MANIFEST_INVALID / MANIFEST_TOO_NEW whose message names the field.
import { isDeepStrictEqual } from 'node:util';
import { join, resolve } from 'node:path';
import test from 'ava';
import fc from 'fast-check';
import { BackupSetError } from '../../src/backup/errors.js';
import { parseManifest, serializeManifest, type Manifest } from '../../src/backup/set/manifest.js';
import { fuzzRuns, reportCases } from './fuzz-runs.js';

const RUNS = fuzzRuns(3000);
const LABEL = 'manifest.json';
/** Messages name a field and say what is wrong with it; they do not echo what the file holds. */
const MAX_MESSAGE = 600;

type Json = null | boolean | number | string | Json[] | { [key: string]: Json };
type Level = 'full' | 'inc' | 'diff';

interface Shape {
  version: 1 | 2;
  levels: Level[];
  targets: string[];
  /** Per backup and disk: a disk that cannot track changes is stored full even in an inc or diff. */
  fullDisks: boolean[][];
  idGaps: number[];
  checkpoints: boolean[];
  merged: boolean[];
  name: string;
  uuid: string;
}

const shape: fc.Arbitrary<Shape> = fc.record({
  version: fc.constantFrom(1 as const, 2 as const),
  levels: fc.array(fc.constantFrom<Level>('inc', 'inc', 'diff', 'full'), { maxLength: 6 }).map((rest): Level[] => ['full', ...rest]),
  targets: fc.uniqueArray(fc.constantFrom('vda', 'vdb', 'sda', 'hdc', 'vd_x-1'), { minLength: 1, maxLength: 3 }),
  fullDisks: fc.array(fc.array(fc.boolean(), { maxLength: 3 }), { maxLength: 7 }),
  idGaps: fc.array(fc.integer({ min: 1, max: 3 }), { maxLength: 7 }),
  checkpoints: fc.array(fc.boolean(), { maxLength: 7 }),
  merged: fc.array(fc.boolean(), { maxLength: 7 }),
  name: fc.oneof(fc.constant('vm1'), fc.string({ minLength: 1, maxLength: 20 }), fc.string({ unit: 'grapheme', minLength: 1, maxLength: 10 })),
  uuid: fc.uuid(),
});

/** A valid manifest of that shape, as plain JSON. */
function build(s: Shape): { [key: string]: Json } {
  const backups: Array<{ [key: string]: Json }> = [];
  let id = 0;
  let lastFull = '';
  s.levels.forEach((level, index) => {
    id += s.idGaps[index] ?? 1;
    const backupId = String(id).padStart(4, '0');
    const previous = backups.at(-1);
    const parentId = level === 'full' ? null : level === 'inc' ? (previous!['id'] as string) : lastFull;
    const parent = backups.find((backup) => backup['id'] === parentId);
    const time = (minutes: number): string => new Date(Date.UTC(2024, 4, 1, 2, 0, 0) + (index * 60 + minutes) * 60_000).toISOString();
    const disks = s.targets.map((target, diskIndex): { [key: string]: Json } => {
      const diskLevel: Level = level !== 'full' && s.fullDisks[index]?.[diskIndex] ? 'full' : level;
      const parentDisk = (parent?.['disks'] as Array<{ [key: string]: Json }> | undefined)?.find((disk) => disk['target'] === target);
      const checksum: { [key: string]: Json } =
        s.version === 1 ? { sha256: 'c'.repeat(64) } : { checksum: diskIndex % 2 ? `sha256:${'d'.repeat(64)}` : `xxh128:${'e'.repeat(32)}` };
      return {
        target,
        sourceFormat: 'qcow2',
        level: diskLevel,
        file: `${target}.${backupId}.${diskLevel}.qcow2`,
        backingFile: diskLevel === 'full' ? null : (parentDisk!['file'] as string),
        virtualSize: 4 * 1024 * 1024,
        fileSize: 200_704,
        dataBytes: 1_048_576,
        ...checksum,
      };
    });
    const checkpoint = s.checkpoints[index] ?? true;
    const backup: { [key: string]: Json } = {
      id: backupId,
      level,
      transport: index % 2 ? 'push' : 'pull',
      startedAt: time(0),
      completedAt: time(1),
      checkpoint: checkpoint ? `cp-${backupId}` : null,
      checkpointXml: checkpoint ? '<domaincheckpoint/>' : null,
      parent: parentId,
      disks,
    };
    if (s.merged[index] && id > 1) backup['mergedFrom'] = ['0000'];
    backups.push(backup);
    if (level === 'full') lastFull = backupId;
  });
  return { format: 'libvirt-backup-set', version: s.version, domain: { name: s.name, uuid: s.uuid, xml: '<domain/>' }, backups };
}

type Step = string | number;

function nodesOf(value: Json, at: Step[] = [], out: Step[][] = []): Step[][] {
  out.push(at);
  if (Array.isArray(value)) value.forEach((item, i) => nodesOf(item, [...at, i], out));
  else if (value !== null && typeof value === 'object') for (const key of Object.keys(value)) nodesOf(value[key]!, [...at, key], out);
  return out;
}

function get(root: Json, path: Step[]): Json | undefined {
  let node: Json | undefined = root;
  for (const step of path) {
    if (node === null || typeof node !== 'object') return undefined;
    node = Array.isArray(node) ? (typeof step === 'number' ? node[step] : undefined) : Object.hasOwn(node, step) ? node[step as string] : undefined;
  }
  return node;
}

/** Sets an own property, even one called __proto__ (plain assignment would set the prototype). */
function put(target: { [key: string]: Json } | Json[], key: Step, value: Json): void {
  Object.defineProperty(target, key, { value, enumerable: true, writable: true, configurable: true });
}

const hostileString = fc.constantFrom(
  '',
  ' ',
  '0',
  '-1',
  'NaN',
  'Infinity',
  '1e400',
  '00001',
  '0001',
  '9'.repeat(25),
  '__proto__',
  'constructor',
  '../x.qcow2',
  '../../etc/passwd',
  '/etc/passwd',
  'a/b.qcow2',
  'a\\b.qcow2',
  '.hidden.qcow2',
  '.vda.0002.inc.qcow2.tmp',
  'x\u0000.qcow2',
  'x\n.qcow2',
  'x\r\n.qcow2',
  '\u001b[31m.qcow2',
  '..',
  '.',
  '.qcow2',
  `${'x'.repeat(250)}.qcow2`,
  `${'é'.repeat(130)}.qcow2`,
  '\u202e2wocq.exe.qcow2',
  '\ud800.qcow2',
  'vda.0001.full.qcow2',
  'vda.0002.inc.qcow2',
  `xxh128:${'a'.repeat(32)}`,
  `sha256:${'b'.repeat(64)}`,
  'XXH128:' + 'A'.repeat(32),
  '2024-05-01T02:00:00.000Z',
  '2024-02-30T00:00:00Z',
  '9999-99-99T99:99:99Z',
  '2024-05-01T02:00:00',
  'full',
  'inc',
  'diff',
  'pull',
  'push',
  'libvirt-backup-set',
  '4DEA22B3-1D52-D8F3-2516-782E98AB3FA0',
);

const hostileValue: fc.Arbitrary<Json> = fc.oneof(
  { weight: 3, arbitrary: fc.constantFrom<Json>(null, true, false, 0, -1, 1.5, 2 ** 53, 2 ** 53 + 2, 1e300, -1e300, [], {}, [null], ['0001'], { '': null }) },
  { weight: 1, arbitrary: fc.constant<Json>(-0) },
  { weight: 4, arbitrary: hostileString },
  { weight: 2, arbitrary: fc.string({ maxLength: 30 }) },
  { weight: 1, arbitrary: fc.string({ unit: 'binary', maxLength: 30 }) },
  { weight: 1, arbitrary: fc.integer() },
  { weight: 1, arbitrary: fc.double({ noNaN: true }) },
  { weight: 1, arbitrary: fc.constant('z'.repeat(100_000)) },
  { weight: 1, arbitrary: fc.array(fc.string({ maxLength: 6 }), { maxLength: 3 }) },
);

const extraKey = fc.oneof(
  fc.constantFrom('__proto__', 'constructor', 'prototype', 'toString', 'hasOwnProperty', 'sha256', 'checksum', 'mergedFrom', 'extra', ''),
  fc.string({ maxLength: 12 }),
);

type Mutation =
  | { kind: 'replace'; node: number; value: Json }
  | { kind: 'delete'; node: number }
  | { kind: 'add'; node: number; key: string; value: Json }
  | { kind: 'copy'; from: number; to: number }
  | { kind: 'swap-backups'; first: number; second: number }
  | { kind: 'parent-forward'; backup: number; target: number }
  | { kind: 'back-onto'; backup: number; target: number };

const mutation: fc.Arbitrary<Mutation> = fc.oneof(
  { weight: 6, arbitrary: fc.record({ kind: fc.constant('replace' as const), node: fc.nat(), value: hostileValue }) },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant('delete' as const), node: fc.nat() }) },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant('add' as const), node: fc.nat(), key: extraKey, value: hostileValue }) },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant('copy' as const), from: fc.nat(), to: fc.nat() }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('swap-backups' as const), first: fc.nat(), second: fc.nat() }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('parent-forward' as const), backup: fc.nat(), target: fc.nat() }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('back-onto' as const), backup: fc.nat(), target: fc.nat() }) },
);

function mutate(root: { [key: string]: Json }, change: Mutation): void {
  const nodes = nodesOf(root);
  const pick = (n: number): Step[] => nodes[n % nodes.length]!;
  const backups = root['backups'];
  const backupList = Array.isArray(backups)
    ? (backups.filter((b) => b !== null && typeof b === 'object' && !Array.isArray(b)) as Array<{ [key: string]: Json }>)
    : [];
  switch (change.kind) {
    case 'replace':
    case 'delete': {
      const path = pick(change.node);
      if (path.length === 0) return;
      const parent = get(root, path.slice(0, -1));
      const key = path.at(-1)!;
      if (parent === null || typeof parent !== 'object' || parent === undefined) return;
      if (change.kind === 'replace') put(parent, key, change.value);
      else if (Array.isArray(parent)) parent.splice(key as number, 1);
      else delete parent[key as string];
      return;
    }
    case 'add': {
      const target = get(root, pick(change.node));
      if (target !== null && typeof target === 'object' && target !== undefined && !Array.isArray(target)) put(target, change.key, change.value);
      return;
    }
    case 'copy': {
      // Same-named fields wired to each other: duplicate ids, shared files, swapped parents.
      const from = pick(change.from);
      const candidates = nodes.filter((path) => path.at(-1) === from.at(-1) && path !== from);
      const to = candidates[change.to % Math.max(1, candidates.length)];
      const value = get(root, from);
      const parent = to ? get(root, to.slice(0, -1)) : undefined;
      if (to && value !== undefined && parent !== null && typeof parent === 'object' && parent !== undefined) put(parent, to.at(-1)!, structuredClone(value));
      return;
    }
    case 'swap-backups': {
      if (!Array.isArray(backups) || backups.length < 2) return;
      const a = change.first % backups.length;
      const b = change.second % backups.length;
      [backups[a], backups[b]] = [backups[b]!, backups[a]!];
      return;
    }
    case 'parent-forward': {
      // A parent that is the backup itself or a later one: a cycle, if it were followed.
      if (backupList.length === 0) return;
      const i = change.backup % backupList.length;
      const j = i + (change.target % (backupList.length - i));
      backupList[i]!['parent'] = backupList[j]!['id'] ?? null;
      return;
    }
    case 'back-onto': {
      // A disk backed by its own file or a later backup's.
      if (backupList.length === 0) return;
      const i = change.backup % backupList.length;
      const j = i + (change.target % (backupList.length - i));
      const disk = (backupList[i]!['disks'] as Array<{ [key: string]: Json }> | undefined)?.[0];
      const later = (backupList[j]!['disks'] as Array<{ [key: string]: Json }> | undefined)?.[0];
      if (disk && later && typeof disk === 'object' && typeof later === 'object') disk['backingFile'] = later['file'] ?? null;
      return;
    }
  }
}

type TextDamage = { kind: 'none' } | { kind: 'cut'; at: number } | { kind: 'flip'; at: number; char: string } | { kind: 'insert'; at: number; text: string };

const textDamage: fc.Arbitrary<TextDamage> = fc.oneof(
  { weight: 8, arbitrary: fc.constant({ kind: 'none' as const }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('cut' as const), at: fc.nat() }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('flip' as const), at: fc.nat(), char: fc.string({ minLength: 1, maxLength: 1, unit: 'binary' }) }) },
  {
    weight: 1,
    arbitrary: fc.record({
      kind: fc.constant('insert' as const),
      at: fc.nat(),
      text: fc.constantFrom('"__proto__":{"polluted":1},', '{', '}', ',', '"', '\\u0000', '"format":"x",', '['),
    }),
  },
);

function damage(text: string, change: TextDamage): string {
  if (change.kind === 'none') return text;
  const at = change.at % (text.length + 1);
  if (change.kind === 'cut') return text.slice(0, at);
  if (change.kind === 'flip') return text.slice(0, at) + change.char + text.slice(at + 1);
  return text.slice(0, at) + change.text + text.slice(at);
}

/** `backups[2].disks["a b"]` as steps; undefined when the message does not start with a field path. */
function fieldPath(message: string): Step[] | undefined {
  const rest = message.slice(LABEL.length + 2);
  const steps: Step[] = [];
  let at = 0;
  const first = /^[A-Za-z_$][\w$]*/.exec(rest);
  if (first) {
    steps.push(first[0]);
    at = first[0].length;
  }
  for (;;) {
    const tail = rest.slice(at);
    let m: RegExpExecArray | null;
    if ((m = /^\.([A-Za-z_$][\w$]*)/.exec(tail))) steps.push(m[1]!);
    else if ((m = /^\[(\d+)\]/.exec(tail))) steps.push(Number(m[1]));
    else if ((m = /^\[("(?:[^"\\]|\\.)*")\]/.exec(tail))) steps.push(JSON.parse(m[1]!) as string);
    else break;
    at += m[0].length;
  }
  if (steps.length === 0 || !rest.slice(at).startsWith(': ')) return undefined;
  return steps;
}

/** What must hold of a manifest anything acts on. */
function unsafe(manifest: Manifest): string | undefined {
  const dir = '/sets/vm1';
  for (const backup of manifest.backups) {
    for (const disk of backup.disks) {
      for (const name of [disk.file, disk.backingFile]) {
        if (name === null) continue;
        if (resolve(dir, name) !== join(dir, name) || join(dir, name).slice(dir.length + 1) !== name) return `${name}: not a plain name in the set directory`;
        if (name.startsWith('.') || /[\u0000-\u001f\u007f]/.test(name) || Buffer.byteLength(name) > 255)
          return `${JSON.stringify(name)}: hidden, control characters or too long`;
      }
    }
    const index = manifest.backups.indexOf(backup);
    if (backup.parent !== null && !manifest.backups.slice(0, index).some((earlier) => earlier.id === backup.parent))
      return `${backup.id}: parent is not earlier`;
  }
  return undefined;
}

test('the manifest reader: a safe manifest that round-trips, or MANIFEST_INVALID / MANIFEST_TOO_NEW naming the field', (t) => {
  const startedAt = performance.now();
  const prototypeBefore = Object.getOwnPropertyNames(Object.prototype).join();
  const seen = { valid: 0, invalid: 0, tooNew: 0, notJson: 0 };
  const property = fc.property(shape, fc.array(mutation, { maxLength: 3 }), textDamage, (s, mutations, textChange) => {
    const document = build(s);
    for (const change of mutations) mutate(document, change);
    const text = damage(JSON.stringify(document, null, mutations.length % 2 ? 2 : undefined), textChange);
    let manifest: Manifest;
    try {
      manifest = parseManifest(text, LABEL);
    } catch (error) {
      if (!(error instanceof BackupSetError)) throw new Error(`threw ${error instanceof Error ? `${error.name}: ${error.message}` : String(error)}`);
      if (error.code !== 'MANIFEST_INVALID' && error.code !== 'MANIFEST_TOO_NEW') throw new Error(`code ${error.code}`);
      if (!error.message.startsWith(`${LABEL}: `)) throw new Error(`message does not start with the file: ${error.message.slice(0, 200)}`);
      if (error.message.length > MAX_MESSAGE) throw new Error(`message of ${error.message.length} characters: ${error.message.slice(0, 200)}`);
      if (error.code === 'MANIFEST_TOO_NEW') {
        seen.tooNew++;
        return;
      }
      if (error.message.startsWith(`${LABEL}: not valid JSON`)) {
        seen.notJson++;
        return;
      }
      seen.invalid++;
      if (error.message.startsWith(`${LABEL}: must be an object`)) return;
      const path = fieldPath(error.message);
      if (!path) throw new Error(`message names no field: ${error.message.slice(0, 200)}`);
      // The field, or at least the object it is missing from, is in the file.
      const parsed = JSON.parse(text) as Json;
      if (get(parsed, path.slice(0, -1)) === undefined)
        throw new Error(`message names ${JSON.stringify(path)}, which is not in the file: ${error.message.slice(0, 200)}`);
      return;
    }
    seen.valid++;
    const problem = unsafe(manifest);
    if (problem) throw new Error(`accepted an unsafe manifest: ${problem}`);
    const again = parseManifest(serializeManifest(manifest), LABEL);
    if (!isDeepStrictEqual(again, manifest)) throw new Error('a write and a read changed the manifest');
    if (serializeManifest(again) !== serializeManifest(manifest)) throw new Error('a second write differs from the first');
    if (Object.getOwnPropertyNames(Object.prototype).join() !== prototypeBefore) throw new Error('Object.prototype changed');
  });
  const result = fc.check(property, { numRuns: RUNS });
  reportCases(t.log.bind(t), 'manifest reader', result.numRuns, result.failed ? 1 : 0, startedAt);
  t.log(`valid ${seen.valid}, invalid ${seen.invalid}, not JSON ${seen.notJson}, too new ${seen.tooNew}`);
  if (result.failed) t.log(result.errorInstance instanceof Error ? result.errorInstance.message : String(result.errorInstance));
  t.false(result.failed, fc.defaultReportMessage(result) ?? '');
});
