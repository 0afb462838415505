-- A router that reports to its IoT Hub: provision from the assignment cache
-- (no request after the first boot), then send a reading every minute over
-- HTTPS, and look for cloud-to-device messages at the pace the service
-- documents for HTTPS devices (less often than every 25 minutes). When the
-- hub refuses the device (deleted, disabled, moved), the library provisions
-- again once, updates the cache and sends again.
--
--   DPS_ID_SCOPE=0ne… DPS_REGISTRATION_ID=router-01 DPS_SYMMETRIC_KEY=… lua5.4 examples/router_telemetry.lua
--
-- Optional: DPS_GROUP_KEY (instead of DPS_SYMMETRIC_KEY), DPS_ENDPOINT,
-- DPS_CA_FILE, DPS_CACHE (default /etc/dps/assignment.json),
-- DPS_HUB_ENDPOINT (connect there instead of the assigned hub: the
-- emulator), DPS_INTERVAL (seconds between readings, default 60),
-- DPS_RECEIVE_INTERVAL (seconds between checks for messages, default
-- 1500), DPS_COUNT (stop after that many readings; default: run forever).
local dps = require "dps"
local core = require "dps.core"
local Hub = require "dps.hub"

local function number(name, default)
  local v = os.getenv(name)
  return v and assert(tonumber(v), name .. " must be a number") or default
end

local interval = number("DPS_INTERVAL", 60)
local receive_every = number("DPS_RECEIVE_INTERVAL", Hub.RECEIVE_INTERVAL)
local count = number("DPS_COUNT", math.huge)

local hub, err, info = dps.connect{
  id_scope = assert(os.getenv("DPS_ID_SCOPE"), "set DPS_ID_SCOPE"),
  registration_id = assert(os.getenv("DPS_REGISTRATION_ID"), "set DPS_REGISTRATION_ID"),
  symmetric_key = os.getenv("DPS_SYMMETRIC_KEY"),
  group_key = not os.getenv("DPS_SYMMETRIC_KEY") and os.getenv("DPS_GROUP_KEY") or nil,
  endpoint = os.getenv("DPS_ENDPOINT"),
  ca_file = os.getenv("DPS_CA_FILE"),
  cache = os.getenv("DPS_CACHE") or "/etc/dps/assignment.json",
  hub_endpoint = os.getenv("DPS_HUB_ENDPOINT"),
}
if not hub then
  io.stderr:write(string.format("router: no hub: %s [kind=%s]\n", err, info.kind))
  os.exit(1)
end
print(string.format("router: %s on %s (assignment from %s)", hub.device_id, hub.host, hub.provisioned.source))

-- One reading: the load average and the free memory, as JSON.
local function reading(n)
  local load = "0"
  local f = io.open("/proc/loadavg")
  if f then
    load = (f:read("*l") or ""):match("^(%S+)") or "0"
    f:close()
  end
  local free = 0
  f = io.open("/proc/meminfo")
  if f then
    for line in f:lines() do
      local kb = line:match("^MemAvailable:%s+(%d+)")
      if kb then free = tonumber(kb) end
    end
    f:close()
  end
  return string.format('{"n":%d,"load1":%s,"mem_free_kb":%d,"time":%d}', n, load, free, os.time())
end

local next_receive = core.monotime() -- once at start, then at the documented pace
local n = 0
while n < count do
  n = n + 1
  local ok, message, why = hub:send(reading(n), { content_type = "application/json", content_encoding = "utf-8",
    properties = { kind = "reading" } })
  if ok then
    print(string.format("router: reading %d sent", n))
  else -- keep going: the next minute may work (the library has retried within its timeout)
    io.stderr:write(string.format("router: reading %d not sent: %s [kind=%s]\n", n, message, why.kind))
  end
  if core.monotime() >= next_receive then
    next_receive = core.monotime() + receive_every
    local msg, problem, what = hub:receive()
    if msg then
      print(string.format("router: message %s: %s", tostring(msg.message_id), msg.body))
      hub:complete(msg)
    elseif problem then
      io.stderr:write(string.format("router: receive: %s [kind=%s]\n", problem, what.kind))
    end
  end
  if n < count then core.sleep(interval) end
end
local stats = hub:stats()
print(string.format("router: %d readings, %d requests on %d TLS connection(s) to the hub", n, stats.requests,
  stats.connects))
hub:close()
