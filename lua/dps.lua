--- Azure IoT Hub Device Provisioning Service (DPS) over HTTPS.
--
-- Keys and SAS tokens, and (through `dps.new` and `dps.provision`) the
-- register / poll / status calls of the device API.
--
--    local dps = require "dps"
--    local key = dps.derive_key(group_key, "dev-01")
--    local token = dps.registration_token("0ne00000001", "dev-01", key, os.time() + 3600)
--
-- Misuse (wrong types, bad IDs, unknown options) raises. Operational failures
-- return `nil, message, info`; see `dps.client`.
-- @module dps
local core = require "dps.core"
local check = require "dps.check"
local Client = require "dps.client"

local dps = {
  _VERSION = core._VERSION,
  _NAME = "dps",
}

-- Calls a C function, turning its error into one raised at the caller of the
-- public function, prefixed with that function's name. Never call it as a
-- tail call (`return call_core(…)`), which drops the frame level 3 blames.
local function call_core(name, f, ...)
  local ok, result = pcall(f, ...)
  if not ok then
    error("dps." .. name .. ": " .. tostring(result):gsub("^bad argument #%d+ to '[^']*' %((.*)%)$", "%1"), 3)
  end
  return result
end

--- The device key of an enrollment-group member.
-- @tparam string group_key the group's key, base64
-- @tparam string registration_id the device's registration ID (used byte for byte)
-- @treturn string the derived device key, base64
-- @raise on a bad argument
function dps.derive_key(group_key, registration_id)
  check.key(group_key, "group_key")
  check.registration_id(registration_id)
  local result = call_core("derive_key", core.derive_key, group_key, registration_id)
  return result
end

--- A SAS token for any resource URI.
-- `sr` is the percent-encoded URI (RFC 3986, upper-case hex), the signed
-- string is `sr .. "\n" .. expiry`, and the fields come in the order
-- `sr, sig, se[, skn]`.
-- @tparam string resource_uri the resource, not encoded
-- @tparam string key base64 key
-- @tparam number expiry whole seconds since the epoch (an integral float is fine)
-- @tparam[opt] string key_name the `skn` field
-- @treturn string `SharedAccessSignature sr=…&sig=…&se=…[&skn=…]`
-- @raise on a bad argument
function dps.sas_token(resource_uri, key, expiry, key_name)
  check.nonempty_string(resource_uri, "resource_uri")
  check.key(key, "key")
  check.expiry(expiry)
  if key_name ~= nil then
    check.nonempty_string(key_name, "key_name")
  end
  local result = call_core("sas_token", core.sas_token, resource_uri, key, expiry, key_name)
  return result
end

--- The DPS token of a device: resource `{id_scope}/registrations/{registration_id}`,
-- `skn=registration`.
-- @tparam string id_scope
-- @tparam string registration_id
-- @tparam string key the device key (individual, or derived from a group key), base64
-- @tparam number expiry whole seconds since the epoch
-- @treturn string the token
-- @raise on a bad argument
function dps.registration_token(id_scope, registration_id, key, expiry)
  check.id_scope(id_scope)
  check.registration_id(registration_id)
  check.key(key, "key")
  check.expiry(expiry)
  local result = call_core("registration_token", core.sas_token,
    id_scope .. "/registrations/" .. registration_id, key, expiry, "registration")
  return result
end

--- The IoT Hub token of a device: resource `{hub_host}/devices/{device_id}`, no `skn`.
-- @tparam string hub_host the assigned hub's host name
-- @tparam string device_id the device ID at the hub (case-sensitive)
-- @tparam string key the device key, base64
-- @tparam number expiry whole seconds since the epoch
-- @treturn string the token
-- @raise on a bad argument
function dps.hub_token(hub_host, device_id, key, expiry)
  check.nonempty_string(hub_host, "hub_host")
  check.nonempty_string(device_id, "device_id")
  check.key(key, "key")
  check.expiry(expiry)
  local result = call_core("hub_token", core.sas_token, hub_host .. "/devices/" .. device_id, key, expiry)
  return result
end

-- Raises a caught misuse error again at the caller of the public function
-- that called this one, without the position of the place it came from.
local function reraise(err)
  error((tostring(err):gsub("^[^\n]-:%d+: ", "")), 3)
end

--- Make a client for one device; see `dps.client.new` for the options.
-- @function new
-- @tparam table opts
-- @treturn dps.client
dps.new = Client.new

--- Provision one device and close the client: `dps.new(opts):provision(opts)`.
-- `opts` holds the client's options plus `payload`, `cache` (the assignment
-- cache's path: a matching cache answers with no request) and `force`
-- (register even so); `timeout` is both the per-request and the overall
-- limit (default 60 s overall).
-- @tparam table opts
-- @treturn table the assigned registration state, or nil, message, info
-- @treturn table `{ source = "cache" | "service", clock_offset, … }` (see
-- the client's `provision`)
-- (as `dps.new`'s for local files that cannot be used, else as the client's
-- `provision`)
-- @raise on misuse, as `dps.new` and the client's `provision`
function dps.provision(opts)
  check.options(opts, setmetatable({ payload = "table", cache = "string", force = "boolean" },
    { __index = Client.OPTIONS }), "dps.provision")
  local client_opts, provision_opts = {}, { payload = opts.payload, timeout = opts.timeout, cache = opts.cache,
    force = opts.force }
  for k, v in pairs(opts) do
    if k ~= "payload" and k ~= "cache" and k ~= "force" then client_opts[k] = v end
  end
  local ok, client, message, info = pcall(Client.new, client_opts)
  if not ok then
    reraise(client)
  elseif not client then
    return nil, message, info -- a local file that cannot be used
  end
  local results = { pcall(client.provision, client, provision_opts) }
  client:close()
  if not results[1] then
    reraise(results[2])
  end
  return results[2], results[3], results[4]
end

return dps
