-- Peak RSS and wall time of one provisioning on the OpenWrt-like stack
-- (tools/stack/build.sh: musl, Lua 5.1, libcurl on mbedTLS, dps.core with
-- the mbedTLS backend), the emulator on the host.  Run by bench/stack.sh
-- with the host's Lua 5.4; the provisioning process reads its own VmHWM.
local core = require "dps.core"
local emulator = require "spec.support.emulator"

local RUNS = tonumber(arg[1]) or 5
local KEY = "18RQk/hOPJR9EbsJlk2j8WA6vWaj/yi+oaYg7zmxfQNdOyMSu+SJ8O7TSlZhDJCYmn4rzEiVKIzNiVAWjLxrGA=="
local function q(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end

local enrollments = {}
for i = 1, RUNS do
  enrollments[i] = { type = "individual", registration_id = "stack-" .. i, symmetric_key = KEY }
end
local emu = emulator.start{ retry_after = "0", polls_before_assignment = 1, enrollments = enrollments }

local f = assert(io.open("build/bench-stack-one.lua", "w"))
f:write([[
package.path = "./lua/?.lua;" .. package.path
package.cpath = "./build/stack/?.so;" .. package.cpath
local dps = require "dps"
assert(dps.provision{ id_scope = arg[1], registration_id = arg[2], symmetric_key = os.getenv("BENCH_KEY"),
  endpoint = arg[3], ca_file = arg[4] })
local s = assert(io.open("/proc/self/status")):read("*a")
print(s:match("VmHWM:%s*(%d+)"))
]])
f:close()

local peak, times = 0, {}
for i = 1, RUNS do
  local t0 = core.monotime()
  local p = io.popen(string.format("BENCH_KEY=%s build/stack/lua5.1 build/bench-stack-one.lua %s %s %s %s",
    q(KEY), q(emu.id_scope), q("stack-" .. i), q(emu.endpoint), q(emu.ca_file)))
  local out = p:read("*a")
  local ok = p:close()
  times[#times + 1] = core.monotime() - t0
  local kib = tonumber(out:match("(%d+)%s*$"))
  assert(ok and kib, out)
  if kib > peak then peak = kib end
end
emu:stop()
table.sort(times)
print(string.format("  %-40s %7.2f MiB (target <= 6 MiB), median %.0f ms", "peak RSS, one provisioning (stack)",
  peak / 1024, times[math.floor((#times + 1) / 2)] * 1000))
