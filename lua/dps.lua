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
local connect = require "dps.connect"

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
  local problem = check.registration_id(registration_id)
  if problem then error(problem, 2) end
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
  local problem = check.id_scope(id_scope) or check.registration_id(registration_id)
  if problem then error(problem, 2) end
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
  local problem = check.string(hub_host, "hub_host") or check.string(device_id, "device_id")
  if problem then error(problem, 2) end
  local token = core.sas_token(hub_host .. "/devices/" .. device_id, key, expiry, nil, "dps.hub_token")
  return token
end

--- Wipe the C core's copy of the last key it signed with (the signing
-- context keeps it between signatures; closing the last client, hub or
-- batch device that holds a key does this too).
-- @function forget_keys
dps.forget_keys = core.forget_keys

--- Make a client for one device; see `dps.client.new` for the options.
-- Its calls block (each at most its `timeout`).
-- @function new
-- @tparam table opts
-- @treturn dps.client
dps.new = Client.new

local PROVISION_OPTIONS = check.extend(Client.OPTIONS, Client.PROVISION_OPTIONS)

--- Provision one device and close the client: `dps.new(opts):provision(opts)`,
-- blocking until it ends (at most `timeout`).
-- `opts` holds the client's options plus `payload`, `cache` (the assignment
-- cache's path: a matching cache answers with no request) and `force`
-- (register even so); `timeout` is the overall limit (default 60 s) and
-- `request_timeout` the limit of one request (default 30 s).
-- @tparam table opts
-- @tparam[opt] table rt a runtime for specs and event loops (`dps.runtime`)
-- @treturn table the assigned registration state, or nil, message, info
-- @treturn table `{ source = "cache" | "service", clock_offset, … }` (see
-- the client's `provision`)
-- (as `dps.new`'s for local files that cannot be used, else as the client's
-- `provision`)
-- @raise on misuse, as `dps.new` and the client's `provision`
function dps.provision(opts, rt)
  local problem = connect.options_problem(opts, PROVISION_OPTIONS, "dps.provision")
  if problem then error(problem, 2) end
  local client, state, result, info = connect.provision(opts, rt)
  if client then client:close() end
  return state, result, info
end

--- Provision many devices at once, without blocking; see `dps.batch`.
-- @function batch
-- @tparam table opts
-- @treturn dps.batch
dps.batch = Batch.new

--- Provision one device without blocking, for gateway code that drives
-- everything with `step()`. `opts`: the batch's options plus
-- `registration_id`, `symmetric_key` (or `group_key`) and `payload`.
--
--    local p = dps.start_provision{ id_scope = …, registration_id = "leaf-01", symmetric_key = key }
--    repeat local wait_s, fds = p:step() --[[ … arm a timer / watch fds … ]] until p:done()
--    local state, message, info = p:result()
--    p:close()
-- @function start_provision
-- @tparam table opts
-- @treturn table the handle: `step()`, `done()`, `result()`, `stats()`, `close()`
-- @raise on misuse, as `dps.batch` and `batch:add`
dps.start_provision = Batch.start

--- Provision (or read the cache) and return a client of the assigned hub
-- (`dps.hub`), which provisions again, once per call, when the hub refuses
-- the device (401 with a correct clock, 403, 404): see `dps.hub`. Blocks
-- while it provisions (at most `timeout`; no request when the cache answers).
-- @tparam table opts the options of `dps.provision` (including `cache` and
--   `certificate`: with it, the hub client talks to the hub by mutual TLS
--   with the certificate the device earned), plus `hub_endpoint` (where the
--   hub client connects instead of the assigned hub: an emulator, a proxy). `timeout` limits provisioning and
--   each hub call (default 60 s and 30 s); `hub_timeout` (deprecated) sets
--   the hub calls' limit alone.
-- @tparam[opt] table rt a runtime for specs (`dps.runtime`; `transport` is
--   the DPS client's, `hub_transport` the hub's)
-- @treturn dps.hub the hub client, or nil, message, info (as `dps.provision`)
-- @raise on misuse, as `dps.provision`
function dps.connect(opts, rt)
  local problem = connect.options_problem(opts)
  if problem then error(problem, 2) end
  return connect.connect(opts, rt)
end

--- Many devices' hub traffic at once, without blocking: see `dps.hubs`.
-- @function hubs
-- @tparam table opts
-- @treturn dps.hubs
dps.hubs = require("dps.hubs").new

--- A client of the hub for an assignment you already have: see `dps.hub`'s `new`.
-- Makes no request; the client's calls block, each at most its `timeout`.
-- @function hub
-- @tparam table opts `state` (or `hub`, `device_id`), one attestation, …
-- @treturn dps.hub
dps.hub = Hub.new

return dps
