-- Provisioning benchmark against the local emulator: whole-process wall time
-- and request count of one provisioning with the library, next to the
-- documented curl recipe (one curl process per request: PUT register, then
-- GET the operation) in the same run. Run by bench/run.sh with Lua 5.4.
local core = require "dps.core"
local dps = require "dps"
local emulator = require "spec.support.emulator"

local RUNS = tonumber(arg[1]) or 15
local KEY = "18RQk/hOPJR9EbsJlk2j8WA6vWaj/yi+oaYg7zmxfQNdOyMSu+SJ8O7TSlZhDJCYmn4rzEiVKIzNiVAWjLxrGA=="

local function q(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end

local function median(t)
  table.sort(t)
  local n = #t
  return n % 2 == 1 and t[(n + 1) / 2] or (t[n / 2] + t[n / 2 + 1]) / 2
end

-- The service answers at once (Retry-After 0, assigned on the first poll), so
-- the figures are the client's own cost: process start, TLS, requests.
local enrollments = {}
for i = 1, 2 * RUNS do
  enrollments[i] = { type = "individual", registration_id = "bench-" .. i, symmetric_key = KEY }
end
local emu = emulator.start{ retry_after = "0", polls_before_assignment = 1, enrollments = enrollments }

local lua_times, curl_times = {}, {}
local script = [[
local dps = require "dps"
assert(dps.provision{ id_scope = arg[1], registration_id = arg[2], symmetric_key = os.getenv("BENCH_KEY"),
  endpoint = arg[3], ca_file = arg[4] })
]]
local f = assert(io.open("build/bench-provision-one.lua", "w"))
f:write(script)
f:close()

for i = 1, RUNS do
  local id = "bench-" .. i
  local t0 = core.monotime()
  assert(os.execute(string.format("BENCH_KEY=%s lua5.4 build/bench-provision-one.lua %s %s %s %s",
    q(KEY), q(emu.id_scope), q(id), q(emu.endpoint), q(emu.ca_file))))
  lua_times[#lua_times + 1] = core.monotime() - t0

  -- The curl recipe from the docs: a token made beforehand (not timed), then
  -- one curl per request, parsing the operationId out of the PUT's answer.
  id = "bench-" .. (RUNS + i)
  local token = dps.registration_token(emu.id_scope, id, KEY, os.time() + 3600)
  local base = string.format("%s/%s/registrations/%s", emu.endpoint, emu.id_scope, id)
  local common = string.format("curl -sS --cacert %s -H 'Content-Type: application/json' -H %s",
    q(emu.ca_file), q("Authorization: " .. token))
  t0 = core.monotime()
  local p = io.popen(string.format("%s -X PUT -d %s %s", common, q('{"registrationId":"' .. id .. '"}'),
    q(base .. "/register?api-version=2021-06-01")))
  local answer = p:read("*a")
  p:close()
  local op = assert(answer:match('"operationId"%s*:%s*"([^"]+)"'), answer)
  p = io.popen(string.format("%s %s", common, q(base .. "/operations/" .. op .. "?api-version=2021-06-01")))
  answer = p:read("*a")
  p:close()
  assert(answer:find('"assigned"', 1, true), answer)
  curl_times[#curl_times + 1] = core.monotime() - t0
end

local function per_device(prefix, from, to)
  local requests, connections = 0, 0
  for i = from, to do
    requests = requests + #emu:requests(prefix .. i)
    connections = connections + #emu:connections(prefix .. i)
  end
  return requests / (to - from + 1), connections / (to - from + 1)
end
local lua_req, lua_conn = per_device("bench-", 1, RUNS)
local curl_req, curl_conn = per_device("bench-", RUNS + 1, 2 * RUNS)
emu:stop()

local lm, cm = median(lua_times), median(curl_times)
print(string.format("provision (lua5.4 process)  median %6.1f ms  %.1f requests  %.1f TLS connections", lm * 1000,
  lua_req, lua_conn))
print(string.format("curl recipe (2 processes)   median %6.1f ms  %.1f requests  %.1f TLS connections", cm * 1000,
  curl_req, curl_conn))
print(string.format("ratio library / curl: %.2f (%d runs each)", lm / cm, RUNS))
