// Errors from the pull copy's thread keep what the run tells failures apart by: their
// class, `code` and the file-system fields, their message and their cause.
import { MessageChannel, receiveMessageOnPort } from 'node:worker_threads';
import { open } from 'node:fs/promises';

import test from 'ava';

import { receivedError, sendError } from '../../src/backup/engine/copy-thread-errors.js';
import { BackupError } from '../../src/backup/engine/engine-types.js';
import { exportReadError } from '../../src/backup/engine/export-connection.js';
import { NbdConnectionError, NbdError, NbdOptionError, NbdProtocolError, NbdTimeoutError } from '../../src/nbd/index.js';

/** `error` as the other thread gets it: described, structured-cloned through a real port, rebuilt. */
function acrossThreads(error: unknown): Error {
  const { port1, port2 } = new MessageChannel();
  port1.postMessage(sendError(error));
  const received = receiveMessageOnPort(port2)!.message as Parameters<typeof receivedError>[0];
  port1.close();
  return receivedError(received);
}

test('NBD errors keep their class, code and fields, and still read as a failed transfer', (t) => {
  const cases: Error[] = [
    new NbdError(5, 'NBD_CMD_READ', 'disk gone', 65536),
    new NbdOptionError('NBD_OPT_GO', 'NBD_REP_ERR_UNKNOWN', 'no such export'),
    new NbdProtocolError('a reply for an unknown handle'),
    new NbdTimeoutError('the server was silent for 30 s'),
    new NbdConnectionError('the server closed the connection'),
  ];
  for (const original of cases) {
    const copy = acrossThreads(original);
    t.is(copy.constructor, original.constructor, original.name);
    t.is(copy.message, original.message);
    t.is((copy as { code?: string }).code, (original as { code?: string }).code);
    t.is(copy.stack, original.stack);
    const named = exportReadError('vda', copy);
    t.true(named instanceof BackupError && named.code === 'JOB_FAILED', original.name);
  }
  const read = acrossThreads(new NbdError(28, 'NBD_CMD_READ', '', 4096)) as NbdError;
  t.like(read, { code: 'ENOSPC', errno: 28, command: 'NBD_CMD_READ', offset: 4096 });
});

test('a BackupError keeps its code; a file-system error its code, errno, syscall and path', async (t) => {
  const backup = acrossThreads(new BackupError('NO_SPACE', 'the destination is full'));
  t.true(backup instanceof BackupError);
  t.like(backup, { code: 'NO_SPACE', message: 'the destination is full', name: 'BackupError' });

  const fsError = (await open('/nonexistent-dir/file', 'r').then(
    () => undefined,
    (error: unknown) => error,
  )) as NodeJS.ErrnoException;
  const copy = acrossThreads(fsError) as NodeJS.ErrnoException;
  t.like(copy, { code: 'ENOENT', errno: fsError.errno, syscall: 'open', path: '/nonexistent-dir/file', message: fsError.message, name: 'Error' });
  t.true(copy instanceof Error);
});

test('causes cross too, and what is not an error arrives as one that says what it was', (t) => {
  const inner = new NbdConnectionError('reset by peer');
  const outer = new BackupError('JOB_FAILED', 'reading vda failed', { cause: inner });
  const copy = acrossThreads(outer);
  t.true(copy.cause instanceof NbdConnectionError);
  t.is((copy.cause as Error).message, 'reset by peer');

  const thrown = acrossThreads('a string thrown');
  t.true(thrown instanceof Error);
  t.is(thrown.message, 'a string thrown');
});
