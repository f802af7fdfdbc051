// Ends itself with exitProcess() as the test asks: argv = code, graceMs, then flags:
// 'load' loads the addon first (libvirt's threads start), 'hang' makes the exit hang
// the way a stuck library destructor would (an 'exit' listener that never returns),
// 'connect' also opens and closes a connection to the test driver.
import { connect, exitProcess, getLibraryVersion } from '../../src/index.js';

const [codeText, graceText, ...flags] = process.argv.slice(2);
if (flags.includes('load')) getLibraryVersion();
if (flags.includes('connect')) {
  const conn = await connect('test:///default');
  await conn.listAllDomains();
  await conn.close();
}
if (flags.includes('hang')) {
  process.on('exit', () => {
    Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0);
  });
}
exitProcess(Number(codeText), graceText === 'default' ? {} : { graceMs: Number(graceText) });
