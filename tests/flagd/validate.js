// Validates a flagd document (stdin) against the flagd JSON schema that npm
// @openfeature/flagd-core ships (compiled into it; applied by its strict parse). Prints
// "valid", or the schema errors and exits 1. tests/flagd_conformance.rs runs it with the
// packages `tests/cluster/build-tools.sh flagd-tools` installs (NODE_PATH).
const { MemoryStorage } = require('@openfeature/flagd-core');

const silent = { error() {}, warn() {}, info() {}, debug() {} };
const text = require('fs').readFileSync(0, 'utf8');
try {
  new MemoryStorage(silent).setConfigurations(text, true);
  console.log('valid');
} catch (e) {
  console.log(`invalid: ${e.message}`);
  process.exit(1);
}
