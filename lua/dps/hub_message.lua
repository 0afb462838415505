--- How one message to the hub goes on the wire (internal): its
-- `iothub-*` headers (application properties as `iothub-app-{name}`), its
-- size limit, and the JSON body of a batch
-- (`application/vnd.microsoft.iothub.json`, bodies in base64). Pure
-- functions; misuse raises at `level` as `check.fail` counts it.
-- @module dps.hub_message
local core = require "dps.core"
local check = require "dps.check"
local json = require("cjson").new()

local message = {}

message.MAX_BYTES = 256 * 1024 -- the hub refuses larger messages (and batches)
message.BATCH_TYPE = "application/vnd.microsoft.iothub.json"

local SYSTEM_HEADERS = {
  message_id = "iothub-messageid", correlation_id = "iothub-correlationid",
  content_type = "iothub-contenttype", content_encoding = "iothub-contentencoding",
}
local MESSAGE_OPTIONS = { properties = "table", message_id = "string", correlation_id = "string",
  content_type = "string", content_encoding = "string" }

local function header_value(value, what, level)
  if type(value) == "number" or type(value) == "boolean" then
    value = tostring(value)
  end
  if type(value) ~= "string" then
    check.fail(what .. " must be a string, number or boolean, got " .. type(value), level + 1)
  end
  if value:find("[%c\127]") then
    check.fail(what .. " must not contain control characters", level + 1)
  end
  return value
end

-- The `iothub-*` headers of one message (names as the wire has them).
function message.headers(opts, what, level)
  level = level + 1
  check.options(opts, MESSAGE_OPTIONS, what, level)
  local out = {}
  for name, header in pairs(SYSTEM_HEADERS) do
    if opts[name] ~= nil then
      out[header] = header_value(opts[name], what .. ": " .. name, level)
    end
  end
  for k, v in pairs(opts.properties or {}) do
    if type(k) ~= "string" or not k:find("^[%w!#%$%%&'%*%+%-%.%^_`|~]+$") or #k > 128 then
      check.fail(string.format("%s: property names must be 1-128 characters of letters, digits and "
        .. "!#$%%&'*+-.^_`|~ (an HTTP header name), got %s", what, type(k) == "string" and string.format("%q", k)
        or "a " .. type(k)), level)
    end
    out["iothub-app-" .. k] = header_value(v, what .. ": property " .. k, level)
  end
  return out
end

function message.body(body, what, level)
  if type(body) ~= "string" then
    check.fail(what .. ": the body must be a string, got " .. type(body), level + 1)
  end
  return body
end

function message.check_size(size, what, level)
  if size > message.MAX_BYTES then
    check.fail(string.format("%s: %d bytes; the hub takes at most %d", what, size, message.MAX_BYTES),
      level + 1)
  end
end

--- The JSON body of a batch (pure): `[{"body":"<base64>","properties":{"iothub-app-k":"v", …}}, …]`;
-- system properties keep their header names in `properties` too.
-- @tparam table messages `{ { body = "…", properties = {…}, message_id = …, … }, … }`
-- @treturn string
-- @raise on an empty list or a bad message
function message.encode_batch(messages, level)
  level = (level or 2) + 1
  if type(messages) ~= "table" or messages[1] == nil then
    check.fail("send_batch: give a non-empty list of messages", level)
  end
  local items = {}
  for i, m in ipairs(messages) do
    local what = "send_batch: message " .. i
    if type(m) ~= "table" then
      check.fail(what .. " must be a table { body = …, properties = … }, got " .. type(m), level)
    end
    local opts = {}
    for k, v in pairs(m) do
      if k ~= "body" then opts[k] = v end
    end
    local props = message.headers(opts, what, level)
    items[i] = { body = core.base64_encode(message.body(m.body, what, level)), properties = props }
    if next(props) == nil then
      items[i].properties = json.decode("{}") -- an empty object, not an array
    end
  end
  local text = json.encode(items):gsub("\\/", "/")
  return text
end

return message
