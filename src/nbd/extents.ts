/** A run of bytes sharing the same status flags in one meta context. */
export interface Extent {
  offset: number;
  length: number;
  flags: number;
}

/** A range of an export, in bytes. */
export interface ByteRange {
  offset: number;
  length: number;
}

/**
 * Joins adjacent runs with equal flags: servers split their answers at arbitrary
 * points (request boundaries, internal cluster limits) that mean nothing to callers.
 */
export class ExtentMerger {
  private current: Extent | undefined;

  /** Returns the run completed by adding this one, if any. */
  add(extent: Extent): Extent | undefined {
    const current = this.current;
    if (current && current.flags === extent.flags && current.offset + current.length === extent.offset) {
      current.length += extent.length;
      return undefined;
    }
    this.current = { ...extent };
    return current;
  }

  flush(): Extent | undefined {
    const current = this.current;
    this.current = undefined;
    return current;
  }
}

/**
 * Decodes (length, flags) pairs starting at `offset`, clipped to `end`, at most `limit`
 * of them: a caller that needs more asks again from where they stop.
 */
export function decodeDescriptors(descriptors: Buffer, offset: number, end: number, limit = Number.POSITIVE_INFINITY): Extent[] {
  const extents: Extent[] = [];
  let at = offset;
  for (let i = 0; i + 8 <= descriptors.length && at < end && extents.length < limit; i += 8) {
    const length = Math.min(descriptors.readUInt32BE(i), end - at);
    if (length === 0) break;
    extents.push({ offset: at, length, flags: descriptors.readUInt32BE(i + 4) });
    at += length;
  }
  return extents;
}
