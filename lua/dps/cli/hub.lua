--- The hub's commands of `dps`: `send` (one message) and `receive` (one
-- cloud-to-device message, printed as JSON). Both provision first (from
-- `--cache` when it matches) and provision again, once, when the hub refuses
-- the device (`dps.connect`). Exit codes and messages as for `provision`.
-- @module dps.cli.hub
local dps = require "dps"
local output = require "dps.cli.output"
local commands = require "dps.cli.commands"
local json = require("cjson").new()

local usage_error = output.usage_error
local EXIT = output.EXIT

local hub_cli = {}

-- The hub client (dps.connect), or nil and the exit code of a failure.
local function connect(opts, source, term, action)
  local o = commands.client_options(opts, source)
  o.cache, o.hub_endpoint = opts.cache, opts["hub-endpoint"]
  o.payload = commands.decode_payload(opts.payload)
  local hub, message, info = commands.call_named(source.names, dps.connect, o)
  if not hub then
    return nil, output.report(term, output.in_flags(message, source.names), info)
  end
  term.say(string.format("%s %s as device %s (assignment from %s) with %s", action, hub.host, hub.device_id,
    hub.provisioned and hub.provisioned.source or "?", commands.describe_source(source)))
  return hub
end

-- Calls a hub method; misuse the library raises (a bad property name, …)
-- is a usage error. The hub is closed whatever happens.
local function with_hub(hub, f)
  local results = { pcall(f) }
  local stats = hub:stats()
  hub:close()
  if not results[1] then
    if output.is_failure(results[2]) then error(results[2], 0) end
    usage_error(output.strip_position(results[2]))
  end
  return results[2], results[3], results[4], stats
end

local function plural(n, word)
  return string.format("%d %s%s", n, word, n == 1 and "" or "s")
end

local function summary(stats)
  if not stats then return "" end
  return string.format("; %s on %s to the hub%s", plural(stats.requests, "request"),
    plural(stats.connects, "TLS connection"), stats.reprovisions > 0 and
    ("; provisioned again " .. plural(stats.reprovisions, "time")) or "")
end

local function properties(list)
  local out = {}
  for _, pair in ipairs(list or {}) do
    local name, value = pair:match("^([^=]+)=(.*)$")
    if not name then
      usage_error("--property takes NAME=VALUE, got " .. string.format("%q", pair:sub(1, 64)))
    end
    if out[name] then
      usage_error("--property " .. name .. " given more than once")
    end
    out[name] = value
  end
  return out
end

function hub_cli.send(opts, source, term)
  local data = opts.data
  if data == nil then
    usage_error("give the message: dps send … DATA, or - to read it from stdin")
  end
  if data == "-" then
    data = term.stdin:read("*a") or ""
  end
  local message_opts = { properties = properties(opts.property), content_type = opts["content-type"],
    content_encoding = opts["content-encoding"], message_id = opts["message-id"] }
  local hub, code = connect(opts, source, term, "sending to")
  if not hub then return code end
  local ok, message, info, stats = with_hub(hub, function() return hub:send(data, message_opts) end)
  if not ok then
    return output.report(term, message, info)
  end
  term.say(string.format("sent %s%s", plural(#data, "byte"), summary(stats)))
  return EXIT.ok
end

local DONE = { complete = "completed", reject = "rejected", abandon = "abandoned" }
local MESSAGE_FIELDS = { "body", "properties", "message_id", "correlation_id", "lock_token", "sequence_number",
  "enqueued_time", "expiry", "delivery_count", "to", "ack", "user_id", "content_type", "content_encoding" }

function hub_cli.receive(opts, source, term)
  local settle
  for _, how in ipairs({ "complete", "reject", "abandon" }) do
    if opts[how] then
      if settle then usage_error("give one of --complete, --reject and --abandon") end
      settle = how
    end
  end
  local hub, code = connect(opts, source, term, "receiving from")
  if not hub then return code end
  local msg, message, info, stats = with_hub(hub, function()
    local m, e, i = hub:receive()
    if m and settle then
      local ok, e2, i2 = hub[settle](hub, m)
      if not ok then return nil, e2, i2 end
    end
    return m, e, i
  end)
  if not msg then
    if info then return output.report(term, message, info) end
    term.say("no message is waiting" .. summary(stats))
    return EXIT.ok
  end
  local doc = {}
  for _, k in ipairs(MESSAGE_FIELDS) do doc[k] = msg[k] end
  if next(doc.properties) == nil then doc.properties = nil end
  doc.settled = settle
  local okj, text = pcall(json.encode, doc)
  if not okj then
    return output.report(term, "receive: the message cannot be printed as JSON: " .. output.strip_position(text),
      { kind = "protocol", retryable = false, step = "receive" })
  end
  term.say(string.format("received %s%s%s", plural(#msg.body, "byte"), settle and (", " .. DONE[settle]) or
    ", left locked (it comes again when the lock expires)", summary(stats)))
  term.out((text:gsub("\\/", "/")) .. "\n")
  return EXIT.ok
end

return hub_cli
