--- `dps.connect` (internal): provision (or read the cache) with a DPS
-- client, then make a hub client for the assignment whose `reprovision`
-- provisions again through that client (cache ignored, cache updated) when
-- the hub refuses the device.
-- @module dps.connect
local check = require "dps.check"
local Client = require "dps.client"
local Hub = require "dps.hub"

local pcall = pcall -- the level counts below need the C pcall

local connect = {}

--- Provision (or read the cache) and make a hub client for the assignment,
-- which provisions again when the hub refuses the device (`dps.connect`).
-- @tparam table opts the options of `dps.provision` (including `cache`,
--   `force`, `payload`; `endpoint` is DPS's), plus `hub_endpoint` (the
--   hub client's `endpoint`) and `hub_timeout` (its `timeout`)
-- @tparam number level as check.fail counts it
-- @tparam[opt] table runtime as in `dps.hub.new`
function connect.connect(opts, level, runtime)
  local schema = setmetatable({ payload = "table", cache = "string", force = "boolean", hub_endpoint = "string",
    hub_timeout = "number" }, { __index = Client.OPTIONS })
  check.options(opts, schema, "dps.connect", level)
  local client_opts = {}
  for k, v in pairs(opts) do
    if Client.OPTIONS[k] then client_opts[k] = v end
  end
  local client, message, info = Client._new(client_opts, level + 1)
  if not client then
    return nil, message, info
  end
  local provision_opts = { payload = opts.payload, timeout = opts.timeout, cache = opts.cache, force = opts.force }
  local results = { pcall(Client._provision, client, provision_opts, level + 2) }
  if not results[1] then
    client:close()
    error(results[2], 0)
  end
  local state, result = results[2], results[3]
  if not state then
    client:close()
    return nil, result, results[4]
  end
  local hub_opts = {
    state = state, registration_id = client.registration_id,
    symmetric_key = opts.symmetric_key, group_key = opts.group_key,
    cert_file = opts.cert_file, cert = opts.cert, key_file = opts.key_file, key = opts.key,
    key_password = opts.key_password,
    endpoint = opts.hub_endpoint, ca_file = opts.ca_file, ca_path = opts.ca_path, proxy = opts.proxy,
    user_agent = opts.user_agent, connect_timeout = opts.connect_timeout, token_ttl = opts.token_ttl,
    max_body = opts.max_body, timeout = opts.hub_timeout, clock_offset = result.clock_offset,
  }
  local ok, hub = pcall(Hub._new, hub_opts, level + 1, runtime)
  if not ok then
    client:close()
    error(hub, 0)
  end
  hub.provisioned = result
  hub.dps = client
  hub.reprovision = function()
    provision_opts.force = true
    return client:provision(provision_opts)
  end
  return hub
end

return connect
