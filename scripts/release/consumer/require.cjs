// A CommonJS user: require() of the ESM package (Node >= 20.19 / 22.12).
const { buildCheckpointXml } = require('libvirt-backup/xml');
const { connect } = require('libvirt-backup');
if (typeof connect !== 'function') throw new Error('connect is not a function');
console.log(`ok require(): ${buildCheckpointXml({ name: 'cjs' }).includes('<name>cjs</name>')}`);
