// The prebuilt binaries' floor (scripts/release/symbols.ts): the addon as built from
// source needs no libvirt function newer than the first release with backups, and the
// check that guards the prebuilt binaries tells a binary that exceeds the floor.
import { fileURLToPath } from 'node:url';

import test from 'ava';

import { PORTABLE_FLOOR, compareVersions, floorViolations, readBinaryReport } from '../../scripts/release/symbols.js';

const ADDON = fileURLToPath(new URL('../../build/Release/virt_backup.node', import.meta.url));

test('symbol versions compare by number, not as text', (t) => {
  t.true(compareVersions('2.2.5', '2.17') < 0);
  t.true(compareVersions('10.0.0', '6.0.0') > 0);
  t.is(compareVersions('6.0', '6.0.0'), 0);
});

test('the addon imports no libvirt symbol newer than LIBVIRT_6.0.0', (t) => {
  const report = readBinaryReport(ADDON);
  t.truthy(report.maximum.LIBVIRT, 'the addon imports versioned libvirt symbols');
  t.deepEqual(floorViolations(report, PORTABLE_FLOOR, ['LIBVIRT', 'LIBVIRT_QEMU']), [], 'resolve newer libvirt functions at run time');
});

test('GnuTLS symbols, versioned with underscores (GNUTLS_3_4), are read and within the floor', (t) => {
  const report = readBinaryReport(ADDON);
  t.is(report.maximum.GNUTLS?.version, '3.4');
  t.true(report.maximum.GNUTLS!.symbols.includes('gnutls_handshake'));
  t.deepEqual(floorViolations(report, PORTABLE_FLOOR, ['GNUTLS']), []);
  t.false(floorViolations(report, PORTABLE_FLOOR).includes('needs libgnutls.so.30'));
});

test('the floor check flags a build that needs the system libstdc++ and the build machine glibc', (t) => {
  // build/Release is a plain source build: libstdc++ as a shared library and glibc's
  // newest symbol versions, which the portable prebuilt binaries must not need.
  const problems = floorViolations(readBinaryReport(ADDON), PORTABLE_FLOOR);
  t.true(
    problems.some((problem) => problem.startsWith('GLIBCXX_')),
    problems.join('\n'),
  );
  t.true(problems.includes('needs libstdc++.so.6'), problems.join('\n'));
});
