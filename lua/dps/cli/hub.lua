--- The hub's commands of `dps`: `send` (one message), `receive` (one
-- cloud-to-device message, printed as JSON), `complete`, `reject` and
-- `abandon` (settle a message by its lock token) and `upload` (a file to
-- the hub's storage). All provision first (from `--cache` when it matches) and
-- provision again, once, when the hub refuses the device (`dps.connect`).
-- Exit codes and messages as for `provision`. `send` reads at most the
-- hub's limit + 1 byte from stdin and checks the message as `hub:send` does
-- before any request; `receive` makes its line of JSON before it settles
-- the message; `upload` checks its options and the file before any request,
-- and shows its progress on stderr (a line per block, or a bar on a terminal).
-- @module dps.cli.hub
local dps = require "dps"
local args = require "dps.cli.args"
local hub_message = require "dps.hub_message"
local hub_response = require "dps.hub_response"
local upload = require "dps.upload"
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
  o.certificate = commands.certificate_option(opts)
  local hub, message, info = commands.call_named(source.names, dps.connect, o)
  if not hub then
    return nil, output.report(term, output.in_flags(message, source.names), info)
  end
  term.say(string.format("%s %s as device %s (assignment from %s) with %s", action, hub.host, hub.device_id,
    hub.provisioned and hub.provisioned.source or "?", commands.describe_source(source)))
  if hub.provisioned then commands.say_certificate(term, hub.provisioned) end
  if hub.provisioned and hub.provisioned.cache_error then
    term.err("warning: provisioned, but the cache cannot be written: " .. hub.provisioned.cache_error)
  end
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

-- The largest message the hub takes (`dps.hub.MAX_MESSAGE_BYTES`).
local MAX_BYTES = require("dps.hub").MAX_MESSAGE_BYTES

-- The message on stdin: at most `limit` + 1 bytes are read (whatever is
-- there), and whether there was more than `limit`.
local function read_message(stdin, limit)
  local parts, n = {}, 0
  while n <= limit do
    local chunk, problem = stdin:read(limit + 1 - n)
    if chunk == nil and problem ~= nil then
      usage_error("cannot read the message from stdin: " .. tostring(problem))
    end
    if chunk == nil or chunk == "" then break end
    parts[#parts + 1] = chunk
    n = n + #chunk
  end
  return table.concat(parts), n > limit
end

-- hub:send's checks of the message, made before anything goes out, with
-- the command line's flags in place of the Lua names.
local FLAG_OF = { content_type = "--content-type", content_encoding = "--content-encoding",
  message_id = "--message-id", property = "--property" }

local function check_message(data, message_opts, too_large)
  local problem
  if too_large then
    problem = string.format("the message on stdin is larger than %d bytes, the most the hub takes", MAX_BYTES)
  else
    local _, header_problem = hub_message.headers(message_opts, "send")
    problem = hub_message.body_problem(data, "send") or header_problem
  end
  if problem then
    problem = problem:gsub("^send: ", "")
    local word, rest = problem:match("^([%l_]+)(.*)$")
    usage_error("send: " .. (FLAG_OF[word] and (FLAG_OF[word] .. rest) or problem) .. "; nothing was sent")
  end
end

function hub_cli.send(opts, source, term)
  local data, too_large = opts.data, false
  if data == nil then
    usage_error("give the message: dps send … DATA, or - to read it from stdin")
  end
  if data == "-" then
    data, too_large = read_message(term.stdin, MAX_BYTES)
  end
  local message_opts = { properties = properties(opts.property), content_type = opts["content-type"],
    content_encoding = opts["content-encoding"], message_id = opts["message-id"] }
  check_message(data, message_opts, too_large)
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

-- A delivery count JSON carries exactly here: a whole number of at most 14
-- digits (cjson prints numbers with 14 significant digits). The library
-- gives infinity for a count of 400 digits; such a count is left out.
local function whole_count(n)
  return type(n) == "number" and n >= 0 and n < 1e14 and n == math.floor(n)
end

-- The message as one line of JSON, or nil and why it cannot be.
local function message_line(msg, settle)
  local doc = {}
  for _, k in ipairs(MESSAGE_FIELDS) do doc[k] = msg[k] end
  if type(doc.properties) == "table" and next(doc.properties) == nil then doc.properties = nil end
  if not whole_count(doc.delivery_count) then doc.delivery_count = nil end
  doc.settled = settle
  local ok, text = pcall(json.encode, doc)
  if not ok then
    return nil, output.strip_position(text)
  end
  return (text:gsub("\\/", "/")) .. "\n"
end

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
  -- The line is made before the message is settled, and printed after: a
  -- message that cannot be printed is not settled (it comes again when its
  -- lock expires), and one whose settling fails is not printed.
  local line, problem
  local msg, message, info, stats = with_hub(hub, function()
    local m, e, i = hub:receive()
    if not m then return nil, e, i end
    line, problem = message_line(m, settle)
    if line and settle then
      local ok, e2, i2 = hub[settle](hub, m)
      if not ok then return nil, e2, i2 end
    end
    return m
  end)
  if not msg then
    if info then return output.report(term, message, info) end
    term.say("no message is waiting" .. summary(stats))
    return EXIT.ok
  end
  if not line then
    return output.report(term, string.format("receive: the message cannot be printed as JSON (%s); it was not "
      .. "settled: it comes again when its lock expires", problem),
      { kind = "protocol", retryable = false, step = "receive" })
  end
  term.say(string.format("received %s%s%s", plural(#msg.body, "byte"), settle and (", " .. DONE[settle]) or
    ", left locked (it comes again when the lock expires)", summary(stats)))
  term.out(line)
  return EXIT.ok
end

-- complete, reject, abandon ---------------------------------------------

-- What each does to the message, for --verbose.
local SETTLED = { complete = "completed (the hub deletes it)", reject = "rejected (dead-lettered)",
  abandon = "abandoned (the hub delivers it again)" }

-- `dps complete|reject|abandon LOCK-TOKEN`: settles the message that
-- `dps receive` printed (and left locked), by its `lock_token`, with the
-- hub's call of that name. Nothing on stdout; a lock that expired or was
-- used already is kind `lock_lost` (exit 1).
local function settle_command(how)
  return function(opts, source, term)
    local token = opts["lock-token"]
    if token == nil then
      usage_error(string.format("give the message's lock token: dps %s … LOCK-TOKEN (the lock_token that dps "
        .. "receive printed)", how))
    end
    local problem = hub_response.lock_token_problem(token)
    if problem then
      usage_error(string.format("%s: LOCK-TOKEN %s: give the lock_token that dps receive printed", how, problem))
    end
    local hub, code = connect(opts, source, term, "settling a message at")
    if not hub then return code end
    local ok, message, info, stats = with_hub(hub, function() return hub[how](hub, token) end)
    if not ok then
      return output.report(term, message, info)
    end
    term.say(string.format("message %s %s%s", token, SETTLED[how], summary(stats)))
    return EXIT.ok
  end
end

for how in pairs(SETTLED) do
  hub_cli[how] = settle_command(how)
end

-- upload ----------------------------------------------------------------

-- The upload's options as the command line spells them.
local UPLOAD_FLAG_OF = { name = "--name", block_size = "--block-size", content_type = "--content-type",
  file = "FILE" }

-- hub:upload's options from the flags, checked as hub:upload checks them
-- before anything goes out.
local function upload_options(opts)
  local file = opts.file
  if file == nil then
    usage_error("give the file: dps upload … FILE")
  end
  local o = { file = file, name = opts.name or file:match("([^/]+)/*$") or file,
    block_size = args.whole_number(opts, "block-size", "a whole number of bytes"),
    content_type = opts["content-type"] }
  local problem = upload.options_problem(o)
  if problem then
    problem = problem:gsub("^upload: ", "")
    local word, rest = problem:match("^([%l_]+)(.*)$")
    usage_error("upload: " .. (UPLOAD_FLAG_OF[word] and (UPLOAD_FLAG_OF[word] .. rest) or problem)
      .. "; nothing was sent")
  end
  return o
end

-- Whether the process's stderr (fd 2) is a terminal.
local function stderr_is_terminal()
  local a, _, c = os.execute("test -t 2")
  if type(a) == "number" then return a == 0 end
  return a == true and (c == nil or c == 0)
end

local function mib(n)
  return string.format("%.1f", n / 1048576)
end

--- The upload's progress on stderr: a line per block (`dps: sent 4194304 of
-- 20971520 bytes (20%)`), or on a terminal one bar drawn again in place.
-- @treturn function on_progress(sent, total)
-- @treturn function done(): ends the bar's line
function hub_cli.progress(term, terminal)
  local drawn = false
  local function on_progress(sent, total)
    local share = total > 0 and sent / total or 1
    if terminal then
      local width = 30
      local full = math.floor(share * width + 0.5)
      term.raw_err(string.format("\r[%s%s] %3d%% %s of %s MiB", string.rep("#", full), string.rep(" ", width - full),
        math.floor(share * 100), mib(sent), mib(total)))
      drawn = true
    elseif sent > 0 or total == 0 then
      term.err(string.format("sent %d of %d bytes (%d%%)", sent, total, math.floor(share * 100)))
    end
  end
  local function done()
    if drawn then term.raw_err("\n") end
    drawn = false
  end
  return on_progress, done
end

function hub_cli.upload(opts, source, term)
  local o = upload_options(opts)
  local f, message, info = upload.open(o.file) -- before anything goes out
  if not f then return output.report(term, message, info) end
  f:close()
  local hub, code = connect(opts, source, term, "uploading to")
  if not hub then return code end
  local done
  o.on_progress, done = hub_cli.progress(term, stderr_is_terminal())
  local result, problem, failure, stats = with_hub(hub, function() return hub:upload(o) end)
  done()
  if not result then
    return output.report(term, problem, failure)
  end
  term.say(string.format("uploaded %s as %s in %s%s", plural(result.size, "byte"), result.blob_name,
    result.blocks > 0 and plural(result.blocks, "block") or "one request", summary(stats)))
  local ok, line = pcall(json.encode, { blob_name = result.blob_name, size = result.size,
    correlation_id = result.correlation_id, blocks = result.blocks })
  if not ok then
    return output.report(term, "upload: the result cannot be printed as JSON: " .. output.strip_position(line),
      { kind = "protocol", retryable = false, step = "upload" })
  end
  term.out(line:gsub("\\/", "/") .. "\n")
  return EXIT.ok
end

return hub_cli
