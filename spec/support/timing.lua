-- Timing helpers for specs that guard "never blocks" and pacing rules, so
-- that they hold on a slow CPU (valgrind, qemu-user) without losing their
-- bite: they measure waiting, not computing.
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
