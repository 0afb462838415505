--- What an HTTP answer of the service means, without the request that got
-- it: status, headers and body in; the decoded document and its meta, or
-- `nil, message, info`, out. Pure (no I/O, no clock: the time is an
-- argument), so the blocking client and an event loop share it.
-- @module dps.response
local errors = require "dps.errors"
local http_time = require "dps.http_time"
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
  local seconds = http_time.retry_after(value, now)
  if seconds == 0 and not value:find("^%s*%d+%s*$") then
    return nil
  end
  return seconds
end

-- Server-chosen values --------------------------------------------------
--
-- What the service sends is data, never an argument: a value the library
-- cannot use, or that is not what the protocol says it is, ends as kind
-- `protocol` here, before anything uses it (a URL, a message, a cache file).

local null = require("cjson").null
local MAX_OPERATION_ID = 1024

local function absent(value)
  return value == nil or value == null
end

local function quoted(value)
  if type(value) ~= "string" then
    return "(a " .. type(value) .. ")"
  end
  return '"' .. errors.safe(value, 64) .. '"'
end

--- What is wrong with an `operationId`, or nil when it can be used: a
-- string of 1-1024 printable ASCII characters without spaces (it goes into
-- the next request's URL path, percent-encoded, and into messages).
-- @param value
-- @treturn nil|string
function response.operation_id_problem(value)
  if type(value) ~= "string" then
    return "is not a string"
  elseif value == "" or #value > MAX_OPERATION_ID then
    return string.format("must be 1-%d characters long, got %d", MAX_OPERATION_ID, #value)
  end
  local bad = value:find("[^\33-\126]")
  if bad then
    return string.format("has a character that is not printable ASCII at position %d", bad)
  end
  return nil
end

--- What is wrong with an `assignedHub`, or nil when it is a DNS host name:
-- dot-separated labels of 1-63 letters, digits and hyphens (not first or
-- last), 253 characters at most.
-- @param value
-- @treturn nil|string
function response.host_problem(value)
  if type(value) ~= "string" or value == "" or #value > 253 then
    return "is not a DNS host name"
  end
  for label in (value .. "."):gmatch("([^.]*)%.") do
    if label == "" or #label > 63 or label:find("[^%w%-]") or label:find("^%-") or label:find("%-$") then
      return "is not a DNS host name"
    end
  end
  return nil
end

--- What is wrong with a `deviceId`, or nil when it is a valid IoT Hub device
-- ID: 1-128 characters of ASCII letters and digits and
-- `- . + % _ # * ? ! ( ) , = @ $ '` (and `:` of older documents;
-- dps-protocol.md §7.2). A `;`, which older documents allowed too, is
-- refused: it separates the fields of a connection string, so an ID holding
-- one could add fields to `hub:connection_string()` (`GatewayHostName=…`).
-- @param value
-- @treturn nil|string
function response.device_id_problem(value)
  if type(value) ~= "string" or value == "" or #value > 128 then
    return "is not a device ID (1-128 characters)"
  end
  local bad = value:find("[^%w%-%.%+%%_#%*%?!%(%),=@%$':]")
  if bad then
    return string.format("is not a device ID (position %d is not allowed)", bad)
  end
  return nil
end

-- The values of a registration state that the library and its callers use.
local function state_problem(state, where)
  if type(state) ~= "table" then
    return where .. " is not a JSON object"
  end
  if not absent(state.assignedHub) then
    local problem = response.host_problem(state.assignedHub)
    if problem then return "assignedHub " .. quoted(state.assignedHub) .. " " .. problem end
  end
  if not absent(state.deviceId) then
    local problem = response.device_id_problem(state.deviceId)
    if problem then return "deviceId " .. quoted(state.deviceId) .. " " .. problem end
  end
  return nil
end

--- What is wrong with the server-chosen values of a 2xx document, or nil:
-- the `operationId` (when present), and the `assignedHub` and `deviceId`
-- of the registration state (when present). For `registration_status` the
-- document is the registration state.
-- @tparam string step
-- @tparam table doc the decoded document
-- @treturn nil|string
function response.document_problem(step, doc)
  if step == "registration_status" then
    return state_problem(doc, "the answer")
  end
  if not absent(doc.operationId) and doc.operationId ~= "" then
    local problem = response.operation_id_problem(doc.operationId)
    if problem then return "operationId " .. quoted(doc.operationId) .. " " .. problem end
  end
  if not absent(doc.registrationState) then
    return state_problem(doc.registrationState, "registrationState")
  end
  return nil
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
--   2xx whose body is not a JSON object or holds a value that cannot be used:
--   see `document_problem`; and `dps.errors`); an error answer's info also
--   has `server_time` (its `Date` header, seconds since the epoch, when it
--   had one) and `local_time` (`now`), for `dps.clock`
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
    info.server_time = http_time.date(headers.date)
    info.local_time = now
    return nil, message, info
  end
  if type(decoded) ~= "table" then
    return errors.protocol(step, string.format("HTTP %d with a body that is not a JSON object (%s, %d bytes)",
      status, tostring(headers["content-type"]), #body), status)
  end
  local problem = response.document_problem(step, decoded)
  if problem then
    return errors.protocol(step, string.format("HTTP %d: %s", status, problem), status)
  end
  return decoded, { status = status, retry_after = retry_after, headers = headers }
end

return response
