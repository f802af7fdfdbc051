// Byte-for-byte comparison of guest content with `qemu-img compare`, which reads
// both images as the guest would see them (holes and zero clusters read as zeroes).
import { run, tryRun } from '../../test/helpers/process.js';

export type ImageFormat = 'raw' | 'qcow2';

export interface Comparison {
  identical: boolean;
  /** Guest bytes compared (the expected virtual size). */
  bytes: number;
  /** qemu-img's words when the images differ or cannot be read. */
  detail: string;
}

export async function virtualSize(path: string, format: ImageFormat, options: { shared?: boolean } = {}): Promise<number> {
  const info = JSON.parse(await run('qemu-img', ['info', '--output=json', ...(options.shared ? ['-U'] : []), '-f', format, path])) as {
    'virtual-size': number;
  };
  return info['virtual-size'];
}

export async function compareImages(
  actual: { path: string; format: ImageFormat },
  expected: { path: string; format: ImageFormat },
  options: { shared?: boolean } = {},
): Promise<Comparison> {
  const shared = options.shared ? ['-U'] : [];
  const [actualSize, expectedSize] = await Promise.all([
    virtualSize(actual.path, actual.format, options),
    virtualSize(expected.path, expected.format, options),
  ]);
  // Without -s, qemu-img accepts a size difference when the extra part is zero;
  // a restored disk of the wrong size is a mismatch all the same. (-s would also
  // compare allocation, which legitimately differs.)
  if (actualSize !== expectedSize) {
    return { identical: false, bytes: 0, detail: `virtual size is ${actualSize}, expected ${expectedSize}` };
  }
  const result = await tryRun('qemu-img', ['compare', ...shared, '-f', actual.format, '-F', expected.format, actual.path, expected.path]);
  const detail = `${result.stdout}${result.stderr}`.trim();
  if (result.code === 0) return { identical: true, bytes: expectedSize, detail };
  return { identical: false, bytes: expectedSize, detail: result.code === 1 ? detail : `qemu-img compare failed (exit ${result.code}): ${detail}` };
}
