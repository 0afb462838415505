-- Gateway benchmark of dps.hubs: N leaves of a group provisioned through one
-- pool (one engine), then M messages each to the hub, against the emulator
-- with a latency per request, at a given concurrency. For each phase: wall
-- time next to the ideal (requests x latency / concurrency); the longest
-- step(); the same requests sent by curl in the same run (bench/reference.lua:
-- what the emulator, TLS and the latency allow a C client); TLS handshakes
-- per host (full and resumed, as the emulator saw them: DPS and the hub are
-- the same host:port here).
-- With NODE_DIR (a folder whose node_modules hold the Node SDK: bench/run.sh
-- installs it under build/), the same run with the official Node SDK's HTTP
-- transports follows (bench/hubs.js, against an emulator of its own), each
-- phase's wall time set beside this one's.
-- The collector: Lua's defaults; DPS_BENCH_STEPMUL=N runs Lua 5.4's
-- incremental collector at step multiplier N instead (docs/gateways.md, "How
-- long a step() takes").
--   lua5.4 bench/hubs.lua [LEAVES=1000] [MESSAGES=10] [LATENCY=0.02] [CONCURRENCY=32] [NODE_DIR]
local emulator = require "spec.support.emulator"
local keys = require "spec.support.keys"
local reference = require "bench.reference"
local core = require "dps.core"
local Hubs = require "dps.hubs"
local runtime = require "dps.runtime"
local timing = require "bench.timing"
local cjson = require "cjson"

local N, M = tonumber(arg[1] or 1000), tonumber(arg[2] or 10)
local LATENCY, CONCURRENCY = tonumber(arg[3] or 0.02), tonumber(arg[4] or 32)
local NODE_DIR = arg[5]
local STEPMUL = tonumber(os.getenv("DPS_BENCH_STEPMUL") or "")
if STEPMUL then collectgarbage("incremental", 200, STEPMUL) end

local EMULATOR = { retry_after = "0", latency = LATENCY,
  enrollments = { { type = "group", group_id = "g1", symmetric_key = keys.GROUP_KEY } } }
local emu = emulator.start(EMULATOR)
-- the pool's engine, its transfers timed (bench/timing.lua)
local engine = timing.engine(core.engine(runtime.engine_options{ ca_file = emu.ca_file }, CONCURRENCY))
local pool = Hubs.new({ ca_file = emu.ca_file, concurrency = CONCURRENCY, rate = 1e6 }, { transport = engine })

-- every step() timed, as an event loop would call it: wall time, and this
-- process's CPU time (on a loaded machine the wall time holds preemption too)
local longest, longest_cpu, steps, over, over_cpu = 0, 0, 0, 0, 0
local step = Hubs.step
pool.step = function(self)
  local t0, c0 = core.monotime(), os.clock()
  local wait, fds = step(self)
  local took, cpu = core.monotime() - t0, os.clock() - c0
  if took > longest then longest = took end
  if cpu > longest_cpu then longest_cpu = cpu end
  if took > 0.02 then over = over + 1 end
  if cpu > 0.02 then over_cpu = over_cpu + 1 end
  steps = steps + 1
  return wait, fds
end

local leaves = {}
for i = 1, N do
  leaves[i] = pool:add{ id_scope = emu.id_scope, registration_id = string.format("bench-%05d", i),
    group_key = keys.GROUP_KEY, dps_endpoint = emu.endpoint, endpoint = emu.endpoint }
end

local has_reference = reference.available()

-- The reference of a phase (`run()`: seconds, statuses, requests), measured
-- after it, and its ratios.
local function compare(wall, requests, run)
  if not has_reference then
    return print("           reference: skipped (curl cannot run transfers in parallel)")
  end
  local ref_seconds, statuses, ref_requests = run()
  print(string.format("           reference: curl --parallel, the same %d requests: %.2f s = %.2fx the ideal (%s); "
    .. "dps.hubs = %.2fx curl", ref_requests, ref_seconds, ref_seconds / (ref_requests * LATENCY / CONCURRENCY),
    reference.describe(statuses), wall / ref_seconds * ref_requests / requests))
end

-- One phase: run the pool until idle; its figures.
local function phase(name)
  local before = pool:stats()
  engine:reset()
  longest, longest_cpu, steps, over, over_cpu = 0, 0, 0, 0, 0
  local t0, cpu0, emu_cpu0 = core.monotime(), os.clock(), timing.cpu_seconds(emu.pid)
  local after = pool:run()
  local wall, cpu, emu_cpu = core.monotime() - t0, os.clock() - cpu0, timing.cpu_seconds(emu.pid) - emu_cpu0
  local requests = after.requests - before.requests
  local ideal = requests * LATENCY / CONCURRENCY
  print(string.format("%-10s wall %.2f s, ideal %.2f s (%d requests x %g ms / %d) = %.2fx (target: at most 1.3x)"
    .. "\n           longest step() %.1f ms (%.1f ms CPU) of %d (target: at most 20 ms; over it: %d, %d by CPU); "
    .. "CPU: client %.2f s, emulator %.2f s", name, wall, ideal, requests, LATENCY * 1000, CONCURRENCY, wall / ideal,
    longest * 1000, longest_cpu * 1000, steps, over, over_cpu, cpu, emu_cpu))
  print("           where it went: " .. engine:figures(wall, CONCURRENCY, LATENCY))
  return after, wall, requests
end

print(string.format("leaves %d, messages %d each, concurrency %d, latency %g ms; collector: %s", N, M, CONCURRENCY,
  LATENCY * 1000, STEPMUL and ("step multiplier " .. STEPMUL) or "Lua's defaults"))
local s, wall, requests = phase("provision")
local provision_wall = wall
print(string.format("           %d provisioned, %d failed", s.provisioned, s.provision_failed))
-- the TLS handshakes of the pool (the emulator's log but the references' part)
local full, resumed, logged = {}, {}, 0
-- The log's entries since the last look are the pool's (`mine`) or a reference's.
local function handshakes(mine)
  local log = emu:log()
  for i = logged + 1, #log do
    local e = log[i]
    if mine and e.event == "connection" then
      local host = tostring(e.listener or "?")
      if e.resumed then resumed[host] = (resumed[host] or 0) + 1 else full[host] = (full[host] or 0) + 1 end
    end
  end
  logged = #log
end
handshakes(true)
compare(wall, requests, function() return reference.provision(emu, keys.GROUP_KEY, N, CONCURRENCY) end)
handshakes(false)

local acked, failed = 0, 0
local function on_done(ok) if ok then acked = acked + 1 else failed = failed + 1 end end
for m = 1, M do
  for i = 1, N do
    assert(leaves[i]:send(string.format('{"leaf":%d,"n":%d}', i, m), nil, on_done))
  end
end
s, wall, requests = phase("send")
print(string.format("           %d acknowledged, %d failed", acked, failed))
local states = {}
for i = 1, N do states[i] = leaves[i]:provisioned() end
pool:close()
handshakes(true)
compare(wall, requests, function() return reference.send(emu, keys.GROUP_KEY, states, M, CONCURRENCY) end)
emu:stop()

for host, n in pairs(full) do
  print(string.format("host %s: TLS handshakes %d full (target: at most %d), %d resumed; engine connects %d",
    host, n, CONCURRENCY, resumed[host] or 0, s.connects))
end
print(string.format("peak RSS %d KB", timing.peak_rss_kb()))

-- The same run with the Node SDK's HTTP transports: its wall times per phase,
-- the requests the emulator saw, and the ratio to this pool's.
local function quote(x) return "'" .. tostring(x):gsub("'", "'\\''") .. "'" end
if NODE_DIR then
  print(string.format("== the Node SDK (azure-iot-provisioning-device-http, azure-iot-device-http): the same %d leaves "
    .. "x %d messages, %d at a time, latency %g ms", N, M, CONCURRENCY, LATENCY * 1000))
  local nemu = emulator.start(EMULATOR)
  local p = io.popen(string.format("node bench/hubs.js %s %d %s %s %s %d %d %d", quote(NODE_DIR), nemu.port,
    quote(nemu.ca_file), quote(nemu.id_scope), quote(keys.GROUP_KEY), N, M, CONCURRENCY))
  local out = p:read("*a")
  p:close()
  local counted = { provision = 0, send = 0 }
  for _, e in ipairs(nemu:log()) do
    if e.event == "request" then
      local what = (e.kind == "register" or e.kind == "poll") and "provision" or "send"
      counted[what] = counted[what] + 1
    end
  end
  nemu:stop()
  local r = cjson.decode(out:match("{.*}") or "null")
  if type(r) ~= "table" then
    print("  Node SDK: failed: " .. out)
  else
    for _, name in ipairs({ "provision", "send" }) do
      local ideal = counted[name] * LATENCY / CONCURRENCY
      print(string.format("%-10s wall %.2f s, ideal %.2f s (%d requests) = %.2fx; "
        .. "the Node SDK took %.2fx dps.hubs' time", name, r[name], ideal, counted[name], r[name] / ideal,
        r[name] / (name == "send" and wall or provision_wall)))
    end
    print(string.format("           %d provisioned, %d sent, %d failed", r.provisioned, r.sent, r.failed))
  end
end
