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
local Batch = require "dps.batch"
local Hub = require "dps.hub"
local connect = require("dps.connect").connect

local pcall = pcall -- the level count in dps.provision needs the C pcall

local dps = {
  _VERSION = core._VERSION,
  _NAME = "dps",
}

-- The token functions hand their byte-level arguments (keys, expiry,
-- resource and key names) to the C core, which checks them once and names
-- the public function passed as its last argument in its messages, blaming
-- that function's caller. So each calls the core directly, never through a
-- helper, and not as a tail call (which would leave no caller to blame on
-- some Lua versions). Lua checks only the DPS rules: IDs and ID scopes.

--- The device key of an enrollment-group member.
-- @tparam string group_key the group's key, base64
-- @tparam string registration_id the device's registration ID (used byte for byte)
-- @treturn string the derived device key, base64
-- @raise on a bad argument
function dps.derive_key(group_key, registration_id)
  check.registration_id(registration_id)
  local key = core.derive_key(group_key, registration_id, "dps.derive_key")
  return key
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
  local token = core.sas_token(resource_uri, key, expiry, key_name, "dps.sas_token")
  return token
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
  local token = core.sas_token(id_scope .. "/registrations/" .. registration_id, key, expiry, "registration",
    "dps.registration_token")
  return token
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
  local token = core.sas_token(hub_host .. "/devices/" .. device_id, key, expiry, nil, "dps.hub_token")
  return token
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
  local client, message, info = Client._new(client_opts, 3)
  if not client then
    return nil, message, info -- a local file that cannot be used
  end
  -- misuse raises at this function's caller (pcall is one more level); the
  -- client is closed either way
  local results = { pcall(Client._provision, client, provision_opts, 4) }
  client:close()
  if not results[1] then
    error(results[2], 0)
  end
  return results[2], results[3], results[4]
end

--- Provision many devices at once, without blocking; see `dps.batch`.
-- @function batch
-- @tparam table opts
-- @treturn dps.batch
dps.batch = Batch.new

--- Provision one device without blocking: a batch of one, for gateway code
-- that drives everything with `step()`. `opts`: the batch's options plus
-- `registration_id`, `symmetric_key` (or `group_key`) and `payload`.
--
--    local p = dps.start_provision{ id_scope = …, registration_id = "leaf-01", symmetric_key = key }
--    repeat local wait_s, fds = p:step() --[[ … arm a timer / watch fds … ]] until p:done()
--    local state, message, info = p:result("leaf-01")
-- @tparam table opts
-- @treturn dps.batch
-- @raise on misuse, as `dps.batch` and `batch:add`
function dps.start_provision(opts)
  check.options(opts, setmetatable({ registration_id = "string", symmetric_key = "string", payload = "table" },
    { __index = Batch.OPTIONS }), "dps.start_provision")
  local batch_opts = { concurrency = 1 }
  for k, v in pairs(opts) do
    if Batch.OPTIONS[k] then batch_opts[k] = v end
  end
  local b = Batch._new(batch_opts, 3)
  b:add(opts.registration_id, { payload = opts.payload, symmetric_key = opts.symmetric_key })
  return b
end

--- Provision (or read the cache) and return a client of the assigned hub
-- (`dps.hub`), which provisions again, once per call, when the hub refuses
-- the device (401 with a correct clock, 403, 404): see `dps.hub`.
-- @tparam table opts the options of `dps.provision` (including `cache`),
--   plus `hub_endpoint` (where the hub client connects instead of the
--   assigned hub: an emulator, a proxy) and `hub_timeout` (seconds per hub
--   call, default 30)
-- @treturn dps.hub the hub client, or nil, message, info (as `dps.provision`)
-- @raise on misuse, as `dps.provision`
function dps.connect(opts)
  local hub, message, info = connect(opts, 3) -- not a tail call: blames this function's caller
  return hub, message, info
end

--- A client of the hub for an assignment you already have: see `dps.hub`'s `new`.
-- @tparam table opts `state` (or `hub`, `device_id`), one attestation, …
-- @treturn dps.hub
function dps.hub(opts)
  local hub = Hub._new(opts, 3)
  return hub
end

return dps
