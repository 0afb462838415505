-- dps-emulator.lua — a local HTTPS server that behaves like the Azure IoT Hub
-- Device Provisioning Service for the three device calls (register, operation
-- status, registration status), checks SAS tokens and client certificates,
-- and injects faults. See README.md beside this file.
--
-- Run: lua5.1 emulator/dps-emulator.lua --config FILE   (LuaJIT works too)

local here = (arg and arg[0] or ""):match("^(.*)/[^/]*$") or "."
package.path = here .. "/?.lua;" .. package.path

local USAGE = [[
usage: dps-emulator.lua --config FILE
       dps-emulator.lua --help

Serves the DPS device API over HTTPS on the listeners of FILE (JSON; see
emulator/README.md), writes FILE's ready_file ({"pid":N,"ports":[…]}) once
listening, logs every connection and request as JSON lines to log_file, and
runs until SIGTERM or SIGINT. Config errors: message on stderr, exit status 2.
]]

local function die(msg)
	io.stderr:write("dps-emulator: ", msg, "\n")
	os.exit(2)
end

local function parse_args(argv)
	local config_path
	local i = 1
	while argv[i] do
		local a = argv[i]
		if a == "--help" or a == "-h" then
			io.stdout:write(USAGE)
			os.exit(0)
		elseif a == "--config" then
			config_path = argv[i + 1]
			i = i + 1
		elseif a:match("^%-%-config=") then
			config_path = a:sub(10)
		else
			io.stderr:write(USAGE)
			die("unknown argument: " .. a)
		end
		i = i + 1
	end
	if not config_path or config_path == "" then
		io.stderr:write(USAGE)
		die("--config FILE is required")
	end
	return config_path
end

local cjson = require "cjson"
local cqueues = require "cqueues"
local signal = require "cqueues.signal"
local http_server = require "http.server"
local yieldable_pcall = require("http.util").yieldable_pcall
local unistd = require "posix.unistd"
local config = require "emu_config"
local emu_log = require "emu_log"
local emu_tls = require "emu_tls"
local emu_http = require "emu_http"
local registry_mod = require "emu_registry"
local handler_mod = require "emu_handler"

local function write_ready(path, pid, ports, x509)
	local tmp = path .. ".tmp." .. pid
	local f, err = io.open(tmp, "w")
	if not f then die("cannot write ready_file: " .. tostring(err)) end
	f:write(cjson.encode({ pid = pid, ports = ports, x509 = x509 }), "\n")
	f:close()
	local ok, rerr = os.rename(tmp, path)
	if not ok then die("cannot write ready_file: " .. tostring(rerr)) end
end

local function main(argv)
	-- collect when the heap has grown 4x instead of 2x: a few more MB for
	-- less collector work per request (it was an eighth of the VM's time)
	collectgarbage("setpause", 400)
	local cfg, err = config.load(parse_args(argv))
	if not cfg then die(err) end
	local log, lerr = emu_log.open(cfg.log_file)
	if not log then die(lerr) end

	signal.ignore(signal.SIGPIPE)
	signal.block(signal.SIGTERM, signal.SIGINT)
	local signals = signal.listen(signal.SIGTERM, signal.SIGINT)

	local cq = cqueues.new()
	local handler = handler_mod.new(cfg, log, registry_mod.new(cfg))
	local ports, mode = {}, nil
	for i, l in ipairs(cfg.listeners) do
		local ctx
		ctx, mode = emu_tls.server_context(l.cert, l.key)
		local srv, serr = http_server.listen {
			cq = cq,
			host = l.host,
			port = l.port,
			tls = true,
			ctx = ctx,
			version = 1.1,
			reuseaddr = true,
			-- a client's first bytes and TLS handshake: lua-http's 10 s is
			-- less than a client under valgrind on a busy machine can need
			connection_setup_timeout = 60,
			onstream = function(_, stream)
				local ok, herr = yieldable_pcall(handler.handle, handler, stream, i)
				if not ok then
					io.stderr:write("dps-emulator: request handler: ", tostring(herr), "\n")
				end
				-- anything but a complete exchange: drop the connection (lua-http
				-- would otherwise wait for, or spin on, an unread request body)
				if stream.state ~= "closed" then
					emu_http.abandon(stream)
				end
			end,
			onerror = function(_, _, op, e)
				-- failed handshakes and vanished clients: worth a line, not a crash
				io.stderr:write("dps-emulator: ", tostring(op), ": ", tostring(e), "\n")
			end,
		}
		if not srv then die(string.format("listener %d: %s", i, tostring(serr))) end
		local ok, lerr2 = srv:listen()
		if not ok then die(string.format("listener %d (%s:%d): %s", i, l.host, l.port, tostring(lerr2))) end
		local _, _, port = srv:localname()
		ports[i] = port
	end
	if mode ~= "handler" then
		io.stderr:write("dps-emulator: not running under LuaJIT: client certificates are not requested,",
			" X.509 attestation is unavailable (see README.md)\n")
	end

	local pid = unistd.getpid()
	if cfg.ready_file then write_ready(cfg.ready_file, pid, ports, mode == "handler") end

	cq:wrap(function()
		signals:wait()
		log:close()
		os.exit(0)
	end)
	while true do
		local ok, e = cq:step()
		if not ok then
			io.stderr:write("dps-emulator: ", tostring(e), "\n")
		end
	end
end

main(arg or {})
