-- Where a gateway bench's time goes (bench/batch.lua, bench/hubs.lua): an
-- engine (`dps.core.engine`) wrapped so that each transfer is timed from
-- `request` to the step that reports it done (the transfer: network, TLS,
-- the emulator's latency and work), and from there to `take` (the pickup:
-- the driver's turn to read it). The slots' use over a phase says whether
-- the driver keeps them busy; the transfers' mean says how far the far end
-- is from the latency.
--
--    local engine = timing.engine(core.engine(opts, 32))
--    local pool = Hubs.new({ … }, { transport = engine })
--    engine:reset() … pool:run() … print(engine:figures(wall, 32, 0.02))
local core = require "dps.core"

local timing = {}

local Timed = {}
Timed.__index = Timed

--- Wrap `engine`.
function timing.engine(engine)
  return setmetatable({ engine = engine, started = {}, seen = {} }, Timed):reset()
end

--- Count from zero (a new phase).
function Timed:reset()
  self.n, self.transfer, self.pickup, self.longest = 0, 0, 0, 0
  self.durations = {}
  return self
end

function Timed:request(...)
  local id, message, info = self.engine:request(...)
  if id then self.started[id] = core.monotime() end
  return id, message, info
end

-- The transfers a step or a run reported done: when the driver learnt it.
function Timed:_seen(done)
  local now = core.monotime()
  for _, id in ipairs(done) do self.seen[id] = self.seen[id] or now end
  return done
end

function Timed:step()
  local wait, fds, done = self.engine:step()
  return wait, fds, self:_seen(done)
end

function Timed:run(timeout)
  return self:_seen(self.engine:run(timeout))
end

function Timed:take(id)
  local now, started = core.monotime(), self.started[id]
  local seen = self.seen[id] or now
  if started then
    self.n = self.n + 1
    self.transfer = self.transfer + (seen - started)
    self.pickup = self.pickup + (now - seen)
    if seen - started > self.longest then self.longest = seen - started end
    self.durations[self.n] = seen - started
  end
  self.started[id], self.seen[id] = nil, nil
  return self.engine:take(id)
end

function Timed:cancel(id)
  self.started[id], self.seen[id] = nil, nil
  return self.engine:cancel(id)
end

function Timed:stats() return self.engine:stats() end
function Timed:close() return self.engine:close() end

--- The phase's figures as text: the slots' use over `wall` seconds, the
-- transfers' mean (next to `latency`), median, 90th percentile and longest,
-- the pickups' mean.
function Timed:figures(wall, concurrency, latency)
  local n = math.max(self.n, 1)
  local held = self.transfer + self.pickup
  local sorted = { table.unpack(self.durations) }
  table.sort(sorted)
  local function at(q) return 1000 * (sorted[math.max(1, math.ceil(q * #sorted))] or 0) end
  return string.format("slots in use %.0f %% (%.1f of %d on average); a transfer %.1f ms on average "
    .. "(latency %g ms; median %.1f, 90 %% %.1f, longest %.0f ms), its pickup %.2f ms",
    100 * held / (wall * concurrency), held / wall, concurrency, 1000 * self.transfer / n, 1000 * latency,
    at(0.5), at(0.9), 1000 * self.longest, 1000 * self.pickup / n)
end

--- The CPU seconds (user and system) process `pid` used so far.
function timing.cpu_seconds(pid)
  local f = io.open("/proc/" .. pid .. "/stat")
  if not f then return 0 end
  local stat = f:read("*a"):gsub("^.-%) ", "")
  f:close()
  local fields = {}
  for x in stat:gmatch("%S+") do fields[#fields + 1] = x end
  return (tonumber(fields[12]) + tonumber(fields[13])) / 100
end

--- This process's peak resident set (KB).
function timing.peak_rss_kb()
  local f = io.open("/proc/self/status")
  local text = f and f:read("*a") or ""
  if f then f:close() end
  return tonumber(text:match("VmHWM:%s*(%d+)")) or 0
end

return timing
