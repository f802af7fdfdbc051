// Runs a prune and kills itself with SIGKILL at the named step: a real crash, with no
// cleanup code running, so the test can check what the next run finds.
import { BackupSet } from '../../src/backup/set/backup-set.js';
import { prune, type PruneHooks } from '../../src/backup/set/prune.js';

const [dir, keep, step] = process.argv.slice(2);
const crash = (): never => {
  process.kill(process.pid, 'SIGKILL');
  throw new Error('unreachable');
};
const set = await BackupSet.openForWrite(dir!);
await prune(set, { keep: Number(keep), hooks: { [step as keyof PruneHooks]: crash } });
process.stdout.write('prune finished without crashing\n');
