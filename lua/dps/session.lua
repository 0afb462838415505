--- The HTTPS session of a device (internal): blocking requests over one
-- kept-alive TLS connection, so that a registration and all of its polls
-- (or a hub client's calls) share one handshake. It is a `dps.core` engine
-- with one slot, driven until each request ends; the engine's header block
-- becomes a table here.
--
-- Transport failures return `nil, message, info` with
-- `info = { kind = …, curl_code = … }` (the engine's `take`); misuse raises.
-- An HTTP status of 400 or more is a response, not a failure.
-- @module dps.session
local core = require "dps.core"

local session = {}

local Session = {}
Session.__index = Session
Session.__name = "dps.Session"

-- ASCII upper case to lower case, byte by byte: the same under any locale.
local LOWER = {}
for b = 65, 90 do
  LOWER[string.char(b)] = string.char(b + 32)
end

-- Value of a field so far, joined with an earlier field of the same name.
local function add(t, name, value)
  if name then
    local had = t[name]
    t[name] = had and had .. ", " .. value or value
  end
end

--- The header block of an engine's `take` as a table: names lower-cased,
-- values without leading or trailing blanks, repeated names joined with
-- `", "` in order, obs-fold continuation lines (starting with a space or a
-- tab) joined to their field with one space. A line without a colon, or
-- starting with one, is skipped; a continuation line with no field before
-- it is dropped.
-- @tparam string block lines, each ending in `"\n"`
-- @treturn table name → value
function session.headers(block)
  local t, name, value = {}, nil, nil
  for line in block:gmatch("([^\n]*)\n") do
    local first = line:sub(1, 1)
    if first == " " or first == "\t" then
      local more = name and line:match("^[ \t]*(.-)[ \t]*$")
      if more and more ~= "" then
        value = value .. " " .. more
      end
    else
      local n, v = line:match("^([^:]+):(.*)$")
      if n then
        add(t, name, value)
        name = n:match("^(.-)[ \t]*$"):gsub("[A-Z]", LOWER)
        value = v:match("^[ \t]*(.-)[ \t]*$")
      end
    end
  end
  add(t, name, value)
  return t
end

--- An engine's `take` with its header block as a table: `status, headers,
-- body`, or `nil, message, info` as they came.
function session.result(status, head, body)
  if status then
    return status, session.headers(head), body
  end
  return nil, head, body
end

--- A session with the options of `dps.core.engine` (TLS files, timeouts,
-- proxy, user agent, `max_body`, client certificate).
-- @tparam[opt] table opts
-- @treturn Session
-- @raise as `dps.core.engine` on its options
function session.new(opts)
  return setmetatable({ engine = core.engine(opts == nil and {} or opts, 1) }, Session)
end

-- The engine of an open session; raises at the caller of `method`.
local function engine_of(self, method)
  if getmetatable(self) ~= Session then
    error(("bad argument #1 to '%s' (dps.Session expected, got %s)"):format(method, type(self)), 3)
  end
  if not self.engine then
    error(("calling '%s' on bad self (session is closed)"):format(method), 3)
  end
  return self.engine
end

--- Performs one HTTPS request, blocking until it ends.
-- @function Session:request
-- @tparam string method `"GET"`, `"PUT"`, `"POST"` or `"DELETE"`
-- @param ... `url`, `headers`, `body`, `timeout` as `Engine:request`
-- @treturn integer HTTP status
-- @treturn table response headers (`session.headers`)
-- @treturn string response body
-- @return[2] nil, message, info as `Engine:take`
-- @raise as `Engine:request`, and on a closed session
function Session:request(...)
  local engine = engine_of(self, "request")
  if self.pending then
    -- a request cut short by an error (out of memory) or a coroutine never
    -- resumed: its slot is freed before the next one
    engine:cancel(self.pending)
    self.pending = nil
  end
  local id, message, info = engine:request(...)
  if not id then
    return nil, message, info
  end
  self.pending = id
  repeat until engine:run()[1]
  self.pending = nil
  return session.result(engine:take(id))
end

--- Counters, for specs and benchmarks.
-- @function Session:stats
-- @treturn table `{ requests = n, connects = n }`: transfers performed and
--   new connections made (a kept connection reused adds no connect)
-- @raise on a closed session
function Session:stats()
  local stats = engine_of(self, "stats"):stats()
  return { requests = stats.requests, connects = stats.connects }
end

--- Closes the session: its handle, connection and buffers are freed. Also
-- `__gc` and `__close`; closing twice is harmless.
-- @function Session:close
-- @treturn boolean `true`
function Session:close()
  local engine = self.engine
  self.engine = nil
  if engine then
    engine:close()
  end
  return true
end

Session.__gc = Session.close
Session.__close = Session.close

function Session:__tostring()
  if self.engine then -- the engine's address: "dps.core.Engine: 0x…, 0 of 1 slots running"
    return "dps.Session: " .. tostring(self.engine):match("^[^:]*: ([^,]+)")
  end
  return "dps.Session (closed)"
end

return session
