// Holds a set's lock until killed, and says so on stdout: another process to race with.
import { SetLock } from '../../src/backup/set/set-lock.js';

const [dir] = process.argv.slice(2);
await SetLock.acquire(dir!);
process.stdout.write('locked\n');
setInterval(() => undefined, 1 << 30);
