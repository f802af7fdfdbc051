/** libvirt's encoded version numbers (major * 1e6 + minor * 1e3 + release) as parts. */
export interface VersionParts {
  major: number;
  minor: number;
  release: number;
}

/** Splits a libvirt version number (major * 1,000,000 + minor * 1,000 + release) into its parts. */
export function decodeVersion(encoded: number): VersionParts {
  return {
    major: Math.floor(encoded / 1_000_000),
    minor: Math.floor(encoded / 1_000) % 1_000,
    release: encoded % 1_000,
  };
}

/** A libvirt version number as `major.minor.release`. */
export function formatVersion(encoded: number): string {
  const { major, minor, release } = decodeVersion(encoded);
  return `${major}.${minor}.${release}`;
}
