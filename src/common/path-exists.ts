// Whether a path exists, where "cannot tell" (permissions, I/O) is an error, not a no.
import { stat } from 'node:fs/promises';

import { errnoCode } from './fs-errors.js';

/** True when `path` exists; false only for ENOENT; any other failure is thrown. */
export async function pathExists(path: string): Promise<boolean> {
  try {
    await stat(path);
    return true;
  } catch (error) {
    if (errnoCode(error) === 'ENOENT') return false;
    throw error;
  }
}
