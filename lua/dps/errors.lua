--- How failures are described: every operational failure is
-- `nil, message, info`, where `info.kind` says what went wrong and, when
-- known, `status`, `error_code`, `tracking_id`, `operation_id`,
-- `retry_after` and `retryable` say more.
--
-- Kinds from the connection (the C core): `resolve`, `connect`, `proxy`,
-- `tls`, `credentials`, `timeout`, `network`, `protocol`, `too_large`,
-- `config`, `oom`. Kinds from the service's answer: `bad_request` (400),
-- `auth` (401, 403), `not_found` (404), `conflict` (409), `throttled` (429),
-- `service` (5xx), `http` (any other unexpected status); from the hub also `quota`
-- (403: the hub's quota or the device's queue is full) and `lock_lost` (412). Kinds of the
-- outcome: `failed` and `disabled` (the service's final registration state),
-- `timeout` (the overall deadline).
--
-- `errors.KINDS[kind]` is `{ retryable = bool }`: whether a failure of that
-- kind is worth another try (`errors.retryable`).
-- @module dps.errors
local errors = {}

-- errors.KINDS: each `info.kind` the library returns, and whether a failure
-- of that kind is worth another try before the deadline. (A plain comment:
-- LDoc cannot read this table.)
errors.KINDS = {
  -- the connection (the C core)
  resolve = { retryable = true },
  connect = { retryable = true },
  proxy = { retryable = false },
  tls = { retryable = false },
  credentials = { retryable = false },
  timeout = { retryable = true },
  network = { retryable = true },
  -- broken HTTP is worth another try; errors.protocol marks an answer that
  -- breaks the DPS protocol as not retryable
  protocol = { retryable = true },
  too_large = { retryable = false },
  config = { retryable = false },
  oom = { retryable = false },
  -- the service's answer
  bad_request = { retryable = false },
  auth = { retryable = false },
  not_found = { retryable = false },
  conflict = { retryable = true },
  throttled = { retryable = true },
  service = { retryable = true },
  http = { retryable = false },
  -- the hub's answer (dps.hub_response): a full quota or device queue (403), a lost message lock (412)
  quota = { retryable = false },
  lock_lost = { retryable = false },
  -- the outcome
  failed = { retryable = false },
  disabled = { retryable = false },
}
local KINDS = errors.KINDS

--- Whether a failure of this kind is worth another try (false for a kind
-- not in `KINDS`).
function errors.retryable(kind)
  local entry = KINDS[kind]
  return entry ~= nil and entry.retryable == true
end

-- Server text in messages -----------------------------------------------

-- Code points kept out of messages even in valid UTF-8: C1 controls, line
-- and paragraph separators, and the bidirectional overrides that can make a
-- terminal show text in another order than it is.
local function unsafe_code_point(cp)
  return (cp >= 0x80 and cp <= 0x9F) or cp == 0x2028 or cp == 0x2029 or (cp >= 0x202A and cp <= 0x202E)
    or (cp >= 0x2066 and cp <= 0x2069) or cp == 0x200E or cp == 0x200F or cp == 0x061C
end

-- The length of the valid UTF-8 sequence at byte i of s (2-4) and its code
-- point, or nil (overlong forms, surrogates and values past U+10FFFF are
-- not valid).
local function utf8_at(s, i, b)
  local n, cp, min
  if b >= 0xC2 and b <= 0xDF then n, cp, min = 2, b - 0xC0, 0x80
  elseif b >= 0xE0 and b <= 0xEF then n, cp, min = 3, b - 0xE0, 0x800
  elseif b >= 0xF0 and b <= 0xF4 then n, cp, min = 4, b - 0xF0, 0x10000
  else return nil end
  for k = 1, n - 1 do
    local c = s:byte(i + k)
    if not c or c < 0x80 or c > 0xBF then return nil end
    cp = cp * 64 + (c - 0x80)
  end
  if cp < min or cp > 0x10FFFF or (cp >= 0xD800 and cp <= 0xDFFF) then return nil end
  return n, cp
end

local ESCAPES = { [9] = "\\t", [10] = "\\n", [13] = "\\r" }

--- Whether a value given where a file name goes may be a secret given by
-- mistake (a key, a PEM block, a connection string, a pass phrase with
-- spaces or quotes): such a value is never repeated in a message.
-- @tparam string text
-- @treturn boolean
-- @local (internal: how the library builds its failures)
function errors.may_be_secret(text)
  return text:find("[%s%c\"';]") ~= nil or text:find("-----", 1, true) ~= nil
    or text:lower():find("key=", 1, true) ~= nil
    or (#text >= 16 and text:find("^[%w+/=_%-]+$") ~= nil)
end

--- Text from outside (a server's message, a header, a tracking ID) made
-- safe for a one-line message: SAS signatures redacted (`sig=<redacted>`,
-- also percent-encoded), control characters, invalid UTF-8, C1 controls,
-- line separators and bidirectional overrides escaped (`\n`, `\x1b`,
-- `\u{202e}`), and at most `limit` bytes (default 512) with a note of what
-- was cut. Every message of `dps.errors` goes through it, so every caller
-- gets safe messages.
-- @param value any value (`tostring` is applied)
-- @tparam[opt] number limit
-- @treturn string
function errors.safe(value, limit)
  limit = limit or 512
  local s = tostring(value)
  local total = #s
  if total > limit + 256 then
    -- what can be shown comes from the first `limit` bytes; the rest is
    -- room to redact a signature that starts among them
    s = s:sub(1, limit + 256)
  end
  s = s:gsub("([Ss][Ii][Gg]=)[%w%%+/=_%-]+", "%1<redacted>")
  s = s:gsub("([Ss][Ii][Gg]%%3[Dd])[%w%%+/=_%-]+", "%1<redacted>")
  if #s <= limit and not s:find("[^\32-\126]") then
    return s
  end
  local out, size, i, len = {}, 0, 1, #s
  while i <= len do
    local b = s:byte(i)
    local piece, n
    n = 1
    if b >= 32 and b <= 126 then
      piece = string.char(b)
    elseif b < 128 then
      piece = ESCAPES[b] or string.format("\\x%02x", b)
    else
      local cp
      n, cp = utf8_at(s, i, b)
      if not n then
        n, piece = 1, string.format("\\x%02x", b)
      elseif unsafe_code_point(cp) then
        piece = string.format("\\u{%x}", cp)
      else
        piece = s:sub(i, i + n - 1)
      end
    end
    if size + #piece > limit then
      out[#out + 1] = string.format("... (%d bytes in all)", total)
      break
    end
    out[#out + 1] = piece
    size = size + #piece
    i = i + n
  end
  return table.concat(out)
end

--- An `errorCode` as the service means it: an integer (an integer of Lua
-- 5.3+, not `404001.0`), from a JSON number or a header's digits; nil for
-- anything else (`400.5`, `NaN`, `1e300`, `"0x10"`, a table), which never
-- raises. The service's codes are int32 (dps-protocol.md §4.3).
-- @param value
-- @treturn integer|nil
-- @local (internal: how the library builds its failures)
function errors.code(value)
  if type(value) == "string" then
    if #value > 32 or not value:find("^%s*%-?%d+%s*$") then
      return nil
    end
    value = tonumber(value)
  end
  if type(value) ~= "number" or value ~= value or value ~= math.floor(value)
    or value < -2147483648 or value > 2147483647 then
    return nil
  end
  local tointeger = rawget(math, "tointeger") -- Lua 5.3+: 404001, not 404001.0
  return tointeger and tointeger(value) or value
end

local KIND_OF_STATUS = {
  [400] = "bad_request", [401] = "auth", [403] = "auth", [404] = "not_found",
  [409] = "conflict", [429] = "throttled",
}

--- The kind of an HTTP status that is not a success.
-- @local (internal: how the library builds its failures)
function errors.kind_of_status(status)
  if KIND_OF_STATUS[status] then
    return KIND_OF_STATUS[status]
  elseif status >= 500 and status <= 599 then
    return "service"
  end
  return "http"
end

--- Whether an HTTP status that is not a success is worth another try:
-- 409, 429 and 5xx, by the kind it maps to.
-- @local (internal: how the library builds its failures)
function errors.retryable_status(status)
  return errors.retryable(errors.kind_of_status(status))
end

--- A transport failure from the C core, with the step that failed.
-- @treturn nil
-- @treturn string message
-- @treturn table info
-- @local (internal: how the library builds its failures)
function errors.transport(step, message, info)
  info.retryable = errors.retryable(info.kind)
  info.step = step
  return nil, errors.safe(step .. ": " .. tostring(message), 1024), info
end

--- A service error answer (status >= 300) with its DPS error body, if any.
-- The service's text (`message`, `trackingId`) is passed through
-- `errors.safe`; `errorCode` (body, else the `x-ms-error-code` header) is
-- `info.error_code` when it is an integer (`errors.code`).
-- @tparam string step `register`, `operation_status` or `registration_status`
-- @tparam number status HTTP status
-- @tparam table headers response headers (lower-case names)
-- @param body decoded JSON body (a table) or nil
-- @tparam[opt] number retry_after seconds, when the response said
-- @local (internal: how the library builds its failures)
function errors.service(step, status, headers, body, retry_after)
  local details = type(body) == "table" and body or {}
  local error_code = errors.code(details.errorCode) or errors.code(headers["x-ms-error-code"])
  local tracking_id = type(details.trackingId) == "string" and details.trackingId ~= ""
    and errors.safe(details.trackingId, 128) or nil
  local kind = errors.kind_of_status(status)
  local info = {
    kind = kind,
    status = status,
    error_code = error_code,
    tracking_id = tracking_id,
    retry_after = retry_after,
    retryable = errors.retryable(kind),
    step = step,
  }
  local parts = { string.format("%s: HTTP %d", step, status) }
  if type(details.message) == "string" and details.message ~= "" then
    parts[#parts + 1] = " " .. errors.safe(details.message)
  end
  if error_code or tracking_id then
    local ids = {}
    if error_code then ids[#ids + 1] = "errorCode " .. tostring(error_code) end
    if tracking_id then ids[#ids + 1] = "trackingId " .. tracking_id end
    parts[#parts + 1] = " (" .. table.concat(ids, ", ") .. ")"
  end
  return nil, errors.safe(table.concat(parts), 1024), info
end

--- A response that does not follow the protocol (`what` may quote the
-- server's values: it is passed through `errors.safe`).
-- @local (internal: how the library builds its failures)
function errors.protocol(step, what, status)
  return nil, errors.safe(step .. ": " .. tostring(what), 1024),
    { kind = "protocol", status = status, retryable = false, step = step }
end

--- The service's final word on a registration: `failed` or `disabled`.
-- @tparam table state the registration state (`status`, `errorCode`, `errorMessage`)
-- @param[opt] operation_id
-- @local (internal: how the library builds its failures)
function errors.outcome(state, operation_id)
  local kind = state.status == "disabled" and "disabled" or "failed"
  local code = errors.code(state.errorCode)
  local message = "registration " .. kind
  if type(state.errorMessage) == "string" and state.errorMessage ~= "" then
    message = message .. ": " .. errors.safe(state.errorMessage)
  end
  if code then
    message = message .. " (errorCode " .. tostring(code) .. ")"
  end
  return nil, errors.safe(message, 1024), {
    kind = kind, status = 200, error_code = code, operation_id = operation_id,
    registration_state = state, retryable = errors.retryable(kind), step = "provision",
  }
end

--- The overall deadline passed (or a Retry-After reaches past it).
-- @local (internal: how the library builds its failures)
function errors.deadline(timeout, last_message, last_info)
  local message = string.format("provision: no assignment within %g s", timeout)
  if last_message then
    message = message .. " (last: " .. last_message .. ")"
  end
  local info = { kind = "timeout", retryable = errors.retryable("timeout"), step = "provision" }
  if last_info then
    info.status, info.error_code, info.tracking_id = last_info.status, last_info.error_code, last_info.tracking_id
    info.retry_after, info.operation_id, info.last_kind = last_info.retry_after, last_info.operation_id, last_info.kind
  end
  return nil, message, info
end

return errors
