// What a hung process was doing when the soak killed it: the report a hang needs.
import { execFile } from 'node:child_process';
import { readdir, readFile } from 'node:fs/promises';

/**
 * Every thread's stack of a process about to be killed for hanging: with gdb when the
 * host has it (setup-host installs it), else each thread's name and kernel wait point.
 */
export async function threadStacks(pid: number): Promise<string> {
  const gdb = await new Promise<string | undefined>((resolve) => {
    execFile('gdb', ['-p', String(pid), '-batch', '-nx', '-ex', 'thread apply all bt'], { timeout: 60_000, maxBuffer: 16 * 2 ** 20 }, (error, stdout) => {
      resolve(error === null && /^Thread /m.test(stdout) ? stdout : undefined);
    });
  });
  if (gdb !== undefined) return gdb;
  const tasks = await readdir(`/proc/${pid}/task`).catch(() => [] as string[]);
  const lines = await Promise.all(
    tasks.map(async (tid) => {
      const read = (file: string) =>
        readFile(`/proc/${pid}/task/${tid}/${file}`, 'utf8').then(
          (text) => text.trim(),
          () => '?',
        );
      return `${tid} ${await read('comm')}: wchan ${await read('wchan')}, syscall ${await read('syscall')}\n${await read('stack')}`;
    }),
  );
  return lines.join('\n') || '(no threads readable)';
}
