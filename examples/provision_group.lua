-- Provision a member of a symmetric-key enrollment group: the library derives
-- the device key from the group key (in C; the group key never leaves this
-- process). A gateway can do this for each of its leaf devices.
--
--   DPS_ID_SCOPE=0ne… DPS_REGISTRATION_ID=leaf-07 DPS_GROUP_KEY=… lua5.4 examples/provision_group.lua
--
-- Optional: DPS_ENDPOINT, DPS_CA_FILE.
local dps = require "dps"

local client = dps.new{
  id_scope = assert(os.getenv("DPS_ID_SCOPE"), "set DPS_ID_SCOPE"),
  registration_id = assert(os.getenv("DPS_REGISTRATION_ID"), "set DPS_REGISTRATION_ID"),
  group_key = assert(os.getenv("DPS_GROUP_KEY"), "set DPS_GROUP_KEY"),
  endpoint = os.getenv("DPS_ENDPOINT"),
  ca_file = os.getenv("DPS_CA_FILE"),
}
local state, err, info = client:provision{ timeout = 60 }
local stats = client:stats()
client:close()
if not state then
  io.stderr:write(string.format("provisioning failed: %s [kind=%s]\n", err, info.kind))
  os.exit(1)
end
print(string.format("%s -> hub %s, device %s (%s; %d requests on %d TLS connection%s)", state.registrationId,
  state.assignedHub, state.deviceId, state.substatus or state.status, stats.requests, stats.connects,
  stats.connects == 1 and "" or "s"))
