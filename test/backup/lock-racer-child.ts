// One of two processes racing for a set's lock: on "try" it tries to take the lock and
// answers "won" or "lost"; on "release" it lets go of a lock it won. Driven over stdin.
import { createInterface } from 'node:readline';
import { BackupSetError } from '../../src/backup/errors.js';
import { SetLock } from '../../src/backup/set/set-lock.js';

const [dir] = process.argv.slice(2);
let held: SetLock | null = null;
for await (const line of createInterface({ input: process.stdin })) {
  if (line === 'try') {
    try {
      held = await SetLock.acquire(dir!);
      process.stdout.write('won\n');
    } catch (error) {
      if (!(error instanceof BackupSetError && error.code === 'SET_LOCKED')) throw error;
      process.stdout.write('lost\n');
    }
  } else if (line === 'release') {
    await held?.release();
    held = null;
    process.stdout.write('released\n');
  }
}
