// Registration tokens per second with the official Node SDK
// (azure-iot-common's SharedAccessSignature), for bench/run.sh's ratio lines.
// Prints "name ops_per_second" like bench/tokens.lua. Usage:
//   node bench/tokens.js MODULE_DIR [SECONDS=1]
// MODULE_DIR holds node_modules/azure-iot-common (bench/run.sh installs it
// under build/; it is never a runtime or test dependency).
'use strict';
const path = require('path');
const dir = process.argv[2];
const seconds = Number(process.argv[3] || 1);
const { SharedAccessSignature } = require(path.resolve(dir, 'node_modules', 'azure-iot-common'));

const KEY = '18RQk/hOPJR9EbsJlk2j8WA6vWaj/yi+oaYg7zmxfQNdOyMSu+SJ8O7TSlZhDJCYmn4rzEiVKIzNiVAWjLxrGA==';
const scope = '0ne00111111';
const id = 'my-symkey-device';
const expiry = 1700000000;

function token() {
  return SharedAccessSignature.create(encodeURIComponent(scope + '/registrations/' + id), 'registration', KEY,
    expiry).toString();
}

// the same string as dps.registration_token, or the comparison means nothing
const t = token();
if (!/^SharedAccessSignature sr=0ne00111111%2Fregistrations%2Fmy-symkey-device&sig=[^&]+&(skn=registration&se=1700000000|se=1700000000&skn=registration)$/.test(t)) {
  console.error('unexpected token shape: ' + t.replace(/sig=[^&]+/, 'sig=…'));
  process.exit(1);
}
for (let i = 0; i < 20000; i++) token(); // warm up the JIT

let n = 0;
const t0 = process.hrtime.bigint();
let elapsed;
do {
  for (let i = 0; i < 1000; i++) token();
  n += 1000;
  elapsed = Number(process.hrtime.bigint() - t0) / 1e9;
} while (elapsed < seconds);
console.log('node_registration_token ' + Math.round(n / elapsed));
