-- The reference of the gateway benches (bench/batch.lua, bench/hubs.lua),
-- measured in the same run: the same requests sent by the curl tool, one
-- process running them at the same concurrency (--parallel, HTTP/1.1,
-- connections kept alive, TLS sessions shared), to the same emulator with
-- the same latency. Its wall time is what the emulator, TLS and the latency
-- allow a client written in C; a bench's ratio against it is what the
-- library adds, beside its ratio against the ideal (requests x latency /
-- concurrency), which no client reaches.
--
--    local reference = require "bench.reference"
--    local seconds, statuses, bodies = reference.run(requests, 32, emu.ca_file, true)
local core = require "dps.core"
local hub_message = require "dps.hub_message"
local request = require "dps.request"

local reference = {}

local function quote(s)
  return "'" .. s:gsub("'", "'\\''") .. "'"
end

-- A curl config value: in double quotes, with curl's escapes.
local function value(s)
  local escapes = { ["\\"] = "\\\\", ['"'] = '\\"', ["\n"] = "\\n", ["\r"] = "\\r", ["\t"] = "\\t" }
  return '"' .. s:gsub('[\\"\n\r\t]', escapes) .. '"'
end

--- Whether the curl tool runs transfers in parallel (7.66 and later).
function reference.available()
  local p = io.popen("curl --parallel --version 2>/dev/null")
  local out = p and p:read("*a") or ""
  if p then p:close() end
  return out:find("^curl ") ~= nil
end

--- Send `requests` (each `{ method, url, headers, body }`, as `dps.request`'s
-- builders make them) with curl, `concurrency` at a time.
-- @treturn number the wall seconds of the curl process
-- @treturn table HTTP status → count (0: no answer)
-- @treturn table the answers' bodies, in the order of `requests` (with `keep_bodies`)
function reference.run(requests, concurrency, ca_file, keep_bodies)
  local dir = io.popen("mktemp -d"):read("*l")
  local config = assert(io.open(dir .. "/config", "w"))
  for i, r in ipairs(requests) do
    if i > 1 then config:write("next\n") end
    config:write("url = ", value(r.url), "\nrequest = ", value(r.method), "\ncacert = ", value(ca_file),
      "\noutput = ", value(keep_bodies and (dir .. "/" .. i) or "/dev/null"),
      '\nwrite-out = "%{http_code}\\n"\nhttp1.1\n')
    for name, v in pairs(r.headers or {}) do config:write("header = ", value(name .. ": " .. v), "\n") end
    if r.body then config:write("data-binary = ", value(r.body), "\n") end
  end
  config:close()
  local t0 = core.monotime()
  local p = io.popen(string.format("curl --no-progress-meter --parallel --parallel-max %d -K %s", concurrency,
    quote(dir .. "/config")))
  local out = p:read("*a")
  p:close()
  local seconds = core.monotime() - t0
  local statuses = {}
  for code in out:gmatch("%d+") do
    code = tonumber(code)
    statuses[code] = (statuses[code] or 0) + 1
  end
  local bodies = {}
  if keep_bodies then
    for i = 1, #requests do
      local f = io.open(dir .. "/" .. i)
      bodies[i] = f and f:read("*a") or ""
      if f then f:close() end
    end
  end
  os.execute("rm -rf " .. quote(dir))
  return seconds, statuses, bodies
end

local function add(into, statuses)
  for code, n in pairs(statuses) do into[code] = (into[code] or 0) + n end
  return into
end

--- The provisioning of `n` devices of a group (IDs "ref-00001"…, their
-- keys derived from `group_key`): each registers, then polls its operation
-- once, as `dps.batch` does against an emulator whose Retry-After is 0.
-- @treturn number wall seconds (the registrations' run and the polls')
-- @treturn table HTTP status → count
-- @treturn integer requests sent
function reference.provision(emu, group_key, n, concurrency)
  local builders, registers = {}, {}
  for i = 1, n do
    local id = string.format("ref-%05d", i)
    builders[i] = request.new{ id_scope = emu.id_scope, registration_id = id, endpoint = emu.endpoint,
      key = core.derive_key(group_key, id) }
    registers[i] = builders[i]:dps_request("register", os.time(), nil, (request.body(id)))
  end
  local seconds, statuses, bodies = reference.run(registers, concurrency, emu.ca_file, true)
  local polls = {}
  for i, text in ipairs(bodies) do
    local op = text:match('"operationId"%s*:%s*"([^"]+)"')
    if op then polls[#polls + 1] = builders[i]:dps_request("operation_status", os.time(), op) end
  end
  local more, also = reference.run(polls, concurrency, emu.ca_file)
  return seconds + more, add(statuses, also), #registers + #polls
end

--- `m` messages from each of the devices `states` (registration states:
-- `assignedHub`, `deviceId`, `registrationId`; keys derived from
-- `group_key`) to the emulator's hub, message 1 of every device first.
-- @treturn number wall seconds
-- @treturn table HTTP status → count
-- @treturn integer requests sent
function reference.send(emu, group_key, states, m, concurrency)
  local builders, sends = {}, {}
  for i, st in ipairs(states) do
    builders[i] = request.new{ registration_id = st.registrationId, hub = st.assignedHub, device_id = st.deviceId,
      hub_endpoint = emu.endpoint, key = core.derive_key(group_key, st.registrationId) }
  end
  for k = 1, m do
    for i, b in ipairs(builders) do
      local body = string.format('{"leaf":%d,"n":%d,"reference":true}', i, k)
      sends[#sends + 1] = b:hub_request(hub_message.call("send", nil, body), os.time())
    end
  end
  local seconds, statuses = reference.run(sends, concurrency, emu.ca_file)
  return seconds, statuses, #sends
end

--- The statuses as text: "204 x10000" (most first).
function reference.describe(statuses)
  local list = {}
  for code, n in pairs(statuses) do list[#list + 1] = { code, n } end
  table.sort(list, function(a, b) return a[2] > b[2] end)
  for i, e in ipairs(list) do list[i] = string.format("%d x%d", e[1], e[2]) end
  return table.concat(list, ", ")
end

return reference
