import type { Domain } from './domain.js';
import type { NativeCheckpoint } from './native.js';
import { parseCheckpointXml, type CheckpointSpec } from '../xml/index.js';

/** A libvirt checkpoint: a point in time that incremental backups start from. */
export class Checkpoint {
  readonly domain: Domain;
  readonly #native: NativeCheckpoint;

  /** @internal Checkpoints come from a Domain. */
  constructor(domain: Domain, native: NativeCheckpoint) {
    this.domain = domain;
    this.#native = native;
  }

  /** The checkpoint's name (known locally). */
  get name(): string {
    return this.#native.getName();
  }

  /** The checkpoint XML; `CheckpointXMLFlags.SIZE` adds each bitmap's dirty size (running domain only). */
  async getXMLDesc(flags = 0): Promise<string> {
    return this.#native.getXMLDesc(flags);
  }

  /** The checkpoint XML parsed into a typed spec (see `libvirt-backup/xml`). */
  async getSpec(flags = 0): Promise<CheckpointSpec> {
    return parseCheckpointXml(await this.#native.getXMLDesc(flags));
  }

  /** The parent checkpoint, or `null` for a root. */
  async getParent(): Promise<Checkpoint | null> {
    const parent = await this.#native.getParent();
    return parent === null ? null : new Checkpoint(this.domain, parent);
  }

  /** Children (`CheckpointListFlags.DESCENDANTS`, `TOPOLOGICAL`, `LEAVES`, `NO_LEAVES`). */
  async listAllChildren(flags = 0): Promise<Checkpoint[]> {
    const children = await this.#native.listAllChildren(flags);
    return children.map((child) => new Checkpoint(this.domain, child));
  }

  /** Deletes it (`CheckpointDeleteFlags.CHILDREN`, `METADATA_ONLY`, `CHILDREN_ONLY`). */
  async delete(flags = 0): Promise<void> {
    return this.#native.delete(flags);
  }
}
