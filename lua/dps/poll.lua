--- The provisioning engine as a pure state machine: register, then poll
-- until the service decides, within one overall deadline.
--
-- The machine does no I/O, never sleeps, never reads a clock and never calls
-- a client: it is told what happened (the time, an answer or a failure) and
-- says what to do next. `dps.client:provision` drives it with the real clock
-- and blocking requests; the specs drive it with a fake clock and scripted
-- answers; an event loop can drive many at once (one machine per device).
--
--    local m = poll.new{ timeout = 60, now = core.monotime() }
--    local act = m:tick(core.monotime())
--    while act.action == "send" or act.action == "wait" do
--      if act.action == "wait" then
--        sleep_until(act.at)                      -- or arm a timer
--        act = m:tick(core.monotime())
--      else                                       -- act.step, act.operation_id, act.timeout
--        local result, meta, info = request(act)  -- decoded JSON + meta, or nil, message, info
--        act = m:answer(core.monotime(), result, meta, info)
--      end
--    end
--    -- act.action == "done": act.state, act.result; "fail": act.message, act.info
--
-- Rules:
--
-- * Before each poll, wait the server's Retry-After (seconds or HTTP-date,
--   already turned into seconds by `dps.response`); without one, about 2 s
--   with jitter. A Retry-After that reaches past the deadline ends
--   provisioning at once (kind `timeout`, with `retry_after`).
-- * On 429 and 5xx, and on connection failures that may pass (`timeout`,
--   `network`, `connect`, `resolve`, `protocol`: `info.retryable`), send the
--   same request again after Retry-After or the back-off (`dps.retry`'s
--   rules, shared with every other call that retries).
-- * On 409 (kind `conflict`), to a register or to a poll, back off at random
--   and register again.
-- * Never more than `LIMIT` (5) polls in any `WINDOW` (10) seconds, the
--   service's per-device limit.
-- * `assigned` ends with the registration state; `failed` and `disabled`
--   end with an error carrying the service's `errorCode` and `errorMessage`.
-- * On a 401 whose `Date` says the clock the token was signed with is off by
--   more than a minute (`dps.retry`'s wrong-clock rule), send the same
--   request again at once, signed with the server's time: once per provisioning. Every
--   later `send` carries that `clock_offset` (seconds to add to the local
--   wall clock when signing); `done` reports it. A 401 with a correct
--   clock, or a second one, ends with kind `auth`.
-- * One deadline bounds everything: each request gets at most the time left,
--   and any step that finds no time left ends with kind `timeout` (never a
--   raise, however late the driver comes back). One exception: a connection
--   failure (no HTTP status: `resolve`, `connect`, `network`, …) with no time
--   left for another try ends as itself, before the deadline, so the cause
--   is not hidden behind `timeout`.
--
-- The SAS token is renewed near expiry when the request is built
-- (`dps.client`), not here.
-- @module dps.poll
local core = require "dps.core"
local errors = require "dps.errors"
local retry = require "dps.retry"

local poll = {}

poll.DEFAULT_TIMEOUT = 60
poll.DEFAULT_INTERVAL = 2 -- seconds between polls without Retry-After (plus up to 1 s jitter)
poll.WINDOW, poll.LIMIT = 10, 5 -- at most LIMIT polls in any WINDOW seconds

local Machine = {}
Machine.__index = Machine

local function misuse(message)
  error("dps.poll: " .. message, 3)
end

local function check_time(now, method)
  retry.check_time("dps.poll", now, method)
end

--- Make a machine for one provisioning.
-- @tparam table opts
-- @tparam number opts.timeout overall seconds (> 0)
-- @tparam number opts.now the start, on the driver's monotonic clock (the
--   deadline is `now + timeout`; every later time must be on the same clock)
-- @tparam[opt] number opts.clock_offset seconds the driver adds to its
--   wall clock when it signs (default 0: a session that learnt the server's
--   time before passes it on)
-- @tparam[opt] function opts.jitter `jitter(low, high)` → a number in
--   `[low, high]`; default `dps.core.jitter` (OpenSSL's generator). Specs pass
--   their own to make the waits exact.
-- @treturn table the machine, idle: call `tick` first
-- @raise on a missing or wrong option
function poll.new(opts)
  if type(opts) ~= "table" then
    misuse("new expects a table of options, got " .. type(opts))
  end
  local timeout, now, jitter = opts.timeout, opts.now, opts.jitter or core.jitter
  if type(timeout) ~= "number" or timeout ~= timeout or timeout <= 0 or timeout == math.huge then
    misuse("new: timeout must be a positive number of seconds")
  end
  check_time(now, "new")
  if type(jitter) ~= "function" then
    misuse("new: jitter must be a function, got " .. type(jitter))
  end
  local offset = opts.clock_offset or 0
  if type(offset) ~= "number" or offset ~= offset or math.abs(offset) == math.huge then
    misuse("new: clock_offset must be a number of seconds")
  end
  return setmetatable({
    timeout = timeout,
    deadline = now + timeout,
    jitter = jitter,
    phase = "idle",   -- idle (tick next), sending (answer next), over
    at = now,         -- not before this time: the wait asked for
    recent = {},      -- times of the last LIMIT polls, oldest first
    failures = 0,     -- consecutive failures worth another try
    operation_id = nil,
    clock_offset = offset, -- seconds added to the driver's wall clock when signing
    clock_retried = false, -- the one retry after a 401 with a wrong clock is spent
    last_message = nil, last_info = nil,
  }, Machine)
end

--- The back-off before attempt `attempt` after a failure (`dps.retry.backoff`).
-- @function backoff
poll.backoff = retry.backoff

function Machine:_over(action)
  self.phase = "over"
  return action
end

function Machine:_fail(_, message, info)
  if self.clock_offset ~= 0 then
    info.clock_offset = self.clock_offset
  end
  return self:_over({ action = "fail", message = message, info = info })
end

-- The deadline passed (or a wait reaches past it): kind `timeout`, carrying
-- the last failure seen and the Retry-After that was too long, if any.
function Machine:_give_up(retry_after)
  local last_info = self.last_info
  if last_info and retry_after then
    last_info.retry_after = retry_after
  end
  return self:_fail(errors.deadline(self.timeout, self.last_message,
    last_info or (retry_after and { retry_after = retry_after })))
end

-- A connection failure worth another try, with no time left for one before
-- the deadline: it ends as itself (kind `resolve`, `connect`, …, what really
-- went wrong), saying how long was tried; the deadline did not pass.
function Machine:_stop_early(now)
  local tried = now - (self.deadline - self.timeout)
  return self:_fail(nil, string.format("%s (gave up after %.1f s: no time left for another try within %g s)",
    self.last_message, tried, self.timeout), self.last_info)
end

function Machine:_wait(at)
  self.at = at
  return { action = "wait", at = at }
end

--- The request the next `send` will be: `"register"` (first, or again
-- after a 409 or an answer without `operationId`) or `"operation_status"`.
-- A driver that paces registrations asks before it ticks.
-- @treturn string
function Machine:next_step()
  return self.operation_id and "operation_status" or "register"
end

--- The driver's timer fired (or the machine was just made): what now?
-- Call it when idle: first, and after each `wait`. Calling early is harmless
-- (the same `wait` comes back).
-- @tparam number now the current time on the driver's monotonic clock
-- @treturn table one of
--
--  * `{ action = "send", step = "register" | "operation_status",
--    operation_id = id (for operation_status), timeout = seconds,
--    clock_offset = seconds }`: send that request now, signed at the wall
--    clock plus `clock_offset`, with at most `timeout` seconds for it (the
--    time left; the client may cap it lower); then call `answer`.
--  * `{ action = "wait", at = time }`: call `tick` again at `at`.
--  * `{ action = "fail", message = …, info = … }`: kind `timeout`, the
--    deadline passed.
-- @raise when not idle, or `now` is not a number
function Machine:tick(now)
  check_time(now, "tick")
  if self.phase ~= "idle" then
    misuse("tick: the machine is " .. (self.phase == "sending" and "waiting for an answer" or "over"))
  end
  if now >= self.deadline then
    return self:_give_up()
  end
  if now < self.at then
    return self:_wait(self.at)
  end
  local step = self:next_step()
  if step == "operation_status" then
    local recent = self.recent
    if #recent >= poll.LIMIT then
      local free_at = recent[#recent - poll.LIMIT + 1] + poll.WINDOW
      if free_at > now then
        if free_at >= self.deadline then
          return self:_give_up()
        end
        return self:_wait(free_at)
      end
    end
    recent[#recent + 1] = now
    while #recent > poll.LIMIT do
      table.remove(recent, 1)
    end
  end
  self.phase = "sending"
  return { action = "send", step = step, operation_id = self.operation_id, timeout = self.deadline - now,
    clock_offset = self.clock_offset }
end

-- What the answer says to do: the next wait (and the server's Retry-After,
-- if it gave one), or a final action.
function Machine:_judge(step, result, meta, info)
  if result then
    local status = result.status
    if status == "assigned" then
      local state = result.registrationState
      if type(state) ~= "table" or type(state.assignedHub) ~= "string" or state.assignedHub == ""
        or type(state.deviceId) ~= "string" or state.deviceId == "" then
        return nil, nil, self:_fail(errors.protocol(step, "status 'assigned' without assignedHub and deviceId",
          meta.status))
      end
      return nil, nil, self:_over({ action = "done", state = state, result = result,
        clock_offset = self.clock_offset })
    elseif status == "failed" or status == "disabled" then
      local state = type(result.registrationState) == "table" and result.registrationState or {}
      state.status = state.status or status
      return nil, nil, self:_fail(errors.outcome(state, self.operation_id or result.operationId))
    elseif status ~= "assigning" and status ~= "unassigned" then
      return nil, nil, self:_fail(errors.protocol(step,
        "unknown registration status " .. string.format("%q", tostring(status)), meta.status))
    elseif step == "register" and (type(result.operationId) ~= "string" or result.operationId == "") then
      -- Nothing to poll: register again after a back-off.
      self.failures = self.failures + 1
      local _, message, problem = errors.protocol(step, "status '" .. status .. "' without operationId",
        meta.status)
      problem.retryable = true
      self.last_message, self.last_info = message, problem
      return retry.delay(meta.retry_after, self.jitter, self.failures), meta.retry_after
    end
    self.failures = 0
    self.operation_id = self.operation_id or result.operationId
    return meta.retry_after or self.jitter(poll.DEFAULT_INTERVAL, poll.DEFAULT_INTERVAL + 1), meta.retry_after
  end
  self.last_message, self.last_info = meta, info
  info.operation_id = info.operation_id or self.operation_id
  if info.kind == "conflict" then
    self.failures = self.failures + 1
    self.operation_id = nil -- register again
    return retry.backoff(self.jitter, self.failures)
  end
  local delay, asked = retry.after_failure(self, info, self.jitter)
  if delay then
    return delay, asked
  end
  return nil, nil, self:_fail(nil, meta, info)
end

--- The request from the last `send` is over: here is how it went.
-- @tparam number now the current time on the driver's monotonic clock
-- @param result the decoded answer (a RegistrationOperationStatus table), or
--   nil when the request failed
-- @param meta with a result: `{ status, retry_after, headers }` (see
--   `dps.response.interpret`); without: the failure's message
-- @tparam[opt] table info without a result: the failure's info (`kind`,
--   `status`, `retryable`, `retry_after`, …; see `dps.errors`)
-- @treturn table one of
--
--  * `{ action = "wait", at = time }`: call `tick` at `at`.
--  * `{ action = "done", state = registrationState, result = operation status,
--    clock_offset = seconds }`
--  * `{ action = "fail", message = …, info = … }`: the service's verdict, a
--    failure not worth another try, or kind `timeout` when the next try
--    would fall past the deadline.
-- @raise when no request is out, or on arguments of the wrong type
function Machine:answer(now, result, meta, info)
  check_time(now, "answer")
  if self.phase ~= "sending" then
    misuse("answer: no request is out (call tick first)")
  end
  if result ~= nil and (type(result) ~= "table" or type(meta) ~= "table") then
    misuse("answer: expected a result table and its meta table")
  elseif result == nil and (type(meta) ~= "string" or type(info) ~= "table") then
    misuse("answer: expected nil, message, info")
  end
  self.phase = "idle"
  local step = self:next_step()
  local delay, asked, final = self:_judge(step, result, meta, info)
  if final then
    return final
  end
  if delay >= self.deadline - now then
    if result == nil and not asked and now < self.deadline and info.status == nil then
      return self:_stop_early(now)
    end
    return self:_give_up(asked)
  end
  return self:_wait(now + delay)
end

return poll
