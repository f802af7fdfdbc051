// The layer rules of src/, checked by `npm run lint:deps` (part of `npm test`).
// The stack, bottom to top: common, xml, nbd | libvirt | backup | cli.
/** @type {import('dependency-cruiser').IConfiguration} */
module.exports = {
  forbidden: [
    {
      name: 'no-runtime-cycle',
      severity: 'error',
      comment: 'A cycle of run-time imports makes module order (and so initialisation) depend on who imports first.',
      from: { path: '^src/' },
      to: { circular: true, viaOnly: { dependencyTypesNot: ['type-only'] } },
    },
    {
      name: 'no-cycle-in-backup',
      severity: 'error',
      comment: 'The backup rooms must read apart: not even a type-only cycle (the set, its recovery and prune were once one knot).',
      from: { path: '^src/backup/' },
      to: { path: '^src/backup/', circular: true },
    },
    {
      name: 'common-is-leaf',
      severity: 'error',
      comment: 'src/common holds helpers every layer may use; it depends on no layer.',
      from: { path: '^src/common/' },
      to: { path: '^src/', pathNot: '^src/common/' },
    },
    {
      name: 'xml-and-nbd-stand-alone',
      severity: 'error',
      comment: 'The XML builders and the NBD client are usable without libvirt, the backup engine or the CLI.',
      from: { path: '^src/(xml|nbd)/' },
      to: { path: '^src/(libvirt|backup|cli)/|^src/index\\.ts$' },
    },
    {
      name: 'binding-below-backup',
      severity: 'error',
      comment: 'The libvirt binding knows nothing of backups, NBD or the command line.',
      from: { path: '^src/libvirt/' },
      to: { path: '^src/(backup|cli|nbd)/|^src/index\\.ts$' },
    },
    {
      name: 'backup-below-cli',
      severity: 'error',
      from: { path: '^src/(backup|libvirt|xml|nbd|common)/|^src/index\\.ts$' },
      to: { path: '^src/cli/' },
    },
    {
      name: 'cli-through-public-modules',
      severity: 'error',
      comment: 'The CLI is a user of the library: it sees what a user sees (libvirt-backup, /backup, /xml, /nbd).',
      from: { path: '^src/cli/' },
      to: { path: '^src/(libvirt/|backup/(?!index\\.ts$)|xml/(?!index\\.ts$)|nbd/(?!index\\.ts$))' },
    },
    {
      name: 'qcow2-knows-no-set',
      severity: 'error',
      comment: 'The qcow2 room reads and writes images; it does not know what a backup set is.',
      from: { path: '^src/backup/qcow2/' },
      to: { path: '^src/backup/(set|engine|restore)/' },
    },
    {
      name: 'set-below-engine-and-restore',
      severity: 'error',
      comment: 'The set on disk is used by the engine and by restore/verify/list, never the other way round.',
      from: { path: '^src/backup/set/' },
      to: { path: '^src/backup/(engine|restore)/' },
    },
    {
      name: 'restore-apart-from-engine',
      severity: 'error',
      comment: 'Reading a set back needs no daemon: restore/verify/list use the addon only for its file helpers (native.ts), never a connection or the engine.',
      from: { path: '^src/backup/restore/' },
      to: { path: '^src/backup/engine/|^src/libvirt/|^src/index\\.ts$', pathNot: '^src/libvirt/native\\.ts$' },
    },
    {
      name: 'recovery-on-set-and-binding',
      severity: 'error',
      comment:
        'Running from a backup stands on the set, restore (migrate-storage seeds each permanent image with a restore of the point), the qcow2 room, the binding and xml/: never on the engine or the NBD client.',
      from: { path: '^src/backup/recovery/' },
      to: { path: '^src/backup/engine/|^src/nbd/|^src/index\\.ts$' },
    },
    {
      name: 'pool-restore-beside-the-engine',
      severity: 'error',
      comment: 'Restoring into a pool stands on the set, restore, the qcow2 room, the binding and xml/: never on the engine, recovery or the NBD client.',
      from: { path: '^src/backup/pool-restore/' },
      to: { path: '^src/backup/(engine|recovery)/|^src/nbd/|^src/index\\.ts$' },
    },
    {
      name: 'recovery-only-through-index',
      severity: 'error',
      comment: 'The recovery room is reached through the public module only.',
      from: { path: '^src/', pathNot: '^src/backup/(recovery/|index\\.ts$)' },
      to: { path: '^src/backup/recovery/' },
    },
    {
      name: 'src-not-to-tests-or-scripts',
      severity: 'error',
      from: { path: '^src/' },
      to: { path: '^(test|scripts)/' },
    },
  ],
  options: {
    doNotFollow: { path: 'node_modules' },
    tsPreCompilationDeps: true,
    tsConfig: { fileName: 'tsconfig.json' },
    enhancedResolveOptions: { exportsFields: ['exports'], conditionNames: ['import', 'default', 'types'], extensions: ['.ts', '.js'] },
    reporterOptions: { text: { highlightFocused: true } },
  },
};
