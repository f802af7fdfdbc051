// What a built addon asks of the system it loads on: the highest version of each
// versioned symbol family it imports (glibc, libstdc++, libgcc, libvirt), read
// from its dynamic symbol table with `objdump -T`, and the shared libraries it
// names. The prebuilt binaries must stay within PORTABLE_FLOOR, so that one binary
// per architecture loads on every distribution the README lists.
//
//   node --import=tsx scripts/release/symbols.ts [--check] [--require x64,arm64] [file.node ...]
//
// Without files it reports prebuilds/linux-*/*.node. --check exits non-zero when a
// binary exceeds the floor; --require fails when an architecture has no binary.
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const PREBUILDS = join(ROOT, 'prebuilds');

/** Highest version a binary may import per symbol family; a family absent here may not appear at all. */
export interface SymbolFloor {
  versions: Record<string, string>;
  /** Shared libraries the binary may name (DT_NEEDED), as patterns. */
  libraries: RegExp[];
}

/**
 * The floor of the prebuilt binaries. glibc 2.28 is what Node 20's own Linux
 * binaries need, so the addon never narrows what Node runs on; libvirt 6.0.0 is
 * the first release with the backup API; libgcc_s has had GCC_4.2.0 since 2007.
 * GnuTLS (NBD over TLS, binding/tls_relay.h) is there wherever libvirt is, which
 * links it; GnuTLS 3.4 (2015) renamed every symbol GNUTLS_3_4.
 * libstdc++ is linked in: no GLIBCXX or CXXABI import is allowed.
 */
export const PORTABLE_FLOOR: SymbolFloor = {
  versions: { GLIBC: '2.28', GCC: '4.2.0', LIBVIRT: '6.0.0', LIBVIRT_QEMU: '6.0.0', GNUTLS: '3.4' },
  libraries: [
    /^libc\.so\.6$/,
    /^libpthread\.so\.0$/,
    /^libdl\.so\.2$/,
    /^libgcc_s\.so\.1$/,
    /^ld-linux-[\w-]+\.so\.\d$/,
    /^libvirt\.so\.0$/,
    /^libvirt-qemu\.so\.0$/,
    /^libgnutls\.so\.30$/,
  ],
};

/** One family's highest imported version and the symbols that need it. */
export interface FamilyMaximum {
  version: string;
  symbols: string[];
}

export interface BinaryReport {
  file: string;
  format: string;
  maximum: Record<string, FamilyMaximum>;
  libraries: string[];
}

export function compareVersions(a: string, b: string): number {
  const left = a.split('.').map(Number);
  const right = b.split('.').map(Number);
  for (let i = 0; i < Math.max(left.length, right.length); i++) {
    const difference = (left[i] ?? 0) - (right[i] ?? 0);
    if (difference !== 0) return Math.sign(difference);
  }
  return 0;
}

// `0000000000000000      DF *UND*	0000000000000000 (GLIBC_2.17) pthread_create`;
// some libraries write the version with underscores (GNUTLS_3_4).
const IMPORT = /\*UND\*\s+[0-9a-f]+\s+\(?([A-Z][A-Z_]*?)_(\d+(?:[._]\d+)*)\)?\s+(\S+)$/;

const ELF_MACHINES: Record<number, string> = { 62: 'x86-64', 183: 'aarch64' };

/** The ELF header's machine field (objdump names foreign architectures poorly). */
function elfMachine(file: string): string {
  const header = readFileSync(file).subarray(0, 20);
  const machine = header.readUInt16LE(18);
  return ELF_MACHINES[machine] ?? `ELF machine ${machine}`;
}

export function readBinaryReport(file: string): BinaryReport {
  const symbols = execFileSync('objdump', ['-T', file], { encoding: 'utf8' });
  const headers = execFileSync('objdump', ['-p', file], { encoding: 'utf8' });
  const maximum: Record<string, FamilyMaximum> = {};
  for (const line of symbols.split('\n')) {
    const match = IMPORT.exec(line);
    if (!match) continue;
    const [, family, written, symbol] = match as unknown as [string, string, string, string];
    const version = written.replaceAll('_', '.');
    const current = maximum[family];
    const order = current === undefined ? 1 : compareVersions(version, current.version);
    if (order > 0) maximum[family] = { version, symbols: [symbol] };
    else if (order === 0) current!.symbols.push(symbol);
  }
  const libraries = [...headers.matchAll(/^\s*NEEDED\s+(\S+)$/gm)].map((m) => m[1]!);
  const format = elfMachine(file);
  return { file, format, maximum, libraries };
}

/** Every way the binary exceeds the floor, as sentences; empty when it does not. */
export function floorViolations(report: BinaryReport, floor: SymbolFloor, families?: string[]): string[] {
  const problems: string[] = [];
  for (const [family, { version, symbols }] of Object.entries(report.maximum)) {
    if (families !== undefined && !families.includes(family)) continue;
    const allowed = floor.versions[family];
    if (allowed === undefined) {
      problems.push(`${family}_${version} (${symbols.join(', ')}): no ${family} import is allowed`);
    } else if (compareVersions(version, allowed) > 0) {
      problems.push(`${family}_${version} (${symbols.join(', ')}) is newer than ${family}_${allowed}`);
    }
  }
  if (families === undefined) {
    for (const library of report.libraries) {
      if (!floor.libraries.some((pattern) => pattern.test(library))) problems.push(`needs ${library}`);
    }
  }
  return problems;
}

export function formatReport(report: BinaryReport): string {
  const lines = [`${relative(ROOT, report.file)} (${report.format})`];
  for (const [family, { version, symbols }] of Object.entries(report.maximum).sort(([a], [b]) => a.localeCompare(b))) {
    const shown = symbols.length > 4 ? `${symbols.slice(0, 4).join(', ')}, ...` : symbols.join(', ');
    lines.push(`  ${`${family}_${version}`.padEnd(22)} ${shown}`);
  }
  lines.push(`  needs: ${report.libraries.join(', ')}`);
  return lines.join('\n');
}

export function prebuiltBinaries(): string[] {
  if (!existsSync(PREBUILDS)) return [];
  return readdirSync(PREBUILDS)
    .filter((dir) => dir.startsWith('linux-'))
    .flatMap((dir) =>
      readdirSync(join(PREBUILDS, dir))
        .filter((name) => name.endsWith('.node'))
        .map((name) => join(PREBUILDS, dir, name)),
    );
}

function main(args: string[]): number {
  let check = false;
  const required: string[] = [];
  const files: string[] = [];
  for (let i = 0; i < args.length; i++) {
    const arg = args[i]!;
    if (arg === '--check') check = true;
    else if (arg === '--require') required.push(...(args[++i] ?? '').split(',').filter(Boolean));
    else files.push(arg);
  }
  const binaries = files.length > 0 ? files : prebuiltBinaries();
  let failed = false;
  for (const arch of required) {
    if (!binaries.some((file) => file.includes(`${join('prebuilds', `linux-${arch}`)}/`))) {
      console.error(`symbols: no prebuilt binary for linux-${arch}; run npm run prebuilds`);
      failed = true;
    }
  }
  if (binaries.length === 0 && required.length === 0) {
    console.error('symbols: no binaries to report (prebuilds/ is empty; run npm run prebuilds)');
    return 1;
  }
  for (const file of binaries) {
    const report = readBinaryReport(file);
    console.log(formatReport(report));
    const problems = floorViolations(report, PORTABLE_FLOOR);
    for (const problem of problems) console.log(`  EXCEEDS THE FLOOR: ${problem}`);
    if (check && problems.length > 0) failed = true;
  }
  const floor = Object.entries(PORTABLE_FLOOR.versions)
    .map(([family, version]) => `${family}_${version}`)
    .join(', ');
  console.log(`floor: ${floor}; no GLIBCXX or CXXABI (libstdc++ linked in)`);
  return failed ? 1 : 0;
}

if (process.argv[1] !== undefined && fileURLToPath(import.meta.url) === process.argv[1]) {
  process.exitCode = main(process.argv.slice(2));
}
