--- `dps.connect` (internal): provision (or read the cache) with a DPS
-- client, then make a hub client for the assignment, linked to that client
-- so that it provisions again (cache ignored, cache updated) when the hub
-- refuses the device.
-- @module dps.connect
local check = require "dps.check"
local Client = require "dps.client"
local Hub = require "dps.hub"
local request = require "dps.request"
local retry = require "dps.retry"
local cache = require "dps.cache"

local connect = {}

--- Option names and types of `dps.connect`: `dps.new`'s and
-- `client:provision`'s, plus `hub_endpoint` and `hub_timeout` (deprecated:
-- `timeout` is the limit of every call).
connect.OPTIONS = check.extend(Client.OPTIONS, { payload = "table", cache = "string", force = "boolean",
  certificate = "table", hub_endpoint = "string", hub_timeout = "number" })

local PROVISION = { payload = true, cache = true, force = true, timeout = true, certificate = true }

-- The options of dps.new and of client:provision in `opts`.
local function split(opts)
  local client_opts, provision_opts = {}, {}
  for k, v in pairs(opts) do
    if Client.OPTIONS[k] then client_opts[k] = v end
    if PROVISION[k] then provision_opts[k] = v end
  end
  return client_opts, provision_opts
end

--- The misuse in `dps.connect`'s (or `dps.provision`'s, with `schema` and
-- `who`) options, or nil.
function connect.options_problem(opts, schema, who)
  local problem = check.options(opts, schema or connect.OPTIONS, who or "dps.connect")
  if problem then return problem end
  local client_opts, provision_opts = split(opts)
  problem = Client.options_problem(client_opts, who or "dps.connect") or Client.provision_problem(provision_opts)
  if problem then return problem end
  if opts.hub_endpoint ~= nil then
    local _, why = request.endpoint(opts.hub_endpoint, "hub_endpoint")
    problem = why and ((who or "dps.connect") .. ": " .. why)
  end
  return problem or check.seconds(opts.hub_timeout, "hub_timeout", true)
end

--- Provision with checked options (`options_problem`): the DPS client (to
-- close) and what `client:provision` returns.
function connect.provision(opts, rt)
  local client_opts, provision_opts = split(opts)
  local client, message, info = Client.create(client_opts, rt)
  if not client then
    return nil, nil, message, info -- a local file that cannot be used
  end
  return client, client:run_provision(provision_opts)
end

--- Provision (or read the cache) and make the linked hub client, from
-- checked options (`options_problem`). `rt` (optional) is the runtime of
-- both clients (`dps.runtime`): its `transport` is the DPS client's, its
-- `hub_transport` the hub client's (each opens its own where none is given).
-- @return the hub client, or nil, message, info
function connect.connect(opts, rt)
  local client, state, result, info = connect.provision(opts, rt)
  if not state then
    if client then client:close() end
    return nil, result, info
  end
  local _, provision_opts = split(opts)
  local hub_opts = {
    state = state, registration_id = client.registration_id,
    symmetric_key = opts.symmetric_key, group_key = opts.group_key,
    cert_file = opts.cert_file, cert = opts.cert, key_file = opts.key_file, key = opts.key,
    key_password = opts.key_password,
    endpoint = opts.hub_endpoint, ca_file = opts.ca_file, ca_path = opts.ca_path, proxy = opts.proxy,
    user_agent = opts.user_agent, connect_timeout = opts.connect_timeout, request_timeout = opts.request_timeout,
    token_ttl = opts.token_ttl, max_body = opts.max_body,
    timeout = opts.hub_timeout or opts.timeout, clock_offset = result.clock_offset,
  }
  if result.certificate then -- the hub by mutual TLS with the certificate the device earned
    for _, name in ipairs({ "symmetric_key", "group_key", "cert", "key", "key_password" }) do hub_opts[name] = nil end
    hub_opts.cert_file, hub_opts.key_file = result.certificate.cert_file, result.certificate.key_file
  end
  return Hub.create(hub_opts, rt and { now = rt.now, monotime = rt.monotime, sleep = rt.sleep, jitter = rt.jitter,
    transport = rt.hub_transport }, connect.link{
    client = client, provisioned = result, hold = result.hold,
    provision = function(timeout)
      local again = {}
      for k, v in pairs(provision_opts) do again[k] = v end
      again.force = true
      again.timeout = math.min(timeout, again.timeout or timeout)
      return client:run_provision(again)
    end,
    keep = opts.cache and function(hold, now) cache.store_hold(opts.cache, client:identity(), hold, now) end,
  })
end

--- What ties a hub client to the DPS client that can provision it again
-- (`Hub.create`'s `link`): the provisioning, and the hold on doing it again
-- (`dps.retry.refusal_hold`).
-- @tparam table opts `client` (the DPS client: `stats`, `close`),
--   `provisioned` (how it was provisioned), `hold` (from the cache, or nil),
--   `provision(timeout)` → state, result or nil, message, info, and
--   optionally `keep(hold, now)` (keeps the hold: in the cache)
-- @treturn table the link: `client`, `provisioned`, `hold`, `provision`,
--   `may_reprovision(now)`, `after_call(now, ok, reprovisioned, info)`
function connect.link(opts)
  local link = { client = opts.client, provisioned = opts.provisioned, hold = opts.hold, provision = opts.provision }
  local keep = opts.keep or function() end
  function link.may_reprovision(now)
    return link.hold == nil or now >= link.hold.not_before
  end
  -- A call is over: a success ends a refusal episode; a failure after
  -- provisioning again holds the next registration off; a refusal during
  -- the hold says until when (`info`: the failure's).
  function link.after_call(now, ok, reprovisioned, info)
    if ok and link.hold then
      link.hold = nil
      keep(nil, now)
    elseif not ok and reprovisioned then
      link.hold = retry.refusal_hold(link.hold, now)
      keep(link.hold, now)
    end
    if not ok and link.hold and info and retry.refuses(info) then
      info.reprovision_held_until = link.hold.not_before
    end
  end
  return link
end

return connect
