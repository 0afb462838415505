-- Rewrites an assignment cache for ever (or COUNT times), alternating
-- between two assignments, as a forced provisioning does: the kill -9 spec
-- (spec/device_life_spec.lua) kills it at random instants and checks that the
-- file is always one whole assignment or the other.
--
--    lua5.4 spec/support/cache_writer.lua PATH [COUNT]
local cache = require "dps.cache"
local writer = {}

--- The identity both assignments are for.
writer.IDENTITY = { id_scope = "0ne00000001", registration_id = "kill-9", endpoint = "https://localhost:1",
  credential = "sas:kill-9" }

--- Assignment number i (1 or 2): big enough (~24 KB) that a file written in
-- place would be seen half-written.
function writer.state(i)
  return { assignedHub = "hub-" .. i .. ".azure-devices.net", deviceId = "kill-9", status = "assigned",
    payload = { filler = string.rep(tostring(i), 24 * 1024) } }
end

if arg and arg[0] and arg[0]:match("cache_writer%.lua$") then
  local path, count = assert(arg[1], "usage: cache_writer.lua PATH [COUNT]"), tonumber(arg[2])
  local started = os.getenv("DPS_SPEC_STARTED") -- made after the first write, for the kill -9 spec
  local i = 0
  while not count or i < count do
    i = i + 1
    assert(cache.store(path, writer.IDENTITY, writer.state(i % 2 + 1), 1700000000 + i))
    if i == 1 and started then
      assert(io.open(started, "w")):close()
    end
  end
end

return writer
