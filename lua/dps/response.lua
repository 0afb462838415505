--- What an HTTP answer of the service means, without the request that got
-- it: status, headers and body in; the decoded document and its meta, or
-- `nil, message, info`, out. Pure (no I/O, no clock: the time is an
-- argument), so the blocking client and an event loop share it.
-- @module dps.response
local core = require "dps.core"
local errors = require "dps.errors"
local json = require("cjson").new()

local response = {}

--- Seconds to wait from a Retry-After value, or nil when there is none worth
-- following: absent, negative, fractional, garbage, or an HTTP-date that is
-- not in the future (our clock and the server's disagree: wait the default
-- instead of hammering). Delay-seconds `0` is kept: the server asked for it.
-- @tparam[opt] string value the header value
-- @tparam number now wall-clock seconds since the epoch, for the date form
-- @treturn number|nil
function response.retry_after(value, now)
  if type(value) ~= "string" then
    return nil
  end
  local seconds = core.retry_after(value, now)
  if seconds == 0 and not value:find("^%s*%d+%s*$") then
    return nil
  end
  return seconds
end

--- Interpret one answer.
-- @tparam string step `register`, `operation_status` or `registration_status`
-- @tparam number status the HTTP status
-- @tparam table headers response headers (lower-case names)
-- @tparam string body the response body
-- @tparam number now the local wall clock, seconds since the epoch, without
--   any offset (for an HTTP-date Retry-After, and `info.local_time`)
-- @treturn table the decoded JSON object
-- @treturn table meta `{ status, retry_after, headers }` (`retry_after` in
--   seconds, when the answer gave one worth following)
-- @return or nil, message, info (kind from the status, or `protocol` for a
--   2xx whose body is not a JSON object; see `dps.errors`); an error answer's
--   info also has `server_time` (its `Date` header, seconds since the epoch,
--   when it had one) and `local_time` (`now`), for `dps.clock`
function response.interpret(step, status, headers, body, now)
  local retry_after = response.retry_after(headers["retry-after"], now)
  local decoded
  if body ~= "" then
    local ok, value = pcall(json.decode, body)
    decoded = ok and value or nil
  end
  if status < 200 or status > 299 then
    local _, message, info = errors.service(step, status, headers, decoded, retry_after)
    -- the server's clock and ours, for dps.clock's rule on a 401
    info.server_time = type(headers.date) == "string" and core.http_date(headers.date) or nil
    info.local_time = now
    return nil, message, info
  end
  if type(decoded) ~= "table" then
    return errors.protocol(step, string.format("HTTP %d with a body that is not a JSON object (%s, %d bytes)",
      status, tostring(headers["content-type"]), #body), status)
  end
  return decoded, { status = status, retry_after = retry_after, headers = headers }
end

return response
