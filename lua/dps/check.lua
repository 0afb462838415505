--- Argument checks shared by the public API (internal).
--
-- Each check returns nil when the value is good and else a problem: a
-- message that names the argument and never quotes key material. Only the
-- public functions raise, at their caller's line:
--
--    local problem = check.id_scope(opts.id_scope) or check.seconds(opts.timeout, "timeout", true)
--    if problem then error("dps.new: " .. problem, 2) end
-- @module dps.check
local check = {}

-- Only the DPS rules live here (IDs, ID scopes, options); byte-level rules
-- (base64 keys, expiry range, resource and key names) are the C core's.
local huge = math.huge
local find, type = string.find, type

--- A string that is not empty and holds no NUL byte.
-- @return nil or a problem
function check.string(value, name)
  if type(value) ~= "string" then
    return name .. " must be a string, got " .. type(value)
  elseif value == "" then
    return name .. " must not be empty"
  elseif value:find("%z") then
    return name .. " must not contain NUL bytes"
  end
  return nil
end

--- A registration ID by the service's rules: 1-128 characters of
-- `A-Z a-z 0-9 - . _ :`.
-- @return nil or a problem
function check.registration_id(value, name)
  -- the usual case first, in one anchored scan (a token per device is
  -- signed in a hot loop); %w leaves out NUL
  if type(value) == "string" and #value <= 128 and find(value, "^[%w%-%._:]+$") then
    return nil
  end
  name = name or "registration_id"
  local problem = check.string(value, name)
  if problem then
    return problem
  elseif #value > 128 then
    return name .. " must be at most 128 characters, got " .. #value
  end
  return string.format("%s may only contain A-Z a-z 0-9 - . _ : (position %d is not allowed)",
    name, value:find("[^%w%-%._:]"))
end

-- The last ID scope found valid: a gateway signs for one scope over and over
-- (a table until then, which no caller can pass).
local last_scope = {}

--- An ID scope: opaque, but it goes into a URL path, so no separators.
-- @return nil or a problem
function check.id_scope(value)
  if value == last_scope then
    return nil
  end
  if type(value) == "string" and #value <= 64 and find(value, "^[%w%-%._]+$") then
    last_scope = value -- the usual case in one scan, as registration_id's
    return nil
  end
  return check.string(value, "id_scope") or "id_scope must be up to 64 characters of A-Z a-z 0-9 - . _"
end

--- A positive number of seconds (fractions allowed); nil passes when
-- `optional`.
-- @return nil or a problem
function check.seconds(value, name, optional)
  if optional and value == nil then
    return nil
  end
  if type(value) ~= "number" or value ~= value or value <= 0 or value == huge then
    return name .. " must be a positive number of seconds"
  end
  return nil
end

--- An options table against a schema `{ name = "string" | "number" |
-- "table" | "boolean" | "function" }`: an unknown key or a wrong type is a
-- problem, named with `what` (the public function).
-- @return nil or a problem
function check.options(opts, schema, what)
  if type(opts) ~= "table" then
    return what .. " expects a table of options, got " .. type(opts)
  end
  for k, v in pairs(opts) do
    local expected = schema[k]
    if expected == nil then
      return string.format("%s: unknown option '%s'", what, tostring(k))
    elseif type(v) ~= expected then
      return string.format("%s: option '%s' must be a %s, got %s", what, k, expected, type(v))
    end
  end
  return nil
end

--- A schema with more options than another: `extend(base, { more = "table" })`.
function check.extend(base, more)
  local out = {}
  for k, v in pairs(base) do out[k] = v end
  for k, v in pairs(more) do out[k] = v end
  return out
end

return check
