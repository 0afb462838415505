-- Timing helpers for specs that guard "never blocks" and pacing rules, so
-- that they hold on a slow CPU (valgrind, qemu-user) without losing their
-- bite: they measure waiting, not computing.  And on a busy machine (other
-- suites, builds, test runs beside this one): the margins a spec allows come
-- from how busy it measures the machine (timing.busy), never a fixed guess.
local core = require "dps.core"

local timing = {}

--- How much slower than native this run is: 30 under valgrind (the suite's
-- memcheck run), else 1. Under qemu-user the CPU is slower too, but the
-- rules measured with `waited` need no allowance for it.
timing.SLOW = (os.getenv("LD_PRELOAD") or ""):find("vgpreload", 1, true) and 30 or 1

--- Whether the interpreter runs on an emulated CPU (qemu-user: make
-- cross-test sets DPS_SPEC_EMULATED). There the client may still be
-- computing (a TLS handshake) when a native one would long have read an
-- answer: rules about what it does "as soon as it reads" need that allowance.
timing.EMULATED = os.getenv("DPS_SPEC_EMULATED") ~= nil

-- Nanoseconds this thread has spent runnable but not running (other
-- processes had the CPUs): /proc/self/schedstat's second field, Linux only
-- (under qemu-user it is the emulator's own thread, which is ours). 0 where
-- it cannot be read.
local function queued()
  local f = io.open("/proc/self/schedstat", "r")
  if not f then return 0 end
  local line = f:read("*l") or ""
  f:close()
  return (tonumber(line:match("^%d+%s+(%d+)")) or 0) / 1e9
end

-- CPUs of this machine (1 when /proc or /sys cannot tell).
local function cpus()
  local f = io.open("/sys/devices/system/cpu/online", "r")
  local line = f and f:read("*l") or ""
  if f then f:close() end
  local n = 0
  for range in line:gmatch("[^,]+") do
    local a, b = range:match("^(%d+)%-(%d+)$")
    n = n + (a and tonumber(b) - tonumber(a) + 1 or 1)
  end
  return n > 0 and n or 1
end

--- How busy the machine is right now, as a factor of at least 1: how much
-- longer than its CPU time a short CPU-bound loop takes (20 ms of CPU: the
-- share of a CPU this process gets just now), or the 1-minute load average
-- per CPU (the number of runnable processes per CPU, averaged), whichever is
-- larger.  2 means "things take twice as long as on an idle machine": other
-- processes (other suites, other builds) have the CPUs half of the time.
-- Measured at each call; it takes 20 ms of CPU.
function timing.busy()
  local c0, w0 = os.clock(), core.monotime()
  local x = 0
  repeat
    for i = 1, 1000 do x = x + i end
  until os.clock() - c0 >= 0.02
  local probe = (core.monotime() - w0) / (os.clock() - c0)
  local load = 0
  local f = io.open("/proc/loadavg", "r")
  if f then
    load = (tonumber((f:read("*l") or ""):match("^[%d.]+")) or 0) / cpus()
    f:close()
  end
  return math.max(1, probe, load)
end

--- A margin of time for this process's work: `seconds` on an idle machine
-- at native speed, times SLOW and times how busy the machine is now
-- (timing.busy). For limits that only stop a spec that would otherwise wait
-- for ever (a request's timeout against a local server), and for the slack
-- a rule about time allows beyond its deadline; never the deadline itself.
function timing.margin(seconds)
  return seconds * timing.SLOW * timing.busy()
end

--- The same for the work of a child process (a `dps` command, an example):
-- those run on the plain interpreter even under valgrind, so only how busy
-- the machine is counts.
function timing.child_margin(seconds)
  return seconds * timing.busy()
end

local function pack(...) return { n = select("#", ...), ... } end
local unpack = table.unpack or unpack

--- Calls f(...) and measures how long it waited: wall-clock time minus the
-- process's CPU time minus the time it sat runnable behind other processes.
-- A call that blocks (poll with a timeout, sleep, a blocking read) waits; a
-- call that computes for a second under emulation (a TLS handshake on an
-- emulated CPU) does not.
-- @return seconds waited, then f's results
function timing.waited(f, ...)
  local w0, c0, q0 = core.monotime(), os.clock(), queued()
  local r = pack(f(...))
  local cpu = os.clock() - c0
  if cpu < 0 then cpu = 0 end -- a 32-bit clock_t wrapped (after 36 min of CPU)
  local waited = (core.monotime() - w0) - cpu - (queued() - q0)
  return waited, unpack(r, 1, r.n)
end

return timing
