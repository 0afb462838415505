--- `dps provision-batch`: provision every device listed in a file at once
-- (`dps.batch`), one JSON line per device on stdout as each ends.
--
--    dps provision-batch --id-scope S --group-key-file F --ids FILE [--concurrency N] [--rate N]
--                        [--cache-dir DIR]
--
-- FILE: one registration ID per line, optionally a tab and a JSON object
-- (the payload); blank lines and lines starting with `#` are skipped. Exit 0
-- only when every device was assigned.
-- @module dps.cli.batch
local dps = require "dps"
local core = require "dps.core"
local check = require "dps.check"
local args = require "dps.cli.args"
local output = require "dps.cli.output"
local json = require("cjson").new()

local usage_error = output.usage_error
local EXIT = output.EXIT

local function encode(value)
  return (json.encode(value):gsub("\\/", "/"))
end

-- The devices of the ids file: { { id, payload }, … }.
local function read_ids(path)
  local f, err = io.open(path, "r")
  if not f then output.fail("config", "--ids: " .. tostring(err)) end
  local devices, seen, n = {}, {}, 0
  for line in f:lines() do
    n = n + 1
    line = line:gsub("\r$", "")
    if line:find("%S") and not line:find("^%s*#") then
      local id, rest = line:match("^([^\t]*)\t?(.*)$")
      local payload
      if rest ~= "" then
        local ok, value = pcall(json.decode, rest)
        if not ok or type(value) ~= "table" or not rest:match("^%s*{") then
          f:close()
          usage_error(string.format("--ids %s line %d: the payload after the tab is not a JSON object", path, n))
        end
        payload = value
      end
      local problem = check.registration_id(id, "the registration ID")
      if not problem and seen[id] then
        problem = string.format("the registration ID %s is listed already, on line %d", id, seen[id])
      end
      if problem then
        f:close()
        usage_error(string.format("--ids %s line %d: %s", path, n, problem))
      end
      seen[id] = n
      devices[#devices + 1] = { id = id, payload = payload, line = n }
    end
  end
  f:close()
  return devices
end

local function integer(opts, name, default)
  local text = opts[name]
  if text == nil then return default end
  local v = tonumber(text)
  if not v or v ~= math.floor(v) or v < 1 then usage_error("--" .. name .. " must be a whole number >= 1") end
  return v
end

return function(opts, source, term)
  if source.kind ~= "group" then
    usage_error("provision-batch provisions the devices of an enrollment group: give --group-key-file FILE "
      .. "or set DPS_GROUP_KEY")
  end
  local devices = read_ids(args.required(opts, "ids"))
  local cache_dir = opts["cache-dir"]
  if cache_dir then
    local facts, problem = core.stat(cache_dir)
    if not facts or facts.type ~= "directory" then
      output.fail("config", "--cache-dir " .. (facts and (cache_dir .. ": not a directory") or tostring(problem)))
    end
  end
  local ok, b = pcall(dps.batch, {
    id_scope = args.required(opts, "id-scope"), group_key = source.key,
    endpoint = opts.endpoint, ca_file = opts["ca-file"], ca_path = opts["ca-path"], proxy = opts.proxy,
    api_version = opts["api-version"], timeout = args.positive_number(opts, "timeout"),
    request_timeout = args.positive_number(opts, "request-timeout"),
    concurrency = integer(opts, "concurrency", 16), rate = integer(opts, "rate", 1000),
    cache_dir = cache_dir,
  })
  if not ok then usage_error(output.in_flags(b)) end
  for _, d in ipairs(devices) do
    local added, err = pcall(b.add, b, d.id, { payload = d.payload })
    if not added then
      b:close()
      local problem = output.strip_position(err):gsub("^batch:add: ", "")
      usage_error(string.format("--ids line %d: %s", d.line, problem))
    end
  end
  local t0, failures, worst = core.monotime(), 0, nil
  local summary = b:run{
    on_result = function(id, state, message, info)
      if state then
        local how = message -- an assigned device's third value: how it was provisioned
        term.out(encode({ registrationId = id, status = "assigned", assignedHub = state.assignedHub,
          deviceId = state.deviceId, source = how.source }) .. "\n")
        if how.cache_error then term.err(id .. ": the assignment cache was not written: " .. how.cache_error) end
      else
        failures = failures + 1
        worst = worst or info.kind
        term.out(encode({ registrationId = id, status = "error", kind = info.kind, message = message,
          error_code = info.error_code, tracking_id = info.tracking_id }) .. "\n")
      end
    end,
    on_progress = function(done, total)
      local elapsed = core.monotime() - t0
      local rate = done / math.max(elapsed, 1e-3)
      term.say(string.format("%d/%d done, %.1f/s, %d failed, about %.0f s left", done, total, rate, failures,
        (total - done) / math.max(rate, 1e-3)))
    end,
  }
  b:close()
  term.say(string.format("%d assigned (%d from their caches), %d failed in %.1f s; %d requests on %d TLS "
    .. "connections", summary.assigned, summary.from_cache, summary.failed, summary.seconds, summary.requests,
    summary.connects))
  if summary.failed > 0 then return output.exit_code(worst) end
  return EXIT.ok
end
