-- A gateway on cqueues (Debian: lua-cqueues) forwarding its leaves'
-- telemetry through one dps.hubs pool: the leaves provision on the pool's
-- engine, a "sensor" coroutine queues one reading per leaf each second, and
-- the pool runs in its own coroutine, sleeping on the sockets and the time
-- step() hands out, woken when a reading is queued. Nothing blocks the loop.
--
--   DPS_ID_SCOPE=0ne… DPS_GROUP_KEY="$(cat /etc/dps/group.key)" lua5.4 examples/hubs_cqueues.lua [LEAVES [ROUNDS]]
--
-- Settings from the environment, never the command line (which every user
-- can read with ps), as the other examples: DPS_ID_SCOPE, DPS_GROUP_KEY, and
-- optionally DPS_ENDPOINT, DPS_CA_FILE and DPS_HUB_ENDPOINT (where the hub
-- calls go instead of the assigned hub: an emulator). LEAVES (default 10)
-- each send ROUNDS readings (default 3). Prints each failure with what came
-- back, then the counts.
local cqueues = require "cqueues"
local condition = require "cqueues.condition"
local dps = require "dps"
local unpack = table.unpack or _G.unpack -- luacheck: ignore 143 (Lua 5.1 and LuaJIT)

local id_scope, group_key = os.getenv("DPS_ID_SCOPE"), os.getenv("DPS_GROUP_KEY")
local leaves, rounds = tonumber(arg[1] or 10), tonumber(arg[2] or 3)
if not id_scope or not group_key or not leaves or not rounds then
  io.stderr:write("usage: DPS_ID_SCOPE=… DPS_GROUP_KEY=… hubs_cqueues.lua [LEAVES [ROUNDS]]\n")
  os.exit(2)
end

local pool = dps.hubs{ ca_file = os.getenv("DPS_CA_FILE"), concurrency = 16 }
local devices = {}
for i = 1, leaves do
  devices[i] = pool:add{ id_scope = id_scope, registration_id = string.format("leaf-%03d", i), group_key = group_key,
    dps_endpoint = os.getenv("DPS_ENDPOINT"), endpoint = os.getenv("DPS_HUB_ENDPOINT") }
end

local wake = condition.new() -- a reading was queued: step() now
local acked, failed, sensing = 0, 0, true
local function on_done(ok, message, info, item)
  if ok then
    acked = acked + 1
  else
    failed = failed + 1 -- the reading is handed back: keep it for later, here we print it
    print("failed", info.kind, message, item.body)
  end
end

local cq = cqueues.new()

cq:wrap(function() -- the sensors: a reading per leaf, each second
  for round = 1, rounds do
    for i, dev in ipairs(devices) do
      local ok, message = dev:send(string.format('{"leaf":%d,"round":%d}', i, round), nil, on_done)
      if not ok then print("not queued", message) end -- queue full: the reading stays ours
    end
    wake:signal()
    cqueues.sleep(1)
  end
  sensing = false
  wake:signal()
end)

cq:wrap(function() -- the pool, never blocking the loop
  while sensing or not pool:idle() do
    local wait, fds = pool:step()
    local watch = { wake }
    for fd, mode in pairs(fds) do
      watch[#watch + 1] = { pollfd = function() return fd end, events = function() return mode end }
    end
    watch[#watch + 1] = wait
    cqueues.poll(unpack(watch))
  end
  cqueues.sleep(0) -- let cqueues forget the sockets of the last poll before they close
  print(string.format("%d acknowledged, %d failed, %d requests on %d connections", acked, failed,
    pool:stats().requests, pool:stats().connects))
  pool:close()
end)

assert(cq:loop())
