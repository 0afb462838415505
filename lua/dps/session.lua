--- The HTTPS session of a device (internal): blocking requests over one
-- kept-alive TLS connection, so that a registration and all of its polls
-- (or a hub client's calls) share one handshake. It is a `dps.core` engine
-- with one slot, driven until each request ends; the engine's header block
-- becomes a table (`dps.headers`).
--
-- Transport failures return `nil, message, info` with
-- `info = { kind = …, curl_code = … }` (the engine's `take`); misuse raises.
-- An HTTP status of 400 or more is a response, not a failure.
-- @module dps.session
local core = require "dps.core"
local headers = require "dps.headers"

local session = {}

local Session = {}
Session.__index = Session
Session.__name = "dps.Session"

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
-- @treturn table response headers (`dps.headers.parse`)
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
  local status, head, body = engine:take(id)
  if status then
    return status, headers.parse(head), body
  end
  return nil, head, body
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
