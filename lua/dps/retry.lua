--- Another try (internal): the rules every path shares, and the machine of
-- one call that may be sent again (a hub call, a single DPS call).
--
-- The rules, each written once here and used by this machine and by the
-- provisioning machine (`dps.poll`):
--
-- * **Back-off**: before attempt n after a failure, uniform in [c/2, c] with
--   c = min(`BACKOFF_CAP`, `BACKOFF_BASE` · 2^(n-1)) seconds.
-- * **Retry-After**: a failure worth another try (429, 5xx, a connection
--   failure that may pass: `info.retryable`) waits the server's Retry-After
--   when it gave one, else the back-off; never less than the back-off (a
--   `Retry-After: 0` on every answer must not become a tight loop).
-- * **A wrong clock**: a 401 whose `Date` shows the signing clock off by more
--   than a minute (`dps.clock.correction`) is sent again at once, signed
--   with the server's time — once per call (once per provisioning for
--   `dps.poll`).
--
-- The call machine does no I/O, never sleeps and never reads a clock: the
-- driver (`dps.runtime.drive`, or an event loop) tells it the time and the
-- answers, and it says what to do next, like `dps.poll`:
--
--    local m = retry.call{ timeout = 30, now = rt.monotime(), reprovision = true }
--    local act = m:tick(rt.monotime())
--    -- act.action: "send" (act.timeout, act.clock_offset), "wait" (act.at),
--    -- "reprovision" (then m:reprovisioned(now, ok, message, info)),
--    -- "done" (act.result, act.meta) or "fail" (act.message, act.info)
--
-- Its rules beyond the shared ones: one deadline bounds the call, retries
-- and provisioning again included (it never restarts); a try whose wait
-- reaches past the deadline ends with the last failure (`info.attempts`);
-- when the hub refuses the device (`retry.refuses`) and the driver can
-- provision again, it asks for that once per call.
-- @module dps.retry
local core = require "dps.core"
local clock = require "dps.clock"
local errors = require "dps.errors"

local retry = {}

retry.BACKOFF_BASE, retry.BACKOFF_CAP = 1, 30

--- The back-off before attempt `attempt` (1, 2, …) after a failure.
-- @tparam function jitter `jitter(low, high)` → a number in `[low, high]`
-- @tparam number attempt
-- @treturn number seconds
function retry.backoff(jitter, attempt)
  local ceiling = math.min(retry.BACKOFF_CAP, retry.BACKOFF_BASE * 2 ^ (attempt - 1))
  return jitter(ceiling / 2, ceiling)
end

--- The wait before attempt `attempt` after a failure: the server's
-- Retry-After (seconds, or nil), raised to the back-off when below it.
-- @tparam number|nil retry_after
-- @tparam function jitter
-- @tparam number attempt
-- @treturn number seconds
function retry.delay(retry_after, jitter, attempt)
  return math.max(retry_after or 0, retry.backoff(jitter, attempt))
end

--- What to do after a failed request, by the shared rules.
-- @tparam table state the machine's: `clock_offset`, `clock_retried`,
--   `failures` (updated here)
-- @tparam table info the failure's info
-- @tparam function jitter
-- @treturn number|nil seconds to wait before the next try (0: at once,
--   signed with the corrected clock), or nil when the failure is final
-- @treturn number|nil the server's Retry-After, when that set the wait
function retry.after_failure(state, info, jitter)
  local corrected = not state.clock_retried and clock.correction(info, state.clock_offset)
  if corrected then
    state.clock_retried = true
    state.clock_offset = corrected
    return 0
  elseif info.retryable then
    state.failures = state.failures + 1
    return retry.delay(info.retry_after, jitter, state.failures), info.retry_after
  end
  return nil
end

--- Whether a failure is the hub refusing this device (the rule for
-- provisioning again): 401 (with a correct clock), 403 that is not a full
-- quota or queue (kind `auth`), or 404 (`DeviceNotFound`, or no code).
-- @tparam table info
-- @treturn boolean
function retry.refuses(info)
  if info.kind == "auth" and (info.status == 401 or info.status == 403) then
    return true
  end
  return info.kind == "not_found" and info.status == 404
    and (info.error_code == nil or info.error_code == "DeviceNotFound")
end

--- A hub that still refuses the device after it provisioned again: the
-- next registration again waits `REFUSAL_BASE` seconds, doubling with each
-- refusal, at most `REFUSAL_CAP` (one re-registration per refusal episode;
-- the episode ends when a hub call succeeds).
retry.REFUSAL_BASE, retry.REFUSAL_CAP = 60, 6 * 3600

--- The hold after one more refused re-registration.
-- @tparam[opt] table hold the current `{ refusals, not_before }` (nil: none)
-- @tparam number now wall-clock seconds
-- @treturn table the new hold
function retry.refusal_hold(hold, now)
  local refusals = (hold and hold.refusals or 0) + 1
  local wait = math.min(retry.REFUSAL_CAP, retry.REFUSAL_BASE * 2 ^ (refusals - 1))
  return { refusals = refusals, not_before = math.floor(now + wait) }
end

-- Misuse of a machine: raises at the driver's line.
local function misuse(who, message)
  error(who .. ": " .. message, 3)
end

--- The time argument of a machine's method, else raises.
function retry.check_time(who, now, method)
  if type(now) ~= "number" or now ~= now then
    misuse(who, method .. ": the time must be a number, got " .. type(now))
  end
end

local Call = {}
Call.__index = Call

--- A machine for one call.
-- @tparam table opts `timeout` (seconds, > 0), `now` (the driver's
--   monotonic clock), `step` (the call's name, for messages), and optionally
--   `jitter` (default `dps.core.jitter`), `clock_offset` (seconds the driver
--   signs with, default 0), `retries` (false: only the wrong-clock rule, no
--   other try), `reprovision` (true: the driver can provision again)
-- @raise on a missing or wrong option
function retry.call(opts)
  if type(opts) ~= "table" or type(opts.timeout) ~= "number" or opts.timeout ~= opts.timeout
    or opts.timeout <= 0 then
    misuse("dps.retry", "call: timeout must be a positive number of seconds")
  end
  retry.check_time("dps.retry", opts.now, "call")
  return setmetatable({
    step = opts.step or "call", timeout = opts.timeout, deadline = opts.now + opts.timeout,
    jitter = opts.jitter or core.jitter, retries = opts.retries ~= false, can_reprovision = opts.reprovision,
    clock_offset = opts.clock_offset or 0, clock_retried = false, failures = 0,
    phase = "idle", at = opts.now, last_message = nil, last_info = nil,
  }, Call)
end

function Call:_over(action)
  self.phase = "over"
  return action
end

function Call:_fail(message, info)
  if self.clock_offset ~= 0 then info.clock_offset = self.clock_offset end
  return self:_over({ action = "fail", message = message, info = info })
end

--- The driver's timer fired (or the machine was just made).
-- @tparam number now
-- @treturn table `send` (`timeout` = the time left, `clock_offset`), `wait`
--   (`at`) or `fail` (kind `timeout`: the deadline passed)
function Call:tick(now)
  retry.check_time("dps.retry", now, "tick")
  if self.phase ~= "idle" then misuse("dps.retry", "tick: the machine is " .. self.phase) end
  if now >= self.deadline then
    if self.last_info then
      return self:_fail(self.last_message, self.last_info)
    end
    return self:_fail(string.format("%s: no answer within %g s", self.step, self.timeout),
      { kind = "timeout", retryable = errors.retryable("timeout"), step = self.step })
  elseif now < self.at then
    return { action = "wait", at = self.at }
  end
  self.phase = "sending"
  return { action = "send", timeout = self.deadline - now, clock_offset = self.clock_offset }
end

--- The request is over: here is how it went (as `dps.poll`'s `answer`).
-- @treturn table `done` (`result`, `meta`), `wait`, `reprovision` or `fail`
function Call:answer(now, result, meta, info)
  retry.check_time("dps.retry", now, "answer")
  if self.phase ~= "sending" then misuse("dps.retry", "answer: no request is out (call tick first)") end
  self.phase = "idle"
  if result ~= nil then
    return self:_over({ action = "done", result = result, meta = meta, clock_offset = self.clock_offset })
  end
  self.last_message, self.last_info = meta, info
  local corrected = not self.clock_retried and clock.correction(info, self.clock_offset)
  if not corrected and self.can_reprovision and retry.refuses(info) then
    self.can_reprovision = false
    self.phase = "provisioning"
    return { action = "reprovision", timeout = self.deadline - now }
  end
  local delay = (corrected or self.retries) and retry.after_failure(self, info, self.jitter)
  if not delay then
    return self:_fail(meta, info)
  elseif now + delay >= self.deadline then
    info.attempts = self.failures
    return self:_fail(meta, info)
  end
  self.at = now + delay
  return { action = "wait", at = self.at }
end

--- Provisioning again is over: `ok` true (the driver took the new
-- assignment and its clock offset: pass it) or false with the failure.
-- @tparam number now
-- @tparam boolean ok
-- @param[opt] message the failure's message, or with `ok` the new clock offset
-- @tparam[opt] table info the failure's info
-- @treturn table `wait` (send the call again at once) or `fail`
function Call:reprovisioned(now, ok, message, info)
  retry.check_time("dps.retry", now, "reprovisioned")
  if self.phase ~= "provisioning" then misuse("dps.retry", "reprovisioned: no provisioning was asked for") end
  self.phase = "idle"
  if not ok then
    info.hub_refusal = self.last_info
    return self:_fail(errors.safe(self.last_message .. "; provisioning again: " .. tostring(message), 2048), info)
  end
  if type(message) == "number" then self.clock_offset = message end
  self.clock_retried = false -- a new assignment: its own wrong-clock retry
  self.at = now
  return { action = "wait", at = now }
end

return retry
