-- Provision once and print the outcome as one JSON line, for specs that run
-- the client in a process of its own (under faketime, which shifts the clock
-- of the process it is preloaded into only):
--
--    lua5.4 spec/support/provision_once.lua OPTIONS.json [provision|batch|start]
--
-- OPTIONS.json holds dps.provision's options as a JSON object (a file, so
-- that no key is ever on a command line); the driver is dps.provision (the
-- default), a dps.batch of this one device, or dps.start_provision driven by
-- step(). It prints {"state":…,"info":…} or {"message":…,"info":…}.
local cjson = require "cjson"
local dps = require "dps"

local f = assert(io.open((assert(arg[1], "usage: provision_once.lua OPTIONS.json")), "rb"))
local opts = cjson.decode(f:read("*a"))
f:close()
local core = require "dps.core"

local DRIVERS = {
  provision = function() return dps.provision(opts) end,
  batch = function()
    local b = dps.batch{ id_scope = opts.id_scope, endpoint = opts.endpoint, ca_file = opts.ca_file,
      device_timeout = opts.timeout }
    b:add(opts.registration_id, { symmetric_key = opts.symmetric_key })
    b:run()
    local state, message, info = b:result(opts.registration_id)
    b:close()
    return state, message, info
  end,
  start = function()
    local p = dps.start_provision{ id_scope = opts.id_scope, endpoint = opts.endpoint, ca_file = opts.ca_file,
      device_timeout = opts.timeout, registration_id = opts.registration_id, symmetric_key = opts.symmetric_key }
    repeat core.sleep(math.min(p:step(), 0.01)) until p:done()
    local state, message, info = p:result()
    p:close()
    return state, message, info
  end,
}
local state, info, failure = assert(DRIVERS[arg[2] or "provision"], "no such driver")()
local out
if state then
  out = { state = state, info = info }
else
  out = { message = info, info = failure }
end
io.write(cjson.encode(out), "\n")
