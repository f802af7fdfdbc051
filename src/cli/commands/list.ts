import { BackupSet } from '../../backup/index.js';
import { formatListJson, formatListTable, listBackups } from '../../backup/index.js';
import type { ListArgs } from '../args.js';
import { ExitCode } from '../exit-codes.js';
import type { CommandContext } from './context.js';

export async function listCommand(args: ListArgs, { output }: CommandContext): Promise<number> {
  const set = await BackupSet.open(args.dir);
  const result = listBackups(set);
  if (output.json) output.document(formatListJson(result));
  else output.result('list', formatListTable(result), result);
  return ExitCode.OK;
}
