-- The secrets sweep, part 1 (a busted helper, loaded before every spec file):
-- watches the public API while the whole suite runs and records, in
-- build/sweep/, every secret it is handed or makes (keys, derived keys, key
-- passwords, PEM keys, token signatures) and every message it produces
-- (raised errors, failure messages and the string fields of `info`).
-- spec/support/sweep_check.lua then looks for any secret in any message.
local cjson = require "cjson"
local core = require "dps.core"
local dps = require "dps"
local Client = require "dps.client"

local unpack = table.unpack or unpack -- luacheck: ignore
local pack = table.pack or function(...) return { n = select("#", ...), ... } end

local out
do
  os.execute("mkdir -p build/sweep")
  local name = string.format("build/sweep/%d-%d.jsonl", os.time(), math.floor(core.monotime() * 1e6) % 1e9)
  out = io.open(name, "a")
end

local function record(kind, value)
  if out and type(value) == "string" and value ~= "" then
    out:write(cjson.encode({ [kind] = value }), "\n")
    out:flush()
  end
end

local function secret(value)
  if type(value) == "string" and #value >= 8 then record("secret", value) end
end

local function token_signature(token)
  if type(token) == "string" then
    secret(token:match("[&% ]sig=([^&]+)"))
  end
end

local function outputs(results)
  if results[1] == nil and results.n >= 2 then
    record("output", results[2])
    if type(results[3]) == "table" then
      for _, v in pairs(results[3]) do record("output", v) end
    end
  end
end

-- Wraps f: records what it raises and the failures it returns.
local function watch(f, before, after)
  return function(...)
    if before then before(...) end
    local r = pack(pcall(f, ...))
    if not r[1] then
      record("output", tostring(r[2]))
      error(r[2], 0)
    end
    local results = pack(unpack(r, 2, r.n))
    outputs(results)
    if after then after(results, ...) end
    return unpack(results, 1, results.n)
  end
end

local function option_secrets(opts)
  if type(opts) ~= "table" then return end
  secret(opts.symmetric_key)
  secret(opts.group_key)
  secret(opts.key_password)
  secret(opts.key)
  if type(opts.group_key) == "string" and type(opts.registration_id) == "string" then
    local ok, derived = pcall(core.derive_key, opts.group_key, opts.registration_id)
    if ok then secret(derived) end
  end
end

dps.derive_key = watch(dps.derive_key, function(group_key) secret(group_key) end,
  function(results) secret(results[1]) end)
for _, name in ipairs({ "sas_token", "registration_token", "hub_token" }) do
  dps[name] = watch(dps[name], function(...)
    for i = 1, select("#", ...) do
      local v = select(i, ...)
      if type(v) == "string" and #v >= 16 and pcall(core.base64_decode, v) then secret(v) end
    end
  end, function(results) token_signature(results[1]) end)
end
dps.new = watch(dps.new, option_secrets)
dps.provision = watch(dps.provision, option_secrets)
for _, name in ipairs({ "register", "operation_status", "registration_status", "provision" }) do
  Client[name] = watch(Client[name])
end

return true
