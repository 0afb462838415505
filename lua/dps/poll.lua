--- The provisioning engine: register, then poll until the service decides,
-- within one overall deadline.
--
-- Rules:
--
-- * Before each poll, wait the server's Retry-After (seconds or HTTP-date);
--   without one, about 2 s with jitter. A Retry-After that reaches past the
--   deadline ends provisioning at once (kind `timeout`, with `retry_after`).
-- * On 429 and 5xx, and on connection failures that may pass (`timeout`,
--   `network`, `connect`, `resolve`, `protocol`), send the same request
--   again after Retry-After or an exponential back-off with jitter.
-- * On 409, back off at random and register again.
-- * Never more than 5 polls in any 10 s (the service's per-device limit).
-- * The SAS token is renewed when it nears expiry (`dps.client`).
-- * `assigned` returns the registration state; `failed` and `disabled`
--   return an error with the service's `errorCode` and `errorMessage`.
-- * Each request gets at most the time left, so the deadline is kept even
--   when a server accepts a connection and then says nothing.
-- @module dps.poll
local core = require "dps.core"
local check = require "dps.check"
local errors = require "dps.errors"

local poll = {}

poll.DEFAULT_TIMEOUT = 60
poll.DEFAULT_INTERVAL = 2 -- seconds between polls without Retry-After (plus up to 1 s jitter)
poll.WINDOW, poll.LIMIT = 10, 5 -- at most LIMIT polls in any WINDOW seconds
poll.BACKOFF_BASE, poll.BACKOFF_CAP = 1, 30

local OPTIONS = { payload = "table", timeout = "number" }

-- Exponential back-off with jitter: attempt 1 waits 0.5-1 s, 2 waits 1-2 s, …
local function backoff(attempt)
  local ceiling = math.min(poll.BACKOFF_CAP, poll.BACKOFF_BASE * 2 ^ (attempt - 1))
  return core.jitter(ceiling / 2, ceiling)
end

--- Provision `client` (see `dps.client:provision`).
-- @tparam dps.client client
-- @tparam table opts `payload`, `timeout`
function poll.provision(client, opts)
  check.options(opts, OPTIONS, "provision", 3)
  local timeout = opts.timeout or poll.DEFAULT_TIMEOUT
  check.seconds(timeout, "timeout", 3)
  local deadline = core.monotime() + timeout
  local recent_polls = {} -- monotonic times of the last polls
  local failures = 0      -- consecutive retryable failures
  local operation_id
  local last_message, last_info

  local function remaining()
    return deadline - core.monotime()
  end

  local function give_up(retry_after)
    if last_info and retry_after then
      last_info.retry_after = retry_after
    end
    return errors.deadline(timeout, last_message, last_info or (retry_after and { retry_after = retry_after }))
  end

  -- Sleeps unless the wait reaches past the deadline.
  local function wait(seconds)
    if seconds >= remaining() then
      return false
    end
    if seconds > 0 then
      core.sleep(seconds)
    end
    return true
  end

  -- Keeps polls under LIMIT per WINDOW seconds.
  local function pace()
    local n = #recent_polls
    if n >= poll.LIMIT then
      local free_at = recent_polls[n - poll.LIMIT + 1] + poll.WINDOW
      return wait(free_at - core.monotime())
    end
    return true
  end

  while true do
    local left = remaining()
    if left <= 0 then
      return give_up()
    end

    local step = operation_id and "operation_status" or "register"
    local result, meta, info
    if step == "register" then
      result, meta, info = client:register(opts.payload, left)
    else
      if not pace() then
        return give_up()
      end
      recent_polls[#recent_polls + 1] = core.monotime()
      result, meta, info = client:operation_status(operation_id, remaining())
    end

    local delay -- seconds to wait before the next request
    local asked -- the server's Retry-After, when it gave one
    if result then
      local status = result.status
      if status == "assigned" then
        local state = result.registrationState
        if type(state) ~= "table" or type(state.assignedHub) ~= "string" or state.assignedHub == ""
          or type(state.deviceId) ~= "string" or state.deviceId == "" then
          return errors.protocol(step, "status 'assigned' without assignedHub and deviceId", meta.status)
        end
        return state, result
      elseif status == "failed" or status == "disabled" then
        local state = type(result.registrationState) == "table" and result.registrationState or {}
        state.status = state.status or status
        return errors.outcome(state, operation_id or result.operationId)
      elseif status ~= "assigning" and status ~= "unassigned" then
        return errors.protocol(step, "unknown registration status " .. string.format("%q", tostring(status)),
          meta.status)
      elseif step == "register" and (type(result.operationId) ~= "string" or result.operationId == "") then
        -- Nothing to poll: register again after a back-off.
        failures = failures + 1
        last_message, last_info = select(2, errors.protocol(step, "status '" .. status .. "' without operationId",
          meta.status))
        last_info.retryable = true
        delay, asked = meta.retry_after or backoff(failures), meta.retry_after
      else
        failures = 0
        operation_id = operation_id or result.operationId
        delay = meta.retry_after or core.jitter(poll.DEFAULT_INTERVAL, poll.DEFAULT_INTERVAL + 1)
        asked = meta.retry_after
      end
    else
      last_message, last_info = meta, info
      info.operation_id = info.operation_id or operation_id
      if info.status == 409 then
        failures = failures + 1
        operation_id = nil -- register again
        delay = backoff(failures)
      elseif info.retryable then
        failures = failures + 1
        delay, asked = info.retry_after or backoff(failures), info.retry_after
      else
        return nil, meta, info
      end
    end

    if not wait(delay) then
      return give_up(asked)
    end
  end
end

return poll
