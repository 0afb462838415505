-- A gateway on cqueues (Debian: lua-cqueues) that keeps serving its leaves
-- while it provisions them: a 10 ms timer ticks on, and dps.batch runs in
-- its own coroutine, sleeping on the sockets and the time step() hands out.
--
--   DPS_ID_SCOPE=0ne… DPS_GROUP_KEY="$(cat /etc/dps/group.key)" lua5.4 examples/cqueues_gateway.lua [LEAVES]
--
-- Settings from the environment, never the command line (which every user
-- can read with ps), as the other examples: DPS_ID_SCOPE, DPS_GROUP_KEY, and
-- optionally DPS_ENDPOINT and DPS_CA_FILE. LEAVES: how many (default 100).
-- Prints each leaf as it ends, then the worst delay of the 10 ms timer.
local cqueues = require "cqueues"
local dps = require "dps"
local unpack = table.unpack or _G.unpack -- luacheck: ignore 143 (Lua 5.1 and LuaJIT)

local id_scope, group_key = os.getenv("DPS_ID_SCOPE"), os.getenv("DPS_GROUP_KEY")
local leaves = tonumber(arg[1] or 100)
if not id_scope or not group_key or not leaves then
  io.stderr:write("usage: DPS_ID_SCOPE=… DPS_GROUP_KEY=… cqueues_gateway.lua [LEAVES]\n")
  os.exit(2)
end

-- A socket of step()'s table as something cqueues.poll can wait on.
local function pollable(fd, mode)
  return { pollfd = function() return fd end, events = function() return mode end }
end

local batch = dps.batch{ id_scope = id_scope, group_key = group_key, endpoint = os.getenv("DPS_ENDPOINT"),
  ca_file = os.getenv("DPS_CA_FILE"), concurrency = 16, rate = 6000 }
for i = 1, leaves do batch:add(string.format("leaf-%03d", i), { payload = { gateway = "cq-demo" } }) end

local cq = cqueues.new()
local worst, ticks, provisioning = 0, 0, true

cq:wrap(function() -- the gateway's own work: a 10 ms timer
  local due = cqueues.monotime() + 0.01
  while provisioning do
    cqueues.sleep(math.max(due - cqueues.monotime(), 0))
    local late = cqueues.monotime() - due
    if late > worst then worst = late end
    ticks = ticks + 1
    due = due + 0.01
  end
end)

cq:wrap(function() -- provisioning, never blocking the loop
  local assigned, failed = 0, 0
  batch.on_result = function(id, state, message)
    if state then
      assigned = assigned + 1
      print(id, "assigned", state.assignedHub, state.deviceId)
    else
      failed = failed + 1
      print(id, "failed", message)
    end
  end
  while not batch:done() do
    local wait, fds = batch:step()
    if not batch:done() then
      local watch = {}
      for fd, mode in pairs(fds) do watch[#watch + 1] = pollable(fd, mode) end
      watch[#watch + 1] = wait
      cqueues.poll(unpack(watch))
    end
  end
  cqueues.sleep(0) -- let cqueues forget the sockets of the last poll before they close
  batch:close()
  provisioning = false
  print(string.format("%d assigned, %d failed", assigned, failed))
end)

assert(cq:loop())
print(string.format("timer: %d ticks, worst delay %.1f ms", ticks, worst * 1000))
