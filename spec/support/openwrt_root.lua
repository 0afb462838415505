--- A router's root file system in a temporary folder, for the specs that
-- run the OpenWrt package's shell scripts (examples/openwrt/) as OpenWrt
-- would: the package's files where it installs them, OpenWrt's commands as
-- the stand-ins of openwrt/standins/ (uci, jsonfilter, ubus, logger,
-- hotplug-call, rc.common, /lib/functions.sh and procd.sh, which record what
-- they are asked), `dps` at /usr/bin/dps, and a procd played by this module:
-- it acts on what the init script asked procd for (instances with their
-- respawn settings, files and triggers), runs the instances, respawns them
-- as procd does (the delay is the spec's time: none passes), and runs the
-- triggers on the events a spec sends. IPKG_INSTROOT names the root to
-- every script, as in OpenWrt's own scripts.
--
--     local root = openwrt_root.new{ dps = "lua5.4 bin/dps" }
--     root:uci{ "set dps.main.enabled=1", … }   -- uci commit follows
--     root:network("wan", { up = true, device = "eth1" }, "02:00:00:00:00:01")
--     root:boot()                 -- uci-defaults, then procd starts what is enabled
--     root:interface_up("wan")    -- procd runs the interface triggers
--     root:calls("hotplug-call")  -- what was asked
--
-- Pure Lua and cjson: runs on Lua 5.1-5.4 (the stand-ins run on this
-- busted's interpreter).
local cjson = require("cjson")
local shell = require("spec.support.shell")
local emulator = require("spec.support.emulator")

local q = shell.quote
local M = {}

--- The package's files: where each is installed, from which source in the
-- repository, with which mode (as openwrt/lua-azure-dps/Makefile installs
-- them).
M.FILES = {
  { path = "/etc/init.d/dps", source = "examples/openwrt/dps.init", mode = "755" },
  { path = "/usr/lib/dps/dps.sh", source = "examples/openwrt/dps.sh", mode = "644" },
  { path = "/usr/lib/dps/agent", source = "examples/openwrt/dps.agent", mode = "755" },
  { path = "/etc/hotplug.d/ntp/25-dps", source = "examples/openwrt/dps.hotplug-ntp", mode = "644" },
  { path = "/etc/config/dps", source = "examples/openwrt/dps.config", mode = "600" },
  { path = "/etc/uci-defaults/90-dps", source = "examples/openwrt/dps.uci-defaults", mode = "755" },
  { path = "/lib/upgrade/keep.d/dps", source = "examples/openwrt/dps.keep", mode = "644" },
}

-- The stand-ins: where each goes in the root, and what runs it (a Lua
-- program of openwrt/standins/, with its arguments first, or a file copied).
local STANDINS = {
  { path = "/bin/uci", lua = "uci.lua" },
  { path = "/bin/jsonfilter", lua = "jsonfilter.lua" },
  { path = "/bin/logger", lua = "record.lua", name = "logger" },
  { path = "/bin/ubus", lua = "record.lua", name = "ubus" },
  { path = "/bin/hotplug-call", lua = "record.lua", name = "hotplug-call" },
  { path = "/bin/sleep", lua = "record.lua", name = "sleep" },
  { path = "/bin/standin-record", lua = "record.lua" },
  { path = "/etc/rc.common", file = "rc.common" },
  { path = "/lib/functions.sh", file = "functions.sh" },
  { path = "/lib/functions/procd.sh", file = "procd.sh" },
}

--- The sleep an instance idles in until procd stops it (dps_idle).
M.IDLE = "2147483647"

local Root = {}
Root.__index = Root

local function mkdir(path)
  assert(shell.succeeds("mkdir -p " .. q(path)), "mkdir " .. path)
end

local function lines(text)
  local out = {}
  for line in (text or ""):gmatch("[^\n]+") do out[#out + 1] = line end
  return out
end

--- A new root. opts: `dps` (the command line that runs the dps command,
-- required), `lua` and `cpath` (the interpreter and LUA_CPATH for the
-- stand-ins: this run's), `package` (a function of a router path giving the
-- file to install there: default the repository's sources of M.FILES),
-- `clock` (the command line that runs dps with its wall clock moved by
-- "$offset" seconds, a shell variable: for set_clock), `files` (a folder
-- whose files go over the package's, as the ImageBuilder's FILES=).
function M.new(opts)
  local self = setmetatable({ dir = shell.tmpdir("dps-openwrt-root"), services = {}, next_call = 1,
    procd_log = {}, output = {} }, Root)
  local repo = emulator.root
  local lua, cpath = opts.lua, opts.cpath
  if not lua then lua, cpath = shell.plain() end
  for _, d in ipairs({ "/bin", "/lib/functions", "/etc/rc.d", "/etc/dps", "/etc/crontabs", "/var/run", "/tmp",
    "/usr/bin", "/sys/class/net", "/proc/sys/kernel", "/.standin/network" }) do
    mkdir(self.dir .. d)
  end
  for _, s in ipairs(STANDINS) do
    local target = self.dir .. s.path
    mkdir(target:match("^(.*)/"))
    if s.file then
      shell.write(target, assert(shell.read(repo .. "/openwrt/standins/" .. s.file)), "755")
    else
      shell.write(target, string.format("#!/bin/sh\nLUA_PATH=%s LUA_CPATH=%s exec %s %s %s\"$@\"\n",
        q(package.path), q(cpath), lua, q(repo .. "/openwrt/standins/" .. s.lua), s.name and s.name .. " " or ""),
        "755")
    end
  end
  for _, f in ipairs(M.FILES) do
    local target = self.dir .. f.path
    mkdir(target:match("^(.*)/"))
    local from = opts.package and opts.package(f.path) or (repo .. "/" .. f.source)
    shell.write(target, assert(shell.read(from), "no " .. from), f.mode)
  end
  -- the image's own files over the packages' (the ImageBuilder's FILES=)
  if opts.files then
    assert(shell.succeeds(string.format("cp -a %s/. %s/", q(opts.files), q(self.dir))), "FILES=" .. opts.files)
  end
  -- dps, its arguments recorded; with its wall clock moved by the seconds
  -- in .standin/clock (set_clock) when `opts.clock` says how
  shell.write(self.dir .. "/usr/bin/dps", string.format([[#!/bin/sh
standin-record dps "$@"
if [ -s "$IPKG_INSTROOT/.standin/clock" ]; then
	offset=$(cat "$IPKG_INSTROOT/.standin/clock")
	exec %s "$@"
fi
exec %s "$@"
]], opts.clock or "false", opts.dps), "755")
  shell.write(self.dir .. "/proc/sys/kernel/hostname", "OpenWrt\n")
  -- the package's postinst: enabled at boot
  self:exec(self:init_command("enable"))
  return self
end

--- Removes the root.
function Root:remove()
  shell.succeeds("rm -rf " .. q(self.dir))
end

--- The wall clock the dps command sees from now on: `time` (seconds since
-- the epoch), or the real one (nil).
function Root:set_clock(time)
  local file = self.dir .. "/.standin/clock"
  if time then
    shell.write(file, string.format("%+d", time - os.time()))
  else
    os.remove(file)
  end
end

--- Runs a shell command in the root's environment (the stand-ins first on
-- PATH, IPKG_INSTROOT, and `env`'s variables); returns its exit status, its
-- stdout and its stderr.
function Root:exec(command, env)
  local vars = { "IPKG_INSTROOT=" .. q(self.dir), "PATH=" .. q(self.dir .. "/bin:" .. os.getenv("PATH")) }
  for k, v in pairs(env or {}) do vars[#vars + 1] = k .. "=" .. q(v) end
  local out, err = self.dir .. "/.standin/stdout", self.dir .. "/.standin/stderr"
  local status = shell.run(string.format("cd %s && env %s sh -c %s >%s 2>%s; echo $?", q(self.dir),
    table.concat(vars, " "), q(command), q(out), q(err)))
  return tonumber(status:match("(%d+)%s*$")), shell.read(out) or "", shell.read(err) or ""
end

--- The shell command of /etc/init.d/dps ACTION (its #! line: rc.common).
function Root:init_command(action)
  return string.format("/bin/sh %s %s %s", q(self.dir .. "/etc/rc.common"), q(self.dir .. "/etc/init.d/dps"), action)
end

--- /etc/init.d/dps ACTION, then procd acts on what it asked for; returns
-- the exit status, stdout and stderr.
function Root:init(action)
  local status, out, err = self:exec(self:init_command(action))
  self:procd()
  return status, out, err
end

--- Commits UCI changes: each string of `changes` is a `uci` command line
-- (e.g. "set dps.main.enabled=1", quoted by this function), then `uci commit`.
function Root:uci(changes)
  for _, change in ipairs(changes) do
    local verb, argument = change:match("^(%S+) (.*)$")
    local status, _, err = self:exec("uci " .. verb .. " " .. q(argument))
    assert(status == 0, "uci " .. change .. ": " .. err)
  end
  assert(self:exec("uci commit") == 0)
end

--- A network interface: netifd's status (`ubus call network.interface.NAME
-- status`), and the MAC address of its device in /sys/class/net.
function Root:network(name, status, mac)
  shell.write(self.dir .. "/.standin/network/" .. name .. ".json", cjson.encode(status))
  if mac and status.device then
    mkdir(self.dir .. "/sys/class/net/" .. status.device)
    shell.write(self.dir .. "/sys/class/net/" .. status.device .. "/address", mac .. "\n")
  end
end

--- Every recorded call so far (or those of the command `name`): { name,
-- args, env }.
function Root:calls(name)
  local out = {}
  for _, line in ipairs(lines(shell.read(self.dir .. "/.standin/calls.jsonl"))) do
    local call = cjson.decode(line)
    if not name or call.name == name then out[#out + 1] = call end
  end
  return out
end

--- The system log: each `logger -t dps` message, and what procd's
-- instances wrote on stdout and stderr (procd logs them).
function Root:log()
  local out = {}
  for _, call in ipairs(self:calls("logger")) do
    local message, priority = call.args[#call.args], nil
    for i, a in ipairs(call.args) do
      if a == "-p" then priority = call.args[i + 1] end
    end
    out[#out + 1] = { priority = priority, message = message }
  end
  for _, line in ipairs(self.output) do out[#out + 1] = { priority = "instance", message = line } end
  return out
end

-- A router path as a path in the root.
function Root:path(path)
  if path:sub(1, #self.dir) == self.dir then return path end
  return self.dir .. path
end

-- The shell command that runs an executable file, as the kernel would by
-- its #! line (rc.common for init scripts).
function Root:command(argv)
  local file = self:path(argv[1])
  local first = (shell.read(file) or ""):match("^[^\n]*")
  local words = {}
  for i = 2, #argv do words[#words + 1] = q(argv[i]) end
  local rest = table.concat(words, " ")
  if first == "#!/bin/sh /etc/rc.common" then
    return string.format("/bin/sh %s %s %s", q(self.dir .. "/etc/rc.common"), q(file), rest)
  end
  return string.format("/bin/sh %s %s", q(file), rest)
end

local function same_instance(a, b)
  return cjson.encode({ a.params, a.file_contents }) == cjson.encode({ b.params, b.file_contents })
end

-- Runs an instance as procd does: when it exits and has respawn settings,
-- again after their delay (counted, not waited) until it has failed more
-- than `retry` times; an instance that idles (dps_idle's sleep) runs on.
function Root:run_instance(service, instance)
  local respawn = instance.params.respawn
  while true do
    local mark = #self:calls()
    local status, out, err = self:exec(self:command(instance.params.command))
    for _, line in ipairs(lines(out .. err)) do self.output[#self.output + 1] = line end
    instance.runs = instance.runs + 1
    local calls = self:calls()
    for i = mark + 1, #calls do
      if calls[i].name == "sleep" and calls[i].args[1] == M.IDLE then
        instance.state = "idle"
        return
      end
    end
    instance.exit_status = status
    if not respawn then
      instance.state = "exited"
      return
    end
    local threshold, delay, retry = tonumber(respawn[1] or 3600), tonumber(respawn[2] or 5), tonumber(respawn[3] or 5)
    assert(threshold > 0, "respawn threshold")
    -- no time passes while it runs: always under the threshold, a failure
    instance.respawn_count = instance.respawn_count + 1
    if instance.respawn_count > retry and retry > 0 then
      instance.state = "halted"
      self.procd_log[#self.procd_log + 1] = string.format("Instance %s::%s s in a crash loop %d crashes",
        service, instance.name, instance.respawn_count)
      return
    end
    assert(instance.runs < 50, "procd: " .. service .. "::" .. instance.name .. " respawns for ever")
    self.procd_log[#self.procd_log + 1] = string.format("respawn %s::%s in %d s", service, instance.name, delay)
  end
end

-- `ubus call service set`: the service's new instances and triggers. An
-- instance that runs (idles) with the same command, settings and files is
-- left alone; a changed one is restarted; a stopped one is started.
function Root:set_service(new)
  local old = self.services[new.name]
  self.services[new.name] = new
  for _, name in ipairs(new.order) do
    local instance, previous = new.instances[name], old and old.instances[name]
    if previous and previous.state == "idle" and same_instance(previous, instance) then
      new.instances[name] = previous
    else
      if previous then instance.respawn_count = previous.respawn_count end
      self:run_instance(new.name, instance)
    end
  end
end

--- procd: acts on the calls of procd's shell functions recorded since it
-- last looked (services set and deleted, instances run).
function Root:procd()
  local service, instance
  while true do
    local calls = self:calls()
    local call = calls[self.next_call]
    if not call then return end
    self.next_call = self.next_call + 1
    if call.name == "procd" then
      local what, a = call.args[1], { select(2, (unpack or table.unpack)(call.args)) }
      if what == "open_service" then
        service = { name = a[1], script = a[2], instances = {}, order = {}, triggers = {}, seq = 0 }
      elseif what == "open_instance" then
        service.seq = service.seq + 1
        instance = { name = a[1] or ("instance" .. service.seq), params = {}, file_contents = {}, runs = 0,
          respawn_count = 0 }
      elseif what == "set_param" or what == "append_param" then
        local values = { select(2, (unpack or table.unpack)(a)) }
        local list = what == "append_param" and instance.params[a[1]] or {}
        for _, v in ipairs(values) do list[#list + 1] = v end
        instance.params[a[1]] = list
        if a[1] == "file" then
          for _, path in ipairs(values) do instance.file_contents[path] = shell.read(path) or "" end
        end
      elseif what == "close_instance" then
        service.instances[instance.name] = instance
        service.order[#service.order + 1] = instance.name
      elseif what == "add_reload_trigger" then
        for _, package in ipairs(a) do
          service.triggers[#service.triggers + 1] = { type = "config.change", package = package,
            script = { "/etc/init.d/" .. service.name, "reload" } }
        end
      elseif what == "add_interface_trigger" then
        service.triggers[#service.triggers + 1] = { type = a[1], interface = a[2],
          script = { select(3, (unpack or table.unpack)(a)) } }
      elseif what == "close_service" then
        self:set_service(service)
      elseif what == "kill" then
        self.services[a[1]] = nil
      end
    end
  end
end

-- Runs the triggers `match` picks, then acts on what they asked procd for.
function Root:trigger(match)
  local picked = {}
  for _, service in pairs(self.services) do
    for _, t in ipairs(service.triggers) do
      if match(t) then picked[#picked + 1] = t end
    end
  end
  for _, t in ipairs(picked) do
    self:exec(self:command(t.script))
    self:procd()
  end
end

--- The interface comes up: netifd's status says so, and procd runs the
-- interface triggers (interface.*.up) of that interface.
function Root:interface_up(name)
  local file = self.dir .. "/.standin/network/" .. name .. ".json"
  local status = cjson.decode(shell.read(file) or "{}")
  status.up = true
  shell.write(file, cjson.encode(status))
  self:trigger(function(t) return t.interface == name and t.type == "interface.*.up" end)
end

--- `uci commit` then reload_config: procd runs the config.change triggers of
-- the package.
function Root:config_change(package_name)
  self:trigger(function(t) return t.type == "config.change" and t.package == package_name end)
end

--- hotplug-call SUBSYSTEM with `env` (e.g. ntp with ACTION=stratum).
function Root:hotplug(subsystem, env)
  local status, out, err = self:exec("hotplug-call " .. q(subsystem), env)
  self:procd()
  return status, out, err
end

--- Boot: the uci-defaults scripts, each sourced in a shell of its own and
-- removed when it succeeds (so that it runs once), then procd starts the
-- enabled init scripts (boot).
function Root:boot()
  local p = io.popen("ls " .. q(self.dir .. "/etc/uci-defaults") .. " 2>/dev/null")
  for name in p:read("*a"):gmatch("[^\n]+") do
    local file = self.dir .. "/etc/uci-defaults/" .. name
    local status, _, err = self:exec(string.format(". %s; ( . %s ) && rm -f %s",
      q(self.dir .. "/lib/functions.sh"), q(file), q(file)))
    assert(status == 0, "uci-defaults " .. name .. ": " .. err)
  end
  p:close()
  p = io.popen("ls " .. q(self.dir .. "/etc/rc.d") .. " 2>/dev/null")
  for name in p:read("*a"):gmatch("[^\n]+") do
    if name:match("^S%d%d") then
      self:exec(self:command({ "/etc/rc.d/" .. name, "boot" }))
      self:procd()
    end
  end
  p:close()
end

--- A reboot: procd's services and the tmpfs (/var/run, /tmp) are gone; the
-- flash (/etc) stays; then boot.
function Root:reboot()
  self.services = {}
  shell.succeeds(string.format("rm -rf %s %s && mkdir -p %s %s", q(self.dir .. "/var/run"), q(self.dir .. "/tmp"),
    q(self.dir .. "/var/run"), q(self.dir .. "/tmp")))
  self:boot()
end

--- The instance `name` of the service dps (procd's view), or nil.
function Root:instance(name)
  local service = self.services.dps
  return service and service.instances[name or "agent"]
end

--- The agent's state (/var/run/dps/state), or nil.
function Root:state()
  local s = shell.read(self.dir .. "/var/run/dps/state")
  return s and s:gsub("%s+$", "")
end

return M
