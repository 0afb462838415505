-- Provision once and print the outcome as one JSON line, for specs that run
-- the client in a process of its own (under faketime, which shifts the clock
-- of the process it is preloaded into only):
--
--    lua5.4 spec/support/provision_once.lua '{"id_scope":…,"symmetric_key":…}'
--
-- prints {"state":…,"info":…} or {"message":…,"info":…}.
local cjson = require "cjson"
local dps = require "dps"

local opts = cjson.decode((assert(arg[1], "usage: provision_once.lua OPTIONS-JSON")))
local state, info, failure = dps.provision(opts)
local out
if state then
  out = { state = state, info = info }
else
  out = { message = info, info = failure }
end
io.write(cjson.encode(out), "\n")
