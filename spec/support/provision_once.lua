-- Provision once and print the outcome as one JSON line, for specs that run
-- the client in a process of its own (under faketime, which shifts the clock
-- of the process it is preloaded into only):
--
--    lua5.4 spec/support/provision_once.lua OPTIONS.json
--
-- OPTIONS.json holds dps.provision's options as a JSON object (a file, so
-- that no key is ever on a command line);--
-- it prints {"state":…,"info":…} or {"message":…,"info":…}.
local cjson = require "cjson"
local dps = require "dps"

local f = assert(io.open((assert(arg[1], "usage: provision_once.lua OPTIONS.json")), "rb"))
local opts = cjson.decode(f:read("*a"))
f:close()
local state, info, failure = dps.provision(opts)
local out
if state then
  out = { state = state, info = info }
else
  out = { message = info, info = failure }
end
io.write(cjson.encode(out), "\n")
