--- The registration pace (internal): the rules of every driver that
-- registers many devices on one engine (`dps.batch`, `dps.hubs`), written
-- once here.
--
-- * Registrations (first ones, and again after a 409, 429 or 5xx, or when a
--   hub refuses the device) go out at most `rate` per minute: the DPS quota
--   is per unit, not per device.
-- * A 429 to any registration holds every registration for its Retry-After
--   (raised to the first back-off, `dps.retry.delay`).
-- * A device that cannot register before its deadline (the pace or the
--   hold reach past it) fails at once with kind `timeout`.
--
-- Like the machines it does no I/O and reads no clock: the driver tells it
-- the time (its monotonic clock).
--
--    local p = pace.new{ rate = 1000, jitter = rt.jitter }
--    if p:allows(now) then
--      p:registered(now)                      -- a registration goes out now
--      …
--      p:answered(now, "register", info)      -- its failure's info (nil: success)
--    end
-- @module dps.pace
local errors = require "dps.errors"
local retry = require "dps.retry"

local pace = {}

--- Registrations per minute when none is given.
pace.DEFAULT_RATE = 1000

local Pace = {}
Pace.__index = Pace

--- A pace.
-- @tparam table opts `rate` (registrations per minute, > 0; default
--   `DEFAULT_RATE`), `jitter` (`jitter(low, high)`: the back-off's)
-- @treturn table the pace: no registration held yet
function pace.new(opts)
  return setmetatable({
    interval = 60 / (opts.rate or pace.DEFAULT_RATE), -- seconds between registrations
    jitter = opts.jitter,
    next_register = -math.huge, -- pacing: no registration before this time
    hold_until = -math.huge,    -- a 429 holds every registration until this time
  }, Pace)
end

--- How early a registration may go out (seconds): about the time a
-- driver's step takes, so that a high rate is not held to one registration
-- per step; the pace keeps its average (the next turn counts from the turn,
-- not from the early start).
pace.SLACK = 0.001

--- When the next registration may go out: the pace and the 429 hold.
-- @treturn number
function Pace:register_at()
  return math.max(self.next_register, self.hold_until)
end

--- Whether a registration may go out at `now`: its turn has come (or
-- comes within `SLACK`).
-- @treturn boolean
function Pace:allows(now)
  return now + pace.SLACK >= self:register_at()
end

--- A registration goes out at `now`: the next one waits its turn.
function Pace:registered(now)
  self.next_register = math.max(now, self.next_register) + self.interval
end

--- A registration was throttled (429) at `now`: hold every registration for
-- the server's Retry-After (seconds, or nil), at least the first back-off.
function Pace:throttled(now, retry_after)
  self.hold_until = math.max(self.hold_until, now + retry.delay(retry_after, self.jitter, 1))
end

--- A request of a provisioning is over: a 429 to a registration holds the
-- others (`throttled`).
-- @tparam number now
-- @tparam string step the request's step (`register`, `operation_status`)
-- @tparam[opt] table info the failure's info; nil on an answer
function Pace:answered(now, step, info)
  if info and info.status == 429 and step == "register" then
    self:throttled(now, info.retry_after)
  end
end

--- Whether no registration can go out before `limit` (a deadline).
function Pace:too_late(limit)
  return self:register_at() >= limit
end

--- The failure of a device that cannot register before its deadline
-- (`too_late`): kind `timeout`, saying whether the hold or the pace is why,
-- with the hold's `retry_after` (seconds from `now`).
-- @tparam number limit the deadline
-- @tparam number now
-- @tparam number timeout the seconds that deadline allowed (for the message)
-- @tparam[opt] string last_message the device's last failure
-- @tparam[opt] table last_info its info
-- @return nil, message, info
function Pace:failure(limit, now, timeout, last_message, last_info)
  local held = self.hold_until >= limit
  local _, message, info = errors.deadline(timeout, (last_message or "never started")
    .. (held and "; registrations are held by the service's Retry-After" or "; the registration pace"), last_info)
  if held and not info.retry_after then info.retry_after = self.hold_until - now end
  return nil, message, info
end

return pace
