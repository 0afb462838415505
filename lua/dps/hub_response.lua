--- What an answer of IoT Hub's device API over HTTPS means (the hub's
-- protocol, not DPS's: iot-hub-https.md): status, headers and body in; the
-- result (`true`, a cloud-to-device message, or `nil` for "nothing waiting")
-- and its meta, or `nil, message, info`, out. Pure (no I/O, no clock: the
-- time is an argument), like `dps.response`, whose `retry_after` it uses.
-- @module dps.hub_response
local errors = require "dps.errors"
local http_time = require "dps.http_time"
local response = require "dps.response"
local json = require("cjson").new()

local hub_response = {}

--- The longest lock token accepted (it goes into the next request's path).
hub_response.MAX_LOCK_TOKEN = 1024

--- Hub error codes that say the hub is full, not that the device is refused
-- (kind `quota`): a 403 with one of these never provisions again.
hub_response.QUOTA_CODES = { IotHubQuotaExceeded = true, DeviceMaximumQueueDepthExceeded = true,
  ["403002"] = true, ["403004"] = true }

-- The hub's error code: the `iothub-errorcode` header, else the
-- `ErrorCode:Name;` part of the body's `Message`, else a numeric
-- `errorCode`. A name of letters and digits, else nil.
local function error_code(headers, doc)
  local candidates = { headers["iothub-errorcode"] }
  if type(doc) == "table" then
    if type(doc.Message) == "string" then
      candidates[#candidates + 1] = doc.Message:match("ErrorCode:%s*([%w]+)")
    end
    local numeric = errors.code(doc.errorCode)
    if numeric then candidates[#candidates + 1] = tostring(numeric) end
  end
  for i = 1, #candidates do
    local c = candidates[i]
    if type(c) == "string" and #c <= 64 and c:find("^%w+$") then
      return c
    end
  end
  return nil
end

-- The tracking ID of a hub error: `Tracking ID:…` in the body's
-- `ExceptionMessage` (or `Message`), else an `iothub-trackingid` header.
local function tracking_id(headers, doc)
  local text
  if type(doc) == "table" then
    for _, field in ipairs({ "ExceptionMessage", "Message", "trackingId" }) do
      local v = doc[field]
      if type(v) == "string" then
        text = v:match("Tracking ID:%s*([^%s,;]+)") or (field == "trackingId" and v) or nil
        if text then break end
      end
    end
  end
  text = text or headers["iothub-trackingid"]
  if type(text) ~= "string" or text == "" then return nil end
  return errors.safe((text:gsub("%-G:.*$", "")), 128)
end

--- Describe a hub error answer (status >= 300): `nil, message, info` with
-- `info.kind` from the status (`auth` 401/403, `not_found` 404, `throttled`
-- 429, `service` 5xx, …), `quota` for a 403 that says the hub or the
-- device's queue is full, `lock_lost` for 412; `error_code` (the hub's
-- name, e.g. `"DeviceNotFound"`), `tracking_id`, `retry_after`,
-- `retryable`, `step`, and for `dps.clock` `server_time`/`local_time`.
-- @tparam string step `send`, `send_batch`, `receive`, `complete`, `reject` or `abandon`
-- @tparam number status
-- @tparam table headers lower-case names
-- @tparam string body
-- @tparam number now local wall clock, seconds since the epoch (no offset)
function hub_response.failure(step, status, headers, body, now)
  local doc
  if body ~= "" then
    local ok, value = pcall(json.decode, body)
    doc = ok and type(value) == "table" and value or nil
  end
  local code = error_code(headers, doc)
  local kind = errors.kind_of_status(status)
  if status == 403 and code and hub_response.QUOTA_CODES[code] then
    kind = "quota"
  elseif status == 412 then
    kind = "lock_lost"
  end
  local info = {
    kind = kind, status = status, error_code = code, tracking_id = tracking_id(headers, doc),
    retry_after = response.retry_after(headers["retry-after"], now),
    retryable = errors.retryable(kind), step = step,
    server_time = http_time.date(headers.date),
    local_time = now,
  }
  local parts = { string.format("%s: HTTP %d", step, status) }
  local text = doc and (doc.Message or doc.message)
  if type(text) == "string" and text ~= "" then
    parts[#parts + 1] = " " .. errors.safe(text, 256)
  elseif code then
    parts[#parts + 1] = " " .. code
  end
  if info.tracking_id then
    parts[#parts + 1] = " (trackingId " .. info.tracking_id .. ")"
  end
  return nil, errors.safe(table.concat(parts), 1024), info
end

--- What is wrong with a lock token, or nil: 1-`MAX_LOCK_TOKEN` printable
-- ASCII characters without spaces (it goes into a URL path, percent-encoded).
function hub_response.lock_token_problem(value)
  if type(value) ~= "string" or value == "" or #value > hub_response.MAX_LOCK_TOKEN then
    return "is missing or longer than " .. hub_response.MAX_LOCK_TOKEN .. " characters"
  end
  if value:find("[^\33-\126]") then
    return "has a character that is not printable ASCII"
  end
  return nil
end

local SYSTEM = {
  ["iothub-messageid"] = "message_id", ["iothub-correlationid"] = "correlation_id",
  ["iothub-sequencenumber"] = "sequence_number", ["iothub-enqueuedtime"] = "enqueued_time",
  ["iothub-expiry"] = "expiry", ["iothub-to"] = "to", ["iothub-ack"] = "ack",
  ["iothub-userid"] = "user_id", ["iothub-contenttype"] = "content_type",
  ["iothub-contentencoding"] = "content_encoding",
}

--- A cloud-to-device message from a 200 answer to `receive`.
-- @treturn table `{ body, properties = { name = value }, lock_token,
--   message_id, correlation_id, sequence_number, enqueued_time, expiry,
--   delivery_count (number), to, ack, user_id, content_type,
--   content_encoding }` (absent fields are nil)
-- @return or nil, message, info (kind `protocol`: no usable lock token)
function hub_response.message(status, headers, body)
  local etag = headers.etag
  local token = type(etag) == "string" and (etag:match('^%s*W?/?"(.*)"%s*$') or etag:match("^%s*(.-)%s*$")) or nil
  local problem = hub_response.lock_token_problem(token)
  if problem then
    return errors.protocol("receive", string.format("HTTP %d: a message whose lock token (ETag) %s", status,
      problem), status)
  end
  local msg = { body = body, properties = {}, lock_token = token }
  for name, value in pairs(headers) do
    local app = name:match("^iothub%-app%-(.+)$")
    if app then
      msg.properties[app] = value
    elseif SYSTEM[name] then
      msg[SYSTEM[name]] = value
    end
  end
  local count = headers["iothub-deliverycount"]
  -- a whole number a double holds exactly, else none (a 400-digit count is no count)
  count = type(count) == "string" and #count <= 20 and count:find("^%s*%d+%s*$") and tonumber(count)
  msg.delivery_count = count and count < 2 ^ 53 and count or nil
  return msg
end

--- Interpret one answer of the hub.
-- @tparam string step as in `failure`
-- @tparam number status
-- @tparam table headers
-- @tparam string body
-- @tparam number now local wall clock (no offset)
-- @return `true` (a 2xx to send, send_batch, complete, reject, abandon);
--   for `receive` a message (200), or `false` when nothing waits (204)
-- @treturn table meta `{ status, headers }`
-- @return or nil, message, info
function hub_response.interpret(step, status, headers, body, now)
  if status < 200 or status > 299 then
    return hub_response.failure(step, status, headers, body, now)
  end
  local meta = { status = status, headers = headers }
  if step ~= "receive" then
    return true, meta
  end
  if status == 204 then
    return false, meta
  end
  local msg, message, info = hub_response.message(status, headers, body)
  if not msg then
    return nil, message, info
  end
  return msg, meta
end

return hub_response
