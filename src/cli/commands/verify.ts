import { BackupSet } from '../../backup/index.js';
import { verify } from '../../backup/index.js';
import type { VerifyArgs } from '../args.js';
import { ExitCode } from '../exit-codes.js';
import type { CommandContext } from './context.js';

export async function verifyCommand(args: VerifyArgs, { output, signal }: CommandContext): Promise<number> {
  const set = await BackupSet.open(args.dir);
  const sizes = new Map(set.backups.flatMap((backup) => backup.disks.map((disk) => [disk.file, disk.fileSize] as const)));
  let current: string | null = null;
  const report = await verify(set, {
    signal,
    onProgress: ({ file, bytesHashed }) => {
      if (current !== null && current !== file) output.event({ type: 'file-done', file: current });
      current = file;
      const bytesTotal = sizes.get(file) ?? 0;
      output.event({ type: 'progress', target: file, bytesDone: Math.min(bytesHashed ?? 0, bytesTotal), bytesTotal });
    },
  });
  if (current !== null) output.event({ type: 'file-done', file: current });

  const errors = report.problems.filter((problem) => problem.severity === 'error');
  const warnings = report.problems.filter((problem) => problem.severity === 'warning');
  const lines = report.problems.map((problem) => `${problem.severity === 'error' ? 'error  ' : 'warning'}  ${problem.message}`);
  const files = `${report.files.length} file${report.files.length === 1 ? '' : 's'} of ${set.backups.length} backup${set.backups.length === 1 ? '' : 's'}`;
  lines.push(
    report.ok
      ? `${set.dir}: ${files} verified, no errors${warnings.length > 0 ? ` (${warnings.length} warning${warnings.length === 1 ? '' : 's'})` : ''}`
      : `${set.dir}: ${files} checked, ${errors.length} error${errors.length === 1 ? '' : 's'}${warnings.length > 0 ? `, ${warnings.length} warning${warnings.length === 1 ? '' : 's'}` : ''}`,
  );
  output.result('verify', lines.join('\n'), { dir: set.dir, ok: report.ok, files: report.files, problems: report.problems });
  return report.ok ? ExitCode.OK : ExitCode.PROBLEMS_FOUND;
}
