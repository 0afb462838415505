-- The Lua-side fuzz targets (fuzz/fuzz_lua.c runs one of them per binary):
-- name -> function(data). Each calls a parser of what a server or a file
-- hands the library, with the input as it comes, and checks what the parser
-- promises. These parsers return on any input: a raise, or a broken
-- promise (`check`), is a crash. FUZZ_LUA_SET_ASIDE=name,… turns the
-- named checks' failures into a line on stderr (see `check`).
--
--   headers      dps.headers.parse (an answer's header block)
--   http_time    dps.http_time.date and .retry_after (Date, Retry-After)
--   cache        dps.cache.decode (an assignment cache file), and what it
--                accepts must be written again (store_hold re-writes a
--                loaded state) and read back
--   hub_message  dps.hub_response.message (a cloud-to-device message: the
--                input is a header block, a blank line and the body), and
--                dps.hub_response.interpret of the same answer under the
--                status its last three bytes give when they are one (else 200)
local headers = require "dps.headers"
local http_time = require "dps.http_time"
local cache = require "dps.cache"
local errors = require "dps.errors"
local hub_response = require "dps.hub_response"

local NOW = 1800000000 -- 2027-01-15: a fixed local clock
local MAX_DELAY = 1e9
local END_OF_9999 = 253402300800 -- the first second of year 10000

-- Checks named in FUZZ_LUA_SET_ASIDE (names separated by commas) do not
-- crash: a finding already reported, set aside so that a long run goes on
-- looking for others. Each is told once on stderr.
local set_aside = {}
for name in (os.getenv("FUZZ_LUA_SET_ASIDE") or ""):gmatch("[%w_]+") do set_aside[name] = 0 end

local Aside = {} -- raised to end the target early, quietly

-- A promise of the parser, named: raises "check failed: [name] …" (a crash)
-- when it is broken, unless the name is set aside.
local function check(cond, name, fmt, ...)
  if cond then return end
  if set_aside[name] then
    if set_aside[name] == 0 then
      io.stderr:write("fuzz_lua: set aside: [", name, "] ", string.format(fmt, ...), "\n")
    end
    set_aside[name] = set_aside[name] + 1
    error(Aside, 0)
  end
  error("check failed: [" .. name .. "] " .. string.format(fmt, ...), 2)
end

-- A failure as the library returns them: nil, a message, info with a known kind.
local function check_failure(value, message, info, who)
  check(value == nil, "failure", "%s: a failure's first value is %s", who, tostring(value))
  check(type(message) == "string" and message ~= "", "failure", "%s: the message is %s", who, type(message))
  check(type(info) == "table" and errors.KINDS[info.kind] ~= nil, "failure", "%s: info.kind %s", who,
    type(info) == "table" and tostring(info.kind) or type(info))
end

local targets = {}

function targets.headers(data)
  local t = headers.parse(data)
  check(type(t) == "table", "headers", "parse returned %s", type(t))
  local lowered = data:lower()
  for name, value in pairs(t) do
    check(type(name) == "string" and name ~= "", "headers", "a name that is %s", type(name))
    check(not name:find("[A-Z:\n]"), "headers", "name %q has upper case, a colon or a line end", name)
    check(lowered:find(name, 1, true) ~= nil, "headers", "name %q is not in the block", name)
    check(type(value) == "string" and not value:find("\n", 1, true), "headers", "the value of %q is %s or spans lines",
      name, type(value))
  end
end

-- Whether d is a whole number of seconds os.date can write with a 4-digit year.
local function writable_date(d)
  return d >= 0 and d < END_OF_9999
end

function targets.http_time(data)
  local d = http_time.date(data)
  check(d == nil or (type(d) == "number" and d == math.floor(d)), "date", "date gave %s", tostring(d))
  if d and writable_date(d) then
    -- the IMF-fixdate of that second reads back as the same second (a
    -- 31 Feb or a leap second has moved on to a real date)
    local again = http_time.date(os.date("!%a, %d %b %Y %H:%M:%S GMT", d))
    check(again == d, "date_round_trip", "date %s reads back as %s", string.format("%.0f", d), tostring(again))
  end
  local r = http_time.retry_after(data, NOW)
  check(r == nil or (type(r) == "number" and r >= 0 and r <= MAX_DELAY), "retry_after", "retry_after gave %s",
    tostring(r))
  if d then
    check(r == math.max(0, math.min(d - NOW, MAX_DELAY)), "retry_after", "retry_after of a date gave %s", tostring(r))
  end
end

local IDENTITY = { id_scope = "0ne00000001", registration_id = "dev-01",
  endpoint = "https://global.azure-devices-provisioning.net", credential = "sas:fuzz" }

function targets.cache(data)
  local doc, problem = cache.decode(data, IDENTITY)
  if not doc then
    check(type(problem) == "string" and problem ~= "", "decode", "decode failed without a problem")
    return
  end
  check(type(doc) == "table" and type(doc.state) == "table", "decode", "decode gave no state")
  check(type(doc.state.assignedHub) == "string" and type(doc.state.deviceId) == "string", "decode",
    "decode gave a state without assignedHub and deviceId")
  local ok, text = pcall(cache.encode, IDENTITY, doc.state, NOW, doc.hold)
  check(ok, "encode_accepted", "encode raised on a state decode accepted: %s", tostring(text))
  local again, why = cache.decode(text, IDENTITY)
  check(again ~= nil, "encode_accepted", "what encode wrote of an accepted state is refused: %s", tostring(why))
end

function targets.hub_message(data)
  local sep = data:find("\n\n", 1, true)
  local block, body = data, ""
  if sep then
    block, body = data:sub(1, sep), data:sub(sep + 2)
  end
  local h = headers.parse(block)
  local msg, message, info = hub_response.message(200, h, body)
  if msg == nil then
    check_failure(msg, message, info, "message")
  else
    check(type(msg) == "table" and msg.body == body, "message", "message gave %s", type(msg))
    check(hub_response.lock_token_problem(msg.lock_token) == nil, "message", "a message with a bad lock token")
    check(type(msg.properties) == "table", "message", "no properties")
    for k, v in pairs(msg.properties) do
      check(type(k) == "string" and type(v) == "string", "message", "a property that is no string")
    end
    local count = msg.delivery_count
    check(count == nil or (type(count) == "number" and count >= 0 and count == math.floor(count)
      and count < 2 ^ 53), "delivery_count", "delivery_count %s is not a whole number JSON can carry", tostring(count))
  end
  -- the same answer under any status: a result or a classified failure
  local code = tonumber(data:match("(%d%d%d)$") or "")
  local status = code and code >= 100 and code <= 599 and code or 200
  local result, meta, finfo = hub_response.interpret("receive", status, h, body, NOW)
  if result == nil then
    check_failure(result, meta, finfo, "interpret " .. status)
  else
    check(type(meta) == "table" and meta.status == status, "interpret", "interpret %d gave no meta", status)
  end
end

-- Each target as the driver calls it: a finding set aside ends it quietly.
local driven = {}
for name, target in pairs(targets) do
  driven[name] = function(data)
    local ok, err = pcall(target, data)
    if not ok and err ~= Aside then
      error(err, 0)
    end
  end
end
return driven
