// A real guest for tests that need an operating system writing to its own disk: the
// Debian kernel, busybox and qemu-guest-agent that scripts/test-guest/build.sh caches,
// booted directly (no firmware boot loader) on a fresh overlay of the cached root disk.
// Tests fail, never skip, when the artefacts are missing, saying how to build them.
import { access, readFile, realpath, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

import type { ExecutionContext } from 'ava';

import { DomainState, type Connection, type Domain } from '../../src/index.js';
import { IMAGE_DIR, SYSTEM_URI, destroyAndUndefine, sweepStaleTestDomains, uniqueName } from './daemon.js';
import { run } from './process.js';

/** Where scripts/test-guest/build.sh caches the artefacts; `current` is the newest build. */
export const TEST_GUEST_CACHE = process.env.TEST_GUEST_CACHE ?? '/var/cache/libvirt-backup-test-guest';

export interface TestGuestArtefacts {
  /** The build directory, resolved: a rebuild during the test does not move it. */
  dir: string;
  kernel: string;
  initrd: string;
  rootDisk: string;
}

export async function testGuestArtefacts(): Promise<TestGuestArtefacts> {
  const current = join(TEST_GUEST_CACHE, 'current');
  try {
    const dir = await realpath(current);
    const artefacts = { dir, kernel: join(dir, 'vmlinux'), initrd: join(dir, 'initrd.img'), rootDisk: join(dir, 'root.qcow2') };
    for (const file of [artefacts.kernel, artefacts.initrd, artefacts.rootDisk, join(dir, 'manifest')]) await access(file);
    return artefacts;
  } catch (error) {
    throw new Error(
      `the test guest is not built in ${current}: ${(error as Error).message}. ` +
        'Run `bash scripts/setup-host.sh` (or `bash scripts/test-guest/build.sh`) as root to build it.',
      { cause: error },
    );
  }
}

export type GuestVirtType = 'kvm' | 'qemu';

/**
 * The domain type real guests get unless a test asks for one: TEST_GUEST_VIRT_TYPE, else
 * 'qemu'. TCG boots the guest in seconds everywhere; KVM is faster where it is real, but
 * a nested /dev/kvm can pass libvirt's check and still run a guest far slower than TCG.
 */
export function defaultGuestVirtType(): GuestVirtType {
  const requested = process.env.TEST_GUEST_VIRT_TYPE ?? 'qemu';
  if (requested !== 'kvm' && requested !== 'qemu') throw new Error(`TEST_GUEST_VIRT_TYPE: expected 'kvm' or 'qemu', got '${requested}'`);
  return requested;
}

export interface GuestExecResult {
  exitCode: number;
  stdout: string;
  stderr: string;
}

export interface RealGuest {
  name: string;
  domain: Domain;
  virtType: GuestVirtType;
  /** The guest's root disk (vda): a qcow2 overlay of the cached root disk (or `baseDisk`). */
  rootDisk: string;
  /** Milliseconds from starting the domain to the agent's first answer. */
  bootMs: number;
  /** Sends a command to the guest agent and returns its `return` value. */
  agent(command: string, args?: Record<string, unknown>): Promise<unknown>;
  /** Runs a program in the guest through the agent and waits for it to exit. */
  exec(path: string, args?: string[]): Promise<GuestExecResult>;
  /** Runs a shell script in the guest; rejects, with its stderr, unless it exits 0. */
  sh(script: string): Promise<string>;
  /** Starts a program in the guest without waiting for it; resolves to its pid. */
  spawn(path: string, args?: string[]): Promise<number>;
  /** What the guest printed on its serial console. */
  consoleLog(): Promise<string>;
  /** Destroys and undefines the domain and removes its files. Idempotent. */
  cleanup(): Promise<void>;
}

export interface RealGuestOptions {
  virtType?: GuestVirtType;
  /** Appended to the kernel command line (e.g. `test_guest.writer=/var/lib/writer:16:256`). */
  cmdline?: string;
  memoryMiB?: number;
  /** How long the guest may take to answer the agent before the start fails. */
  bootTimeoutMs?: number;
  /** The qcow2 root disk to boot, under an overlay (default the cached one): a restore, say. */
  baseDisk?: string;
}

/**
 * Defines and starts a uniquely named persistent domain running the test guest, waits
 * until its agent answers, and removes everything when the test ends.
 */
export async function startRealGuest(t: ExecutionContext, conn: Connection, label: string, options: RealGuestOptions = {}): Promise<RealGuest> {
  const artefacts = await testGuestArtefacts();
  await sweepStaleTestDomains(conn);
  const name = uniqueName(label);
  const virtType = options.virtType ?? defaultGuestVirtType();
  const rootDisk = `${IMAGE_DIR}/${name}-vda.qcow2`;
  const consolePath = `${IMAGE_DIR}/${name}-console.log`;
  let domain: Domain | undefined;
  const cleanup = async () => {
    if (domain) await destroyAndUndefine(domain).catch(() => undefined);
    domain = undefined;
    await Promise.all([rm(rootDisk, { force: true }), rm(consolePath, { force: true })]);
  };
  t.teardown(cleanup);

  await run('qemu-img', ['create', '-q', '-f', 'qcow2', '-F', 'qcow2', '-b', options.baseDisk ?? artefacts.rootDisk, rootDisk]);
  domain = await conn.defineDomain(guestDomainXml({ name, virtType, artefacts, rootDisk, consolePath, ...options }));
  const agent = (command: string, args?: Record<string, unknown>) => agentCommand(name, command, args);
  const consoleLog = () => readFile(consolePath, 'utf8').catch(() => '');
  const started = performance.now();
  await domain.start();
  await waitForAgent(domain, agent, consoleLog, options.bootTimeoutMs ?? 180_000);
  const bootMs = performance.now() - started;

  const exec = (path: string, args: string[] = []) => guestExec(agent, path, args);
  return {
    name,
    domain,
    virtType,
    rootDisk,
    bootMs,
    agent,
    exec,
    async sh(script) {
      const result = await exec('/bin/sh', ['-c', script]);
      if (result.exitCode !== 0) throw new Error(`guest script exited ${result.exitCode}: ${result.stderr.trim()}\n${script}`);
      return result.stdout;
    },
    async spawn(path, args = []) {
      return ((await agent('guest-exec', { path, arg: args })) as { pid: number }).pid;
    },
    consoleLog,
    cleanup,
  };
}

interface DomainXmlInput extends RealGuestOptions {
  name: string;
  virtType: GuestVirtType;
  artefacts: TestGuestArtefacts;
  rootDisk: string;
  consolePath: string;
}

function guestDomainXml(input: DomainXmlInput): string {
  const cmdline = ['console=ttyS0', 'root=/dev/vda', 'panic=-1', input.cmdline ?? ''].join(' ').trim();
  // Test fixture only: names and paths are generated here, nothing to escape. A
  // panicking or rebooting guest stops, so a failed boot ends the wait at once.
  return (
    `<domain type='${input.virtType}'><name>${input.name}</name>` +
    `<memory unit='MiB'>${input.memoryMiB ?? 256}</memory><vcpu>1</vcpu>` +
    `<os><type arch='x86_64'>hvm</type><kernel>${input.artefacts.kernel}</kernel>` +
    `<initrd>${input.artefacts.initrd}</initrd><cmdline>${cmdline}</cmdline></os>` +
    `<features><acpi/></features><on_reboot>destroy</on_reboot><on_crash>destroy</on_crash><devices>` +
    `<disk type='file' device='disk'><driver name='qemu' type='qcow2'/><source file='${input.rootDisk}'/>` +
    `<target dev='vda' bus='virtio'/></disk>` +
    `<serial type='file'><source path='${input.consolePath}'/><target port='0'/></serial>` +
    `<channel type='unix'><source mode='bind'/><target type='virtio' name='org.qemu.guest_agent.0'/></channel>` +
    `</devices></domain>`
  );
}

async function agentCommand(name: string, command: string, args?: Record<string, unknown>): Promise<unknown> {
  const request = JSON.stringify(args === undefined ? { execute: command } : { execute: command, arguments: args });
  const reply = await run('virsh', ['-c', SYSTEM_URI, 'qemu-agent-command', name, request, '--timeout', '10']);
  return (JSON.parse(reply) as { return: unknown }).return;
}

async function waitForAgent(domain: Domain, agent: RealGuest['agent'], consoleLog: () => Promise<string>, timeoutMs: number): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  let lastError: string;
  for (;;) {
    try {
      await agent('guest-ping');
      return;
    } catch (error) {
      lastError = (error as Error).message;
    }
    // A guest that stopped, or that QEMU paused (a KVM internal error does), never answers.
    const { state } = await domain.getState();
    const stuck = state !== DomainState.RUNNING;
    if (stuck || performance.now() > deadline) {
      const tail = (await consoleLog()).split('\n').slice(-25).join('\n');
      const why = stuck ? `the guest is ${DomainState[state]}` : `no agent answer within ${timeoutMs} ms`;
      throw new Error(`test guest ${domain.name}: ${why} (last: ${lastError.trim()}); console:\n${tail}`);
    }
    await sleep(250);
  }
}

interface ExecStatus {
  exited: boolean;
  exitcode?: number;
  signal?: number;
  'out-data'?: string;
  'err-data'?: string;
}

async function guestExec(agent: RealGuest['agent'], path: string, args: string[]): Promise<GuestExecResult> {
  const { pid } = (await agent('guest-exec', { path, arg: args, 'capture-output': true })) as { pid: number };
  for (;;) {
    const status = (await agent('guest-exec-status', { pid })) as ExecStatus;
    if (status.exited) {
      const decode = (data?: string) => Buffer.from(data ?? '', 'base64').toString('utf8');
      return { exitCode: status.exitcode ?? 128 + (status.signal ?? 0), stdout: decode(status['out-data']), stderr: decode(status['err-data']) };
    }
    await sleep(100);
  }
}
