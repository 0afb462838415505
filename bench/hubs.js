// The gateway bench of bench/hubs.lua with the official Node SDK's HTTP
// transports: LEAVES leaves of a group provisioned (azure-iot-provisioning-
// device with azure-iot-provisioning-device-http and a
// SymmetricKeySecurityClient), then MESSAGES messages each sent
// (azure-iot-device's Client with azure-iot-device-http), CONCURRENCY
// leaves at a time, each leaf's messages in order: the shape of the dps.hubs
// run. Prints one JSON line: the wall seconds of each phase and the failures.
// Usage (bench/hubs.lua runs it against an emulator of its own):
//   node bench/hubs.js MODULE_DIR PORT CA_FILE ID_SCOPE GROUP_KEY LEAVES MESSAGES CONCURRENCY
// MODULE_DIR holds node_modules with the SDK (bench/run.sh installs it under
// build/; it is never a runtime or test dependency).
//
// The SDK talks to the hosts the service names (the DPS host it is given,
// the assignedHub of each leaf); the emulator serves both on localhost:PORT.
// So, as the Lua bench gives `endpoint`, every HTTPS request of this process
// goes to localhost:PORT (checked against the emulator's CA and the name
// localhost), on one keep-alive agent of CONCURRENCY sockets; headers,
// paths and tokens stay the SDK's own.
'use strict';
const crypto = require('crypto');
const fs = require('fs');
const https = require('https');
const path = require('path');

const [dir, port, caFile, idScope, groupKey] = process.argv.slice(2, 7);
const [leaves, messages, concurrency] = process.argv.slice(7, 10).map(Number);
const sdk = (name) => require(path.resolve(dir, 'node_modules', name));
const { ProvisioningDeviceClient } = sdk('azure-iot-provisioning-device');
const { Http: ProvisioningHttp } = sdk('azure-iot-provisioning-device-http');
const { SymmetricKeySecurityClient } = sdk('azure-iot-security-symmetric-key');
const { Client, Message } = sdk('azure-iot-device');
const { Http: HubHttp } = sdk('azure-iot-device-http');

const agent = new https.Agent({ keepAlive: true, maxSockets: concurrency, maxTotalSockets: concurrency,
  ca: fs.readFileSync(caFile) });
const request = https.request;
https.request = (options, callback) => request(Object.assign({}, options,
  { host: 'localhost', hostname: 'localhost', port: Number(port), servername: 'localhost', agent }), callback);

// A leaf's key, derived from the group's as DPS does.
function deviceKey(id) {
  return crypto.createHmac('sha256', Buffer.from(groupKey, 'base64')).update(id).digest('base64');
}

// Run job(i) for i = 1..n, `concurrency` at a time.
async function pool(n, job) {
  let next = 1;
  const worker = async () => {
    while (next <= n) await job(next++);
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, n) }, worker));
}

const id = (i) => 'node-' + String(i).padStart(5, '0');

async function main() {
  const states = [];
  let failed = 0;
  let t0 = process.hrtime.bigint();
  await pool(leaves, async (i) => {
    const security = new SymmetricKeySecurityClient(id(i), deviceKey(id(i)));
    const client = ProvisioningDeviceClient.create('localhost', idScope, new ProvisioningHttp(), security);
    try {
      states[i] = await client.register();
    } catch (e) {
      failed++;
    }
  });
  const provision = Number(process.hrtime.bigint() - t0) / 1e9;

  let sent = 0;
  t0 = process.hrtime.bigint();
  await pool(leaves, async (i) => {
    const st = states[i];
    if (!st) return;
    const client = Client.fromConnectionString('HostName=' + st.assignedHub + ';DeviceId=' + st.deviceId
      + ';SharedAccessKey=' + deviceKey(id(i)), HubHttp);
    for (let m = 1; m <= messages; m++) {
      try {
        await client.sendEvent(new Message(JSON.stringify({ leaf: i, n: m })));
        sent++;
      } catch (e) {
        failed++;
      }
    }
    await client.close();
  });
  const send = Number(process.hrtime.bigint() - t0) / 1e9;
  agent.destroy();
  console.log(JSON.stringify({ provision, send, provisioned: states.filter(Boolean).length, sent, failed }));
}

main().catch((e) => {
  console.error(e && e.stack || e);
  process.exit(1);
});
