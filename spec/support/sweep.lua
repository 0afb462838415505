-- The secrets sweep, part 1 (a busted helper, loaded before every spec file).
-- When DPS_SWEEP names a folder (spec/suite.sh sets it for the Lua 5.4 run),
-- it records there every secret the public API is handed or makes (keys,
-- derived keys, key passwords, PEM keys, token signatures) and every message
-- it produces (raised errors, failure messages and the string fields of
-- `info`). spec/support/sweep_check.lua then looks for any secret in any
-- message.
--
-- Nothing under test is replaced: the API is watched through debug hooks
-- (arguments on call, results on return) and raised errors where they are
-- caught (pcall/xpcall), so error positions and results are exactly what a
-- caller gets.
local dir = os.getenv("DPS_SWEEP")
if not dir or dir == "" then
  return true
end
assert(_VERSION == "Lua 5.4", "the sweep reads results through Lua 5.4's return hooks")

local cjson = require "cjson"
local core = require "dps.core"
local dps = require "dps"
local Client = require "dps.client"

local out
do
  os.execute("mkdir -p '" .. dir .. "'")
  local name = string.format("%s/%d-%d.jsonl", dir, os.time(), math.floor(core.monotime() * 1e6) % 1e9)
  out = assert(io.open(name, "a"))
end

local recording = false -- no hook re-enters itself

local function record(kind, value)
  if type(value) == "string" and value ~= "" then
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

-- A failure `nil, message, info`: the message and info's strings.
local function failure(results)
  if results.n >= 2 and results[1] == nil then
    record("output", results[2])
    if type(results[3]) == "table" then
      for _, v in pairs(results[3]) do record("output", v) end
    end
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

local function key_arguments(args)
  for i = 1, args.n do
    local v = args[i]
    if type(v) == "string" and #v >= 16 and core.key_problem(v) == nil then secret(v) end
  end
end

-- watched[f] = { call = function(args), ret = function(results) }
local watched = {}
watched[dps.derive_key] = { call = function(args) secret(args[1]) end,
  ret = function(results) secret(results[1]) end }
for _, name in ipairs({ "sas_token", "registration_token", "hub_token" }) do
  watched[dps[name]] = { call = key_arguments, ret = function(results) token_signature(results[1]) end }
end
watched[dps.new] = { call = function(args) option_secrets(args[1]) end, ret = failure }
watched[dps.provision] = watched[dps.new]
for _, name in ipairs({ "register", "operation_status", "registration_status", "provision" }) do
  watched[Client[name]] = { ret = failure }
end

local Hub = require "dps.hub"
watched[dps.connect] = { call = function(args) option_secrets(args[1]) end, ret = failure }
watched[dps.hub], watched[Hub.new] = watched[dps.connect], watched[dps.connect]
for _, name in ipairs({ "send", "send_batch", "receive", "complete", "reject", "abandon" }) do
  watched[Hub[name]] = { ret = failure }
end
watched[Hub.token] = { ret = function(results) token_signature(results[1]) end }

local getinfo, getlocal = debug.getinfo, debug.getlocal

local function hook(event)
  if recording then return end
  local f = getinfo(2, "f").func
  local w = watched[f]
  if not w then return end
  recording = true
  if event == "return" then
    if w.ret then
      local r = getinfo(2, "r")
      local results = { n = r.ntransfer }
      for i = 1, r.ntransfer do
        local _, v = getlocal(2, r.ftransfer + i - 1)
        results[i] = v
      end
      w.ret(results)
    end
  elseif w.call then
    local args = { n = getinfo(2, "u").nparams }
    for i = 1, args.n do
      local _, v = getlocal(2, i)
      args[i] = v
    end
    w.call(args)
  end
  recording = false
end
debug.sethook(hook, "cr")

-- New coroutines do not run the creator's Lua hook: give each its own.
local create = coroutine.create
coroutine.create = function(f) -- luacheck: ignore 122
  local co = create(f)
  debug.sethook(co, hook, "cr")
  return co
end
coroutine.wrap = function(f) -- luacheck: ignore 122
  local co = coroutine.create(f)
  return function(...)
    local r = table.pack(coroutine.resume(co, ...))
    if not r[1] then error(r[2], 0) end
    return table.unpack(r, 2, r.n)
  end
end

-- Raised errors, where the specs (and the library) catch them. The caught
-- function still runs under the C pcall, so its error position is unchanged.
local function caught(ok, ...)
  if not ok then record("output", tostring((...))) end
  return ok, ...
end
local raw_pcall, raw_xpcall = pcall, xpcall
pcall = function(f, ...) return caught(raw_pcall(f, ...)) end -- luacheck: ignore 121
xpcall = function(f, handler, ...) return caught(raw_xpcall(f, handler, ...)) end -- luacheck: ignore 121

return true
