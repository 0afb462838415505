-- IoT Central / IoT Plug and Play: provision a device that announces its
-- model ID. IoT Central gives an application-wide enrollment group key
-- (SAS-IoT-Devices); each device gets its own key derived from it.
--
--   DPS_ID_SCOPE=0ne… DPS_REGISTRATION_ID=thermostat-01 DPS_GROUP_KEY=… lua5.4 examples/iot_central.lua
--
-- Optional: DPS_MODEL_ID (default dtmi:com:example:Thermostat;1),
-- DPS_GATEWAY_ID (attach the device to that IoT Central gateway device),
-- DPS_ENDPOINT, DPS_CA_FILE.
local dps = require "dps"

local registration_id = assert(os.getenv("DPS_REGISTRATION_ID"), "set DPS_REGISTRATION_ID")

-- The derived key is what a device should store. Derive it at the factory or
-- on a gateway; keep the group key itself off the devices.
local device_key = dps.derive_key(assert(os.getenv("DPS_GROUP_KEY"), "set DPS_GROUP_KEY"), registration_id)

-- IoT Central reads the model ID from the registration payload, and the
-- gateway (if any) from iotcGateway.iotcGatewayId.
local payload = { modelId = os.getenv("DPS_MODEL_ID") or "dtmi:com:example:Thermostat;1" }
local gateway_id = os.getenv("DPS_GATEWAY_ID")
if gateway_id and gateway_id ~= "" then
  payload.iotcGateway = { iotcGatewayId = gateway_id }
end

local state, err, info = dps.provision{
  id_scope = assert(os.getenv("DPS_ID_SCOPE"), "set DPS_ID_SCOPE"),
  registration_id = registration_id,
  symmetric_key = device_key,
  payload = payload,
  endpoint = os.getenv("DPS_ENDPOINT"),
  ca_file = os.getenv("DPS_CA_FILE"),
  timeout = 60,
}
if not state then
  io.stderr:write(string.format("provisioning failed: %s [kind=%s]\n", err, info.kind))
  os.exit(1)
end
print(string.format("%s -> hub %s, device %s, model %s%s", state.registrationId, state.assignedHub,
  state.deviceId, payload.modelId, gateway_id and gateway_id ~= "" and (", gateway " .. gateway_id) or ""))
