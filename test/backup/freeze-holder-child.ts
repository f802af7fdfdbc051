// Runs a quiesced backup and stops for good with the guest's file systems frozen, saying
// so on stdout: a run to kill at the worst moment.
import { runBackup } from '../../src/backup/index.js';

const [domain, dest] = process.argv.slice(2);
setInterval(() => undefined, 1 << 30);
await runBackup({
  domain: domain!,
  dest: dest!,
  quiesce: 'yes',
  hooks: {
    whileFrozen: async () => {
      process.stdout.write('frozen\n');
      await new Promise(() => undefined);
    },
  },
});
