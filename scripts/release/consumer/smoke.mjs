// What a user's first program does with the installed package, on libvirt's
// in-process test driver (no daemon): run by pack-test.sh with the machine's Node
// and by arm64-smoke.sh with an arm64 Node under emulation. Prints one line per
// check and exits non-zero on the first failure.
import assert from 'node:assert/strict';

import { connect, LibvirtError, ListDomainsFlags, getLibraryVersion, formatVersion } from 'libvirt-backup';
import { buildCheckpointXml, parseCheckpointXml, parseDomainXml, XmlValidationError } from 'libvirt-backup/xml';
import { NbdClient, NbdError, BASE_ALLOCATION } from 'libvirt-backup/nbd';
import { MANIFEST_FORMAT, formatBytes } from 'libvirt-backup/backup';

const ok = (what) => console.log(`ok ${what}`);

ok(`node ${process.version} ${process.arch}, libvirt ${formatVersion(getLibraryVersion())}`);

const conn = await connect('test:///default');
try {
  const domains = await conn.listAllDomains(ListDomainsFlags.ACTIVE);
  assert.deepEqual(
    domains.map((d) => d.name),
    ['test'],
  );
  ok(`connect + listAllDomains: ${domains.map((d) => d.name).join(', ')}`);

  const summary = parseDomainXml(await domains[0].getXMLDesc());
  assert.equal(summary.name, 'test');
  ok(`getXMLDesc + parseDomainXml: ${summary.name}`);

  const checkpoint = await domains[0].createCheckpoint({ name: 'smoke', description: 'from the packed tarball' });
  const spec = parseCheckpointXml(await checkpoint.getXMLDesc());
  assert.equal(spec.name, 'smoke');
  ok(`createCheckpoint + parseCheckpointXml: ${spec.name}`);

  await assert.rejects(conn.lookupDomainByName('no-such-domain'), (err) => {
    assert.ok(err instanceof LibvirtError, 'a LibvirtError');
    assert.equal(err.codeName, 'VIR_ERR_NO_DOMAIN');
    return true;
  });
  ok('typed error: LibvirtError VIR_ERR_NO_DOMAIN');
} finally {
  await conn.close();
}

assert.match(buildCheckpointXml({ name: 'nightly', description: 'a & b' }), /<description>a &amp; b<\/description>/);
assert.throws(() => buildCheckpointXml({ name: 'a/b' }), XmlValidationError);
ok('libvirt-backup/xml: buildCheckpointXml escapes, and names the invalid field');

await assert.rejects(NbdClient.connect({ path: '/nonexistent/nbd.sock' }), { code: 'ENOENT' });
assert.equal(typeof NbdError, 'function');
ok(`libvirt-backup/nbd: a missing socket is refused (${BASE_ALLOCATION})`);

assert.equal(MANIFEST_FORMAT, 'libvirt-backup-set');
assert.equal(formatBytes(1536), '1.5 KiB');
ok('libvirt-backup/backup: loads');
