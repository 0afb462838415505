-- Gateway benchmark: N devices of a group against the emulator with a
-- latency per request, at a given concurrency: wall time next to the ideal
-- (requests x latency / concurrency), TLS handshakes (full and resumed, as
-- the emulator saw them), peak RSS. Run by bench/run.sh:
--   lua5.4 bench/batch.lua [DEVICES=1000] [LATENCY=0.02] [CONCURRENCY=32]
local emulator = require "spec.support.emulator"
local keys = require "spec.support.keys"
local dps = require "dps"

local N, LATENCY, CONCURRENCY = tonumber(arg[1] or 1000), tonumber(arg[2] or 0.02), tonumber(arg[3] or 32)

local function cpu_seconds(pid)
  local f = io.open("/proc/" .. pid .. "/stat")
  if not f then return 0 end
  local stat = f:read("*a"):gsub("^.-%) ", "")
  f:close()
  local fields = {}
  for x in stat:gmatch("%S+") do fields[#fields + 1] = x end
  return (tonumber(fields[12]) + tonumber(fields[13])) / 100
end

local function peak_rss_kb()
  local f = io.open("/proc/self/status")
  local text = f and f:read("*a") or ""
  if f then f:close() end
  return tonumber(text:match("VmHWM:%s*(%d+)")) or 0
end

local emu = emulator.start{ retry_after = "0", latency = LATENCY,
  enrollments = { { type = "group", group_id = "g1", symmetric_key = keys.GROUP_KEY } } }
local b = dps.batch{ id_scope = emu.id_scope, group_key = keys.GROUP_KEY, endpoint = emu.endpoint,
  ca_file = emu.ca_file, concurrency = CONCURRENCY, rate = 1e6 }
for i = 1, N do b:add(string.format("bench-%05d", i), { payload = { n = i } }) end
local emu_cpu0, cpu0 = cpu_seconds(emu.pid), os.clock()
local s = b:run()
local emu_cpu, cpu = cpu_seconds(emu.pid) - emu_cpu0, os.clock() - cpu0
b:close()
emu:stop()
local full, resumed = 0, 0
for _, e in ipairs(emu:log()) do
  if e.event == "connection" then
    if e.resumed then resumed = resumed + 1 else full = full + 1 end
  end
end
local ideal = s.requests * LATENCY / CONCURRENCY
print(string.format("devices %d, concurrency %d, latency %g ms: %d assigned, %d failed", N, CONCURRENCY,
  LATENCY * 1000, s.assigned, s.failed))
print(string.format("wall %.2f s, ideal %.2f s (%d requests x %g ms / %d) = %.2fx (target: at most 1.3x)", s.seconds,
  ideal, s.requests, LATENCY * 1000, CONCURRENCY, s.seconds / ideal))
print(string.format("connections %d: TLS handshakes %d full (target: at most %d), %d resumed", s.connects, full,
  CONCURRENCY, resumed))
print(string.format("peak RSS %d KB; CPU: client %.2f s, emulator %.2f s", peak_rss_kb(), cpu, emu_cpu))
