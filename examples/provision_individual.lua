-- Provision a device of an individual enrollment with its symmetric key.
--
--   DPS_ID_SCOPE=0ne… DPS_REGISTRATION_ID=dev-01 DPS_SYMMETRIC_KEY=… lua5.4 examples/provision_individual.lua
--
-- Optional: DPS_ENDPOINT (default: the global DPS endpoint), DPS_CA_FILE.
local dps = require "dps"

local state, err, info = dps.provision{
  id_scope = assert(os.getenv("DPS_ID_SCOPE"), "set DPS_ID_SCOPE"),
  registration_id = assert(os.getenv("DPS_REGISTRATION_ID"), "set DPS_REGISTRATION_ID"),
  symmetric_key = assert(os.getenv("DPS_SYMMETRIC_KEY"), "set DPS_SYMMETRIC_KEY"),
  endpoint = os.getenv("DPS_ENDPOINT"),
  ca_file = os.getenv("DPS_CA_FILE"),
  timeout = 60,
}
if not state then
  io.stderr:write(string.format("provisioning failed: %s [kind=%s]\n", err, info.kind))
  os.exit(1)
end
print(string.format("%s -> hub %s, device %s (%s)", state.registrationId, state.assignedHub, state.deviceId,
  state.substatus or state.status))
