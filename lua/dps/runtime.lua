--- The runtime every driver runs on (internal): clocks, sleep, jitter and
-- the transport, in one table that specs and event loops can replace, and
-- the blocking driver of the sans-I/O machines (`dps.poll`, `dps.retry`).
--
--    rt = runtime.new{ now = …, monotime = …, sleep = …, jitter = …, transport = … }
--
-- * `now()`: the wall clock, seconds since the epoch (signing, HTTP dates)
-- * `monotime()`: a monotonic clock, seconds (deadlines, waits)
-- * `sleep(seconds)`: block (the blocking drivers only)
-- * `jitter(low, high)`: a random number in [low, high]
-- * `transport`: for the blocking client and hub, an object with
--   `request(method, url, headers, body, timeout)` → `status, headers, body`
--   or `nil, message, info`, `stats()` and `close()` (`dps.session`); for
--   the batch, an engine (`dps.core.engine`'s methods). Left out, the
--   driver opens its own from its transport options.
--
-- Transport options (one list for every entry point): `ca_file`, `ca_path`,
-- `proxy`, `user_agent`, `connect_timeout`, `request_timeout` (seconds for
-- one request), `max_body` (bytes of an answer).
-- @module dps.runtime
local core = require "dps.core"
local clock = require "dps.clock"
local errors = require "dps.errors"
local headers = require "dps.headers"
local session = require "dps.session"

local runtime = {}

runtime.DEFAULT_REQUEST_TIMEOUT = 30
runtime.DEFAULT_CONNECT_TIMEOUT = 10
--- Requests a non-blocking `step` (`dps.batch`, `dps.hubs`) starts at most:
-- each may open a connection and make a TLS handshake (1 to 2 ms of CPU
-- with libcurl on OpenSSL 3); the rest start at the next step, at once, so
-- that no step holds the event loop long.
runtime.STARTS_PER_STEP = 4

--- The transport options, by name and type.
runtime.TRANSPORT = {
  ca_file = "string", ca_path = "string", proxy = "string", user_agent = "string",
  connect_timeout = "number", request_timeout = "number", max_body = "number",
}

--- The runtime with the real clocks, sleep and jitter where `rt` gives none.
-- @tparam[opt] table rt
-- @treturn table
function runtime.new(rt)
  rt = rt or {}
  return {
    now = rt.now or core.now, monotime = rt.monotime or core.monotime,
    sleep = rt.sleep or core.sleep, jitter = rt.jitter or core.jitter,
    transport = rt.transport,
  }
end

--- The problem with the transport options in `opts`, or nil (types are
-- checked with the rest of the options).
function runtime.options_problem(opts)
  for _, name in ipairs({ "ca_file", "ca_path", "proxy" }) do
    if opts[name] ~= nil and (opts[name] == "" or opts[name]:find("%z")) then
      return name .. " must be a non-empty string without NUL bytes"
    end
  end
  for _, name in ipairs({ "connect_timeout", "request_timeout" }) do
    if opts[name] ~= nil and (opts[name] ~= opts[name] or opts[name] <= 0 or opts[name] == math.huge) then
      return name .. " must be a positive number of seconds"
    end
  end
  return nil
end

--- The options of `dps.core.engine` (and `dps.session`) from an entry
-- point's: the transport options, and the client certificate when there is one.
function runtime.engine_options(opts)
  return {
    ca_file = opts.ca_file, ca_path = opts.ca_path, proxy = opts.proxy, user_agent = opts.user_agent,
    timeout = opts.request_timeout or runtime.DEFAULT_REQUEST_TIMEOUT,
    connect_timeout = opts.connect_timeout or runtime.DEFAULT_CONNECT_TIMEOUT, max_body = opts.max_body,
    cert_file = opts.cert_file, cert = opts.cert, key_file = opts.key_file, key = opts.key,
    key_password = opts.key_password,
  }
end

--- Close the runtime's transport (once: it is dropped from `rt`).
function runtime.close(rt)
  local transport = rt.transport
  rt.transport = nil
  if transport then
    transport:close()
  end
end

--- A blocking transport (`dps.session`) from an entry point's options.
function runtime.session(opts)
  return session.new(runtime.engine_options(opts))
end

--- One answer as the machines take it: the decoded result and its meta, or
-- `nil, message, info`.
-- @tparam function interpret `dps.response.interpret` or `dps.hub_response.interpret`
-- @tparam string step
-- @tparam number now the local wall clock when the answer came
-- @param status the transport's first value: an HTTP status, or nil
-- @param head the header table (or, on a failure, the message)
-- @param body the body (or, on a failure, the info)
function runtime.reply(interpret, step, now, status, head, body)
  if not status then
    if body.kind == "tls" then
      head = head .. clock.tls_note(now)
      body.local_time = now
    end
    return errors.transport(step, head, body)
  end
  return interpret(step, status, head, body, now)
end

--- An engine's `take` as `runtime.reply` takes it (the header block as a table).
function runtime.take(engine, id)
  local status, head, body = engine:take(id)
  if status then
    head = headers.parse(head)
  end
  return status, head, body
end

--- One request on a blocking transport, read by `interpret`.
-- @tparam table rt
-- @tparam table req `{ step, method, url, headers, body }` (`dps.request`)
-- @tparam number timeout seconds at most for it
-- @tparam function interpret
function runtime.exchange(rt, req, timeout, interpret)
  local status, head, body = rt.transport:request(req.method, req.url, req.headers, req.body, timeout)
  return runtime.reply(interpret, req.step, rt.now(), status, head, body)
end

--- Drive a machine (`dps.poll`, `dps.retry.call`) to its end, blocking:
-- waits are slept, and each `send` goes through `send(act)`, which returns
-- `result, meta` or `nil, message, info`.
-- @tparam table rt
-- @tparam table machine
-- @tparam function send
-- @tparam[opt] table act an action already given (default: the first tick)
-- @treturn table the last action: `done`, `fail`, or any other the driver
--   handles itself (then it calls `drive` again with the next action)
function runtime.drive(rt, machine, send, act)
  act = act or machine:tick(rt.monotime())
  while true do
    if act.action == "wait" then
      local delay = act.at - rt.monotime()
      if delay > 0 then
        rt.sleep(delay)
      end
      act = machine:tick(rt.monotime())
    elseif act.action == "send" then
      local result, meta, info = send(act)
      act = machine:answer(rt.monotime(), result, meta, info)
    else
      return act
    end
  end
end

return runtime
