--- How one message to the hub goes on the wire (internal): its
-- `iothub-*` headers (application properties as `iothub-app-{name}`), its
-- size limit, and the JSON body of a batch
-- (`application/vnd.microsoft.iothub.json`, bodies in base64). Pure
-- functions; a problem is returned, for the public function to raise.
-- @module dps.hub_message
local core = require "dps.core"
local check = require "dps.check"
local hub_response = require "dps.hub_response"
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

-- A property or system header's value as text, or nil and a problem.
local function header_value(value, what)
  if type(value) == "number" or type(value) == "boolean" then
    value = tostring(value)
  end
  if type(value) ~= "string" then
    return nil, what .. " must be a string, number or boolean, got " .. type(value)
  elseif value:find("[%c\127]") then
    return nil, what .. " must not contain control characters"
  end
  return value
end

--- The `iothub-*` headers of one message (names as the wire has them), or
-- nil and a problem.
function message.headers(opts, what)
  local problem = check.options(opts, MESSAGE_OPTIONS, what)
  if problem then return nil, problem end
  local out = {}
  for name, header in pairs(SYSTEM_HEADERS) do
    if opts[name] ~= nil then
      out[header], problem = header_value(opts[name], what .. ": " .. name)
      if problem then return nil, problem end
    end
  end
  for k, v in pairs(opts.properties or {}) do
    if type(k) ~= "string" or not k:find("^[%w!#%$%%&'%*%+%-%.%^_`|~]+$") or #k > 128 then
      return nil, string.format("%s: property names must be 1-128 characters of letters, digits and "
        .. "!#$%%&'*+-.^_`|~ (an HTTP header name), got %s", what, type(k) == "string" and string.format("%q", k)
        or "a " .. type(k))
    end
    out["iothub-app-" .. k], problem = header_value(v, what .. ": property " .. k)
    if problem then return nil, problem end
  end
  return out
end

--- The problem with a message body, or nil.
function message.body_problem(body, what)
  if type(body) ~= "string" then
    return what .. ": the body must be a string, got " .. type(body)
  end
  return message.size_problem(#body, what)
end

--- The problem with a message (or batch) of `size` bytes, or nil.
function message.size_problem(size, what)
  if size > message.MAX_BYTES then
    return string.format("%s: %d bytes; the hub takes at most %d", what, size, message.MAX_BYTES)
  end
end

--- The JSON body of a batch: `[{"body":"<base64>","properties":{"iothub-app-k":"v", …}}, …]`;
-- system properties keep their header names in `properties` too.
-- @tparam table messages `{ { body = "…", properties = {…}, message_id = …, … }, … }`
-- @return the text, or nil and a problem (an empty list, a bad message, over the size limit)
function message.encode_batch(messages)
  if type(messages) ~= "table" or messages[1] == nil then
    return nil, "send_batch: give a non-empty list of messages"
  end
  local items = {}
  for i, m in ipairs(messages) do
    local what = "send_batch: message " .. i
    if type(m) ~= "table" then
      return nil, what .. " must be a table { body = …, properties = … }, got " .. type(m)
    end
    local opts = {}
    for k, v in pairs(m) do
      if k ~= "body" then opts[k] = v end
    end
    local props, problem = message.headers(opts, what)
    problem = problem or (type(m.body) ~= "string" and (what .. ": the body must be a string, got " .. type(m.body)))
    if problem then return nil, problem end
    items[i] = { body = core.base64_encode(m.body), properties = props }
    if next(props) == nil then
      items[i].properties = json.decode("{}") -- an empty object, not an array
    end
  end
  local text = json.encode(items):gsub("\\/", "/")
  local problem = message.size_problem(#text, "send_batch")
  if problem then return nil, problem end
  return text
end

-- The routes ----------------------------------------------------------------

local EVENTS, DEVICEBOUND = "/messages/events", "/messages/devicebound"
local BATCH_HEADERS = { ["content-type"] = message.BATCH_TYPE }

--- The call of one hub route, as `dps.request`'s `hub_request` takes it:
-- `send` (`arg`: the message's headers), `send_batch` (`body`: the encoded
-- batch), `receive`, and the settles `complete`, `reject`, `abandon`
-- (`arg`: the lock token, percent-encoded into the path).
-- @tparam string step
-- @param arg
-- @tparam[opt] string body
-- @treturn table `{ step, method, path, to, query, headers, body }`
function message.call(step, arg, body)
  if step == "send" then
    return { step = step, method = "POST", path = EVENTS, to = EVENTS, headers = arg, body = body }
  elseif step == "send_batch" then
    return { step = step, method = "POST", path = EVENTS, to = EVENTS, headers = BATCH_HEADERS, body = body }
  elseif step == "receive" then
    return { step = step, method = "GET", path = DEVICEBOUND, to = DEVICEBOUND }
  end
  local path = DEVICEBOUND .. "/" .. core.url_encode(arg)
  local call = { step = step, to = DEVICEBOUND, headers = { ["if-match"] = '"' .. arg .. '"' } }
  if step == "abandon" then
    call.method, call.path, call.body = "POST", path .. "/abandon", ""
  else
    call.method, call.path = "DELETE", path
    call.query = step == "reject" and "&reject" or nil
  end
  return call
end

--- The lock token of a message from receive (or the token itself), or nil
-- and a problem naming `who` and `what` (e.g. "dps.hub", "complete").
function message.lock_token(msg, who, what)
  local token = type(msg) == "table" and msg.lock_token or msg
  if type(token) ~= "string" or hub_response.lock_token_problem(token) then
    return nil, who .. ": " .. what .. " needs a message from receive (or its lock_token)"
  end
  return token
end

return message
