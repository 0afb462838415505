--- Start and stop the local DPS emulator from busted specs.
--
--     local emulator = require "spec.support.emulator"
--     local certs = emulator.certs()          -- build/test-certs, made once
--     local emu = emulator.start{ enrollments = {…}, scenarios = {…} }
--     … emu.endpoint, emu.ca_file, emu:requests("dev-01") …
--     emu:stop()
--
-- Pure Lua + cjson: runs under Lua 5.1–5.4 and LuaJIT. The emulator itself
-- runs under $DPS_EMULATOR_LUA, else luajit when installed (needed for the
-- 401 answer to unknown client certificates), else lua5.1.
local cjson = require "cjson"
local shell = require "spec.support.shell"

local M = {}

local function script_root()
	local src = debug.getinfo(1, "S").source
	local path = src:sub(1, 1) == "@" and src:sub(2) or ""
	local root = path:match("^(.*)/spec/support/[^/]*$")
	if not root and path:match("^spec/support/") then root = "." end
	root = root or "."
	if root:sub(1, 1) ~= "/" then
		local p = io.popen("pwd")
		local cwd = p:read("*l")
		p:close()
		root = root == "." and cwd or (cwd .. "/" .. root:gsub("^%./", ""))
	end
	return root
end

M.root = script_root()

local q, run, read, sleep = shell.quote, shell.succeeds, shell.read, shell.sleep

local function interpreter()
	local env = os.getenv("DPS_EMULATOR_LUA")
	if env and env ~= "" then return env end
	if run("command -v luajit >/dev/null 2>&1") then return "luajit" end
	return "lua5.1"
end

local certs_cache

--- Make the test certificates once (build/test-certs) and return their paths.
function M.certs()
	if certs_cache then return certs_cache end
	local dir = M.root .. "/build/test-certs"
	local log = os.tmpname()
	if not run("sh " .. q(M.root .. "/emulator/make-certs.sh") .. " " .. q(dir) .. " >" .. q(log) .. " 2>&1") then
		local out = read(log) or ""
		os.remove(log)
		error("emulator/make-certs.sh failed:\n" .. out, 2)
	end
	os.remove(log)
	local function p(name) return dir .. "/" .. name end
	certs_cache = {
		dir = dir,
		ca = p("ca.pem"), ca_key = p("ca.key"),
		server = p("server.pem"), server_key = p("server.key"),
		expired = p("expired.pem"), expired_key = p("expired.key"),
		other_ca = p("other-ca.pem"),
		device_root_ca = p("device-root-ca.pem"), device_root_ca_key = p("device-root-ca.key"),
		device_int_ca = p("device-int-ca.pem"), device_int_ca_key = p("device-int-ca.key"),
		x509_device_01 = p("x509-device-01.pem"), x509_device_01_key = p("x509-device-01.key"),
		x509_device_01_chain = p("x509-device-01-chain.pem"),
		x509_device_01_enc_key = p("x509-device-01-enc.key"), x509_device_01_passphrase = "test-pass",
		x509_device_02 = p("x509-device-02.pem"), x509_device_02_key = p("x509-device-02.key"),
		x509_device_02_chain = p("x509-device-02-chain.pem"),
		x509_self_01 = p("x509-self-01.pem"), x509_self_01_key = p("x509-self-01.key"),
		rogue = p("rogue.pem"), rogue_key = p("rogue.key"),
		-- certificate issuance: the emulator's root and issuing CA (emulator/emu_csr.lua)
		issuance_root_ca = p("issuance-root-ca.pem"), issuance_root_ca_key = p("issuance-root-ca.key"),
		issuance_ca = p("issuance-ca.pem"), issuance_ca_key = p("issuance-ca.key"),
	}
	return certs_cache
end

local Emu = {}
Emu.__index = Emu

local function decode_lines(text)
	local out = {}
	for line in (text or ""):gmatch("[^\n]+") do
		local ok, t = pcall(cjson.decode, line)
		if ok and type(t) == "table" then
			for k, v in pairs(t) do
				if v == cjson.null then
					t[k] = nil -- top-level nulls become nil
				elseif type(v) == "number" and math.tointeger then
					t[k] = math.tointeger(v) or v -- 5.3+: 202 rather than 202.0
				end
			end
			out[#out + 1] = t
		end
	end
	return out
end

--- All log entries so far (JSON nulls at the top level are nil).
function Emu:log()
	if self.final_log then return decode_lines(self.final_log) end
	return decode_lines(read(self.log_file))
end

--- Request entries of one registration id (all requests when nil).
function Emu:requests(registration_id)
	local out = {}
	for _, e in ipairs(self:log()) do
		if e.event == "request" and (registration_id == nil
			or (e.registration_id and e.registration_id:lower() == registration_id:lower())) then
			out[#out + 1] = e
		end
	end
	return out
end

--- Distinct connection ids used by one registration id's requests, ascending.
function Emu:connections(registration_id)
	local seen, out = {}, {}
	for _, e in ipairs(self:requests(registration_id)) do
		if not seen[e.conn] then
			seen[e.conn] = true
			out[#out + 1] = e.conn
		end
	end
	table.sort(out)
	return out
end

--- The emulator's stderr so far.
function Emu:stderr()
	return read(self.dir .. "/stderr.txt") or self.final_stderr or ""
end

-- A zombie counts as gone: the emulator is orphaned at start, and whoever
-- adopts it may reap it late.
local function alive(pid)
	local f = io.open("/proc/" .. pid .. "/stat", "r")
	if f then
		local stat = f:read("*l") or ""
		f:close()
		return stat:match("^%d+ %b() (%a)") ~= "Z"
	end
	local self_stat = io.open("/proc/self/stat", "r")
	if self_stat then -- Linux: no such process
		self_stat:close()
		return false
	end
	return run("kill -0 " .. pid .. " 2>/dev/null")
end

--- A request to the emulator's admin routes (`/admin/...`) over its TLS, on
-- a session of the emulator's own (closed by stop): the status and the
-- decoded JSON answer (nil when empty). BODY, when given, is sent as JSON.
function Emu:admin(method, path, body)
	if not self.admin_session then
		self.admin_session = require("dps.session").new{ ca_file = self.ca_file }
	end
	local status, _, text = self.admin_session:request(method, self.endpoint .. path,
		body and { ["content-type"] = "application/json" } or nil, body and cjson.encode(body) or nil)
	assert(status, text)
	return status, text ~= "" and cjson.decode(text) or nil
end

--- SIGTERM, wait for the exit (SIGKILL after 5 s), remove the temp folder.
-- Idempotent; log() and stderr() keep working afterwards.
function Emu:stop()
	if self.admin_session then self.admin_session:close() end
	if self.stopped then return end
	self.stopped = true
	if self.pid then
		run("kill -TERM " .. self.pid .. " 2>/dev/null")
		local waited = 0
		while alive(self.pid) and waited < 5 do
			sleep(0.05)
			waited = waited + 0.05
		end
		if alive(self.pid) then run("kill -KILL " .. self.pid .. " 2>/dev/null") end
	end
	self.final_log = read(self.log_file) or ""
	self.final_stderr = read(self.dir .. "/stderr.txt") or ""
	run("rm -rf " .. q(self.dir))
end

--- Start an emulator. opts: enrollments, scenarios, retry_after ("1"; false:
-- no header), polls_before_assignment (1), id_scope ("0ne00000001"), hub,
-- client_ca (default: the device root CA), max_body_bytes, latency (s per
-- request), register_quota (registrations per quota_window s, default 60).
-- The issuing CA of certificate issuance is always the test certificates'
-- (certs.issuance_ca, chaining to certs.issuance_root_ca); enrollments with
-- a certificate_policy issue from it.
function M.start(opts)
	opts = opts or {}
	local certs = M.certs()
	local dir = shell.tmpdir("dps-emulator")
	local emu = setmetatable({
		dir = dir,
		id_scope = opts.id_scope or "0ne00000001",
		ca_file = certs.ca,
		certs = certs,
		log_file = dir .. "/log.jsonl",
		config_file = dir .. "/config.json",
	}, Emu)
	local retry_after = opts.retry_after
	if retry_after == nil then retry_after = "1" end
	local config = {
		id_scope = emu.id_scope,
		hub = opts.hub,
		ready_file = dir .. "/ready.json",
		log_file = emu.log_file,
		listeners = {
			{ host = "127.0.0.1", port = 0, cert = certs.server, key = certs.server_key },
			{ host = "127.0.0.1", port = 0, cert = certs.expired, key = certs.expired_key },
		},
		client_ca = opts.client_ca or certs.device_root_ca,
		retry_after = retry_after,
		polls_before_assignment = opts.polls_before_assignment or 1,
		max_body_bytes = opts.max_body_bytes,
		latency = opts.latency, register_quota = opts.register_quota, quota_window = opts.quota_window,
		enrollments = opts.enrollments or {},
		scenarios = opts.scenarios or {},
		cloud_to_device = opts.cloud_to_device,
		issuance = { ca = certs.issuance_ca, ca_key = certs.issuance_ca_key, root = certs.issuance_root_ca },
	}
	local f = assert(io.open(emu.config_file, "w"))
	f:write(cjson.encode(config))
	f:close()

	-- the emulator is not under test: keep sanitizer preloads of the spec run away from it
	local cmd = string.format("env -u LD_PRELOAD %s %s --config %s </dev/null >%s 2>%s & echo $! >%s",
		interpreter(), q(M.root .. "/emulator/dps-emulator.lua"), q(emu.config_file),
		q(dir .. "/stdout.txt"), q(dir .. "/stderr.txt"), q(dir .. "/pid"))
	if not run(cmd) then
		error("could not start the DPS emulator: " .. cmd, 2)
	end
	emu.pid = (read(dir .. "/pid") or ""):match("%d+")
	local ready
	for _ = 1, 200 do -- ~10 s
		local text = read(dir .. "/ready.json")
		if text then
			local ok, t = pcall(cjson.decode, text)
			if ok and type(t) == "table" and t.ports then
				ready = t
				break
			end
		end
		if emu.pid and not alive(emu.pid) then break end
		sleep(0.05)
	end
	if not ready then
		local err = read(dir .. "/stderr.txt") or ""
		local exited = emu.pid and not alive(emu.pid)
		emu:stop()
		error((exited and "the DPS emulator exited before it was ready" or
			"the DPS emulator did not come up within 10 s") .. "; its stderr:\n" .. err, 2)
	end
	-- cjson under Lua 5.3+ decodes numbers as floats: keep integers
	emu.pid = ready.pid and string.format("%d", ready.pid) or emu.pid
	emu.ports = {}
	for i, p in ipairs(ready.ports) do emu.ports[i] = math.floor(p) end
	emu.port = emu.ports[1]
	emu.x509 = ready.x509 == true -- false when the emulator cannot ask for client certificates
	emu.endpoint = string.format("https://localhost:%d", emu.ports[1])
	emu.expired_endpoint = string.format("https://localhost:%d", emu.ports[2])
	emu.ip_endpoint = string.format("https://127.0.0.1:%d", emu.ports[1])
	return emu
end

return M
