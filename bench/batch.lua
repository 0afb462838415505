-- Gateway benchmark: N devices of a group against the emulator with a
-- latency per request, at a given concurrency: wall time next to the ideal
-- (requests x latency / concurrency) and next to the same requests sent by
-- curl in the same run (bench/reference.lua), TLS handshakes (full and
-- resumed, as the emulator saw them), peak RSS. Run by bench/run.sh:
--   lua5.4 bench/batch.lua [DEVICES=1000] [LATENCY=0.02] [CONCURRENCY=32]
local emulator = require "spec.support.emulator"
local keys = require "spec.support.keys"
local reference = require "bench.reference"
local core = require "dps.core"
local dps = require "dps"
local runtime = require "dps.runtime"
local timing = require "bench.timing"

local N, LATENCY, CONCURRENCY = tonumber(arg[1] or 1000), tonumber(arg[2] or 0.02), tonumber(arg[3] or 32)

local emu = emulator.start{ retry_after = "0", latency = LATENCY,
  enrollments = { { type = "group", group_id = "g1", symmetric_key = keys.GROUP_KEY } } }
-- the batch's engine, its transfers timed (bench/timing.lua)
local engine = timing.engine(core.engine(runtime.engine_options{ ca_file = emu.ca_file }, CONCURRENCY))
local b = dps.batch({ id_scope = emu.id_scope, group_key = keys.GROUP_KEY, endpoint = emu.endpoint,
  ca_file = emu.ca_file, concurrency = CONCURRENCY, rate = 1e6 }, { transport = engine })
for i = 1, N do b:add(string.format("bench-%05d", i), { payload = { n = i } }) end
local emu_cpu0, cpu0 = timing.cpu_seconds(emu.pid), os.clock()
local s = b:run()
local emu_cpu, cpu = timing.cpu_seconds(emu.pid) - emu_cpu0, os.clock() - cpu0
b:close()
local full, resumed = 0, 0
for _, e in ipairs(emu:log()) do
  if e.event == "connection" then
    if e.resumed then resumed = resumed + 1 else full = full + 1 end
  end
end
-- the reference: the same requests (N registrations, then N polls) by curl
local ref_seconds, ref_statuses, ref_requests
if reference.available() then
  ref_seconds, ref_statuses, ref_requests = reference.provision(emu, keys.GROUP_KEY, N, CONCURRENCY)
end
emu:stop()
local ideal = s.requests * LATENCY / CONCURRENCY
print(string.format("devices %d, concurrency %d, latency %g ms: %d assigned, %d failed", N, CONCURRENCY,
  LATENCY * 1000, s.assigned, s.failed))
print(string.format("wall %.2f s, ideal %.2f s (%d requests x %g ms / %d) = %.2fx (target: at most 1.3x)", s.seconds,
  ideal, s.requests, LATENCY * 1000, CONCURRENCY, s.seconds / ideal))
print("where it went: " .. engine:figures(s.seconds, CONCURRENCY, LATENCY))
if ref_seconds then
  print(string.format("reference: curl --parallel, the same %d requests: %.2f s = %.2fx the ideal (%s); "
    .. "dps.batch = %.2fx curl", ref_requests, ref_seconds, ref_seconds / (ref_requests * LATENCY / CONCURRENCY),
    reference.describe(ref_statuses), s.seconds / ref_seconds * ref_requests / s.requests))
else
  print("reference: skipped (curl cannot run transfers in parallel)")
end
print(string.format("connections %d: TLS handshakes %d full (target: at most %d), %d resumed", s.connects, full,
  CONCURRENCY, resumed))
print(string.format("peak RSS %d KB; CPU: client %.2f s, emulator %.2f s", timing.peak_rss_kb(), cpu, emu_cpu))
