--- Argument checks shared by the public API.
-- Misuse raises with a message that names the argument and never quotes key
-- material. `level` is passed on to `error` so the message blames the caller.
-- @module dps.check
local check = {}

-- Only the DPS rules live here (IDs, ID scopes, options); byte-level rules
-- (base64 keys, expiry range, resource and key names) are the C core's.
local huge = math.huge
local find, type = string.find, type

--- Raise `message` at `level` (default 3: the caller of the checking function).
function check.fail(message, level)
  error(message, (level or 2) + 1)
end

--- A string that is not empty.
function check.nonempty_string(value, name, level)
  if type(value) ~= "string" then
    check.fail(name .. " must be a string, got " .. type(value), (level or 2) + 1)
  end
  if value == "" then
    check.fail(name .. " must not be empty", (level or 2) + 1)
  end
  if value:find("%z") then
    check.fail(name .. " must not contain NUL bytes", (level or 2) + 1)
  end
  return value
end

--- A registration ID by the service's rules: 1-128 characters of
-- `A-Z a-z 0-9 - . _ :`.
function check.registration_id(value, name, level)
  -- the usual case first, in one anchored scan (a token per device is
  -- signed in a hot loop); %w leaves out NUL, so anything else takes the
  -- path below, which names what is wrong
  if type(value) == "string" and #value <= 128 and find(value, "^[%w%-%._:]+$") then
    return value
  end
  name = name or "registration_id"
  level = (level or 2) + 1
  check.nonempty_string(value, name, level)
  if #value > 128 then
    check.fail(name .. " must be at most 128 characters, got " .. #value, level)
  end
  local bad = value:find("[^%w%-%._:]")
  if bad then
    check.fail(string.format("%s may only contain A-Z a-z 0-9 - . _ : (position %d is not allowed)",
      name, bad), level)
  end
  return value
end

-- The last ID scope found valid: a gateway signs for one scope over and over
-- (a table until then, which no caller can pass).
local last_scope = {}

--- An ID scope: opaque, but it goes into a URL path, so no separators.
function check.id_scope(value, level)
  if value == last_scope then
    return value
  end
  if type(value) == "string" and #value <= 64 and find(value, "^[%w%-%._]+$") then
    last_scope = value -- the usual case in one scan, as registration_id's
    return value
  end
  level = (level or 2) + 1
  check.nonempty_string(value, "id_scope", level)
  if #value > 64 or value:find("[^%w%-%._]") then
    check.fail("id_scope must be up to 64 characters of A-Z a-z 0-9 - . _", level)
  end
  return value
end

--- A positive number of seconds (fractions allowed).
function check.seconds(value, name, level)
  if type(value) ~= "number" or value ~= value or value <= 0 or value == huge then
    check.fail(name .. " must be a positive number of seconds", (level or 2) + 1)
  end
  return value
end

--- Options table against a schema `{ name = "string" | "number" | "table" | "boolean" }`:
-- unknown keys and wrong types raise.
function check.options(opts, schema, what, level)
  level = (level or 2) + 1
  if type(opts) ~= "table" then
    check.fail(what .. " expects a table of options, got " .. type(opts), level)
  end
  for k, v in pairs(opts) do
    local expected = schema[k]
    if expected == nil then
      check.fail(string.format("%s: unknown option '%s'", what, tostring(k)), level)
    end
    if type(v) ~= expected then
      check.fail(string.format("%s: option '%s' must be a %s, got %s", what, k, expected, type(v)), level)
    end
  end
  return opts
end

return check
