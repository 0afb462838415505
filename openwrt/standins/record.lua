-- The stand-ins that record what they were asked, for the specs that run
-- the package's shell scripts in a temporary root (IPKG_INSTROOT): each
-- call is one JSON line in $IPKG_INSTROOT/.standin/calls.jsonl, with the
-- command's name, its arguments, the environment variables hotplug scripts
-- read (and hotplug-call's whole environment). Then, as the real command
-- would:
--   logger [-s] [-t TAG] [-p PRIORITY] MESSAGE  with -s, "TAG: MESSAGE" on stderr
--   ubus call network.interface.NAME status     the interface's status from
--       $IPKG_INSTROOT/.standin/network/NAME.json (else "Not found", status 4)
--   ubus call OBJECT METHOD JSON                the JSON must parse (else status 2)
--   hotplug-call SUBSYSTEM                      sources each file of
--       $IPKG_INSTROOT/etc/hotplug.d/SUBSYSTEM in a shell of its own, in order
--   sleep SECONDS                               returns at once: time is the
--       spec's (a sleep of 2147483647 s is an instance idling until procd stops it)
--   record NAME ARGUMENTS...                    only records (procd's shell
--       functions and the dps command use it)
--
-- Usage: lua record.lua NAME ARGUMENTS...
local cjson = require("cjson")

local root = assert(os.getenv("IPKG_INSTROOT"), "IPKG_INSTROOT is not set")
local name = arg[1]
local args = {}
for i = 2, #arg do args[#args + 1] = arg[i] end

local function quote(s)
  return "'" .. s:gsub("'", "'\\''") .. "'"
end

local env = {}
for _, var in ipairs({ "ACTION", "DPS_HUB", "DPS_DEVICE_ID", "DPS_REGISTRATION_ID", "stratum" }) do
  env[var] = os.getenv(var)
end
-- hotplug-call passes its whole environment on to other packages' scripts
local environ
if name == "hotplug-call" then
  local p = io.popen("env")
  environ = p:read("*a")
  p:close()
end
local line = cjson.encode({ name = name, args = args, env = env, environ = environ })
os.execute("mkdir -p " .. quote(root .. "/.standin"))
local f = assert(io.open(root .. "/.standin/calls.jsonl", "ab"))
f:write(line, "\n")
f:close()

if name == "logger" then
  local tag, tell, message = "root", false, nil
  local i = 1
  while args[i] do
    if args[i] == "-t" or args[i] == "-p" then
      if args[i] == "-t" then tag = args[i + 1] end
      i = i + 1
    elseif args[i] == "-s" then
      tell = true
    else
      message = args[i]
    end
    i = i + 1
  end
  if tell then io.stderr:write(tag .. ": " .. tostring(message) .. "\n") end
elseif name == "ubus" and args[1] == "call" then
  local iface = args[2] and args[2]:match("^network%.interface%.(.+)$")
  if iface and args[3] == "status" then
    local status = io.open(root .. "/.standin/network/" .. iface .. ".json", "rb")
    if not status then
      io.stderr:write("Command failed: Not found\n")
      os.exit(4)
    end
    io.write(status:read("*a"))
    status:close()
  elseif args[4] and not pcall(cjson.decode, args[4]) then
    io.stderr:write("Failed to parse message data\n")
    os.exit(2)
  end
elseif name == "hotplug-call" then
  local dir = root .. "/etc/hotplug.d/" .. tostring(args[1])
  local p = io.popen("ls " .. quote(dir) .. " 2>/dev/null")
  for script in p:read("*a"):gmatch("[^\n]+") do
    os.execute("sh -c " .. quote('. "$IPKG_INSTROOT/lib/functions.sh"; . "$1"') .. " sh "
      .. quote(dir .. "/" .. script))
  end
  p:close()
end
