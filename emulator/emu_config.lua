-- Configuration of the DPS emulator: read the JSON file, check every field,
-- resolve paths against the config file's folder, load certificates and keys.
-- Errors are returned as nil, "message" (the caller exits with status 2).
local cjson = require "cjson.safe"
local x509 = require "openssl.x509"
local pkey = require "openssl.pkey"
local util = require "emu_util"
local emu_csr = require "emu_csr"

local M = {}

local FAULTS = {
	hang = { seconds = "number" },
	reset = {},
	close = {},
	non_json = {},
	oversized = { bytes = "number" },
	slow = { delay = "number" },
	truncated = {},
	no_body = { status = "number" },
	no_operation_id = {},
	no_assigned_hub = {},
	delay = { seconds = "number" },
	raw = { status = "number", body = "string", headers = "table" },
}
M.FAULTS = FAULTS

local RESULTS = { assigned = true, failed = true, disabled = true }

local function is_null(v)
	return v == nil or v == cjson.null
end

local function is_array(t)
	if type(t) ~= "table" then return false end
	local n = 0
	for _ in pairs(t) do n = n + 1 end
	for i = 1, n do
		if t[i] == nil then return false end
	end
	return true
end

-- unknown fields are errors (typos); fields starting with "_" are comments
local function check_keys(t, allowed, where)
	for k in pairs(t) do
		if not allowed[k] and not (type(k) == "string" and k:sub(1, 1) == "_") then
			error(string.format("%s: unknown field %q", where, tostring(k)), 0)
		end
	end
end

local function want(v, ty, where)
	if type(v) ~= ty then
		error(string.format("%s must be a %s", where, ty), 0)
	end
	return v
end

local function opt_string(v, where, default)
	if is_null(v) then return default end
	return want(v, "string", where)
end

local function count(v, where, default)
	if is_null(v) then return default end
	if type(v) ~= "number" or v < 0 or v ~= math.floor(v) then
		error(where .. " must be a non-negative integer", 0)
	end
	return v
end

local function seconds(v, where, default)
	if is_null(v) then return default end
	if type(v) ~= "number" or v < 0 or v ~= v then
		error(where .. " must be a number of seconds >= 0", 0)
	end
	return v
end

-- retry_after: string or number → header text; false/null → no header
local function retry_after(v, where, default)
	if v == nil then return default end
	if v == false or v == cjson.null then return false end
	if type(v) == "number" then return tostring(v) end
	return want(v, "string", where)
end

local function resolve(dir, path)
	if path:sub(1, 1) == "/" then return path end
	return dir .. "/" .. path
end

local function load_certs(dir, path, where)
	want(path, "string", where)
	local full = resolve(dir, path)
	local pem, err = util.read_file(full)
	if not pem then error(where .. ": " .. err, 0) end
	local certs = {}
	for block in pem:gmatch("%-%-%-%-%-BEGIN CERTIFICATE%-%-%-%-%-.-%-%-%-%-%-END CERTIFICATE%-%-%-%-%-") do
		local ok, crt = pcall(x509.new, block, "PEM")
		if not ok then error(where .. ": bad certificate in " .. full, 0) end
		certs[#certs + 1] = crt
	end
	if #certs == 0 then error(where .. ": no certificate in " .. full, 0) end
	return certs
end

local function load_key(dir, path, where)
	want(path, "string", where)
	local full = resolve(dir, path)
	local pem, err = util.read_file(full)
	if not pem then error(where .. ": " .. err, 0) end
	local ok, key = pcall(pkey.new, pem, "PEM")
	if not ok then error(where .. ": cannot load private key " .. full, 0) end
	return key
end

local function base64_key(v, where)
	want(v, "string", where)
	local raw = util.b64decode(v)
	if not raw or #raw == 0 then error(where .. " must be base64", 0) end
	return raw
end

local function cn_of(crt)
	for k, v in crt:getSubject():each() do
		if k == "CN" then return v end
	end
	return nil
end
M.cn_of = cn_of

local function fault_spec(f, where)
	want(f, "table", where)
	if not is_null(f.status) and is_null(f.fault) then
		check_keys(f, { status = true, retry_after = true, error_code = true, message = true }, where)
		local st = count(f.status, where .. ".status")
		if st < 100 or st > 599 then error(where .. ".status must be 100..599", 0) end
		return {
			status = st,
			retry_after = retry_after(f.retry_after, where .. ".retry_after", false),
			error_code = count(f.error_code, where .. ".error_code",
				st == 409 and 409203 or st * 1000 + 1),
			message = opt_string(f.message, where .. ".message"),
		}
	end
	local name = want(f.fault, "string", where .. ".fault")
	local params = FAULTS[name]
	if not params then error(string.format("%s: unknown fault %q", where, name), 0) end
	local spec = { fault = name }
	for k, v in pairs(f) do
		if k ~= "fault" and not (type(k) == "string" and k:sub(1, 1) == "_") then
			if not params[k] then
				error(string.format("%s: fault %q takes no field %q", where, name, tostring(k)), 0)
			end
			spec[k] = want(v, params[k], where .. "." .. k)
		end
	end
	return spec
end

local function fault_queue(q, where)
	if is_null(q) then return {} end
	if not is_array(q) then error(where .. " must be an array", 0) end
	local out = {}
	for i, f in ipairs(q) do out[i] = fault_spec(f, where .. "[" .. i .. "]") end
	return out
end

-- The hub's fault queue, one element per hub request of the device: a
-- status answer with the hub's error code (a name), a connection fault
-- (reset, hang), or null (no fault: that request is answered normally).
local HUB_FAULTS = { reset = true, hang = true }

local function hub_fault_queue(q, where)
	if is_null(q) then return nil end
	if not is_array(q) then error(where .. " must be an array", 0) end
	local out = {}
	for i, f in ipairs(q) do
		local w = where .. "[" .. i .. "]"
		if is_null(f) then
			out[i] = false
		else
			want(f, "table", w)
			check_keys(f, { status = true, error_code = true, message = true, retry_after = true, fault = true,
				seconds = true }, w)
			if not is_null(f.fault) then
				if not HUB_FAULTS[f.fault] then error(w .. ".fault must be reset or hang", 0) end
				if not is_null(f.status) then error(w .. ": give status or fault, not both", 0) end
				out[i] = { fault = f.fault, seconds = seconds(f.seconds, w .. ".seconds", 600) }
			else
				local st = count(f.status, w .. ".status")
				if st < 300 or st > 599 then error(w .. ".status must be 300..599", 0) end
				out[i] = { status = st, error_code = opt_string(f.error_code, w .. ".error_code", "InjectedFault"),
					message = opt_string(f.message, w .. ".message"),
					retry_after = retry_after(f.retry_after, w .. ".retry_after", false) }
			end
		end
	end
	return out
end

-- The storage fault queue (file upload): one element per storage request of
-- the device that it matches (`on`: put, block, blocklist or any), after
-- `after` such requests have passed; a status with the store's error code, or
-- a connection fault.
local STORAGE_ON = { put = true, block = true, blocklist = true, any = true }
local STORAGE_FAULTS = { reset = true, hang = true }

local function storage_fault(f, where)
	want(f, "table", where)
	check_keys(f, { status = true, code = true, message = true, retry_after = true, on = true, after = true,
		fault = true, seconds = true }, where)
	local on = opt_string(f.on, where .. ".on", "any")
	if not STORAGE_ON[on] then error(where .. ".on must be put, block, blocklist or any", 0) end
	local out = { on = on, after = count(f.after, where .. ".after", 0) }
	if not is_null(f.fault) then
		if not STORAGE_FAULTS[f.fault] then error(where .. ".fault must be reset or hang", 0) end
		if not is_null(f.status) then error(where .. ": give status or fault, not both", 0) end
		out.fault = f.fault
		out.seconds = seconds(f.seconds, where .. ".seconds", 600)
		return out
	end
	local st = count(f.status, where .. ".status")
	if st < 300 or st > 599 then error(where .. ".status must be 300..599", 0) end
	out.status = st
	out.code = opt_string(f.code, where .. ".code", st == 403 and "AuthenticationFailed"
		or (st >= 500 and "InternalError" or "InjectedFault"))
	out.message = opt_string(f.message, where .. ".message")
	out.retry_after = retry_after(f.retry_after, where .. ".retry_after", false)
	return out
end

--- A storage fault queue (an array of faults, or one fault), or nil, message.
function M.storage_faults(q, where)
	local ok, res = pcall(function()
		if is_null(q) then return {} end
		if type(q) == "table" and not is_array(q) then q = { q } end
		if not is_array(q) then error(where .. " must be an array", 0) end
		local out = {}
		for i, f in ipairs(q) do out[i] = storage_fault(f, where .. "[" .. i .. "]") end
		return out
	end)
	if not ok then return nil, res end
	return res
end

local function storage_fault_queue(q, where)
	local out, err = M.storage_faults(q, where)
	if not out then error(err, 0) end
	return out
end

-- The blob store of file upload: {"host"?, "container"?, "dir"?, "sas_ttl"?, "max_active"?}.
local function storage_config(t, dir)
	if is_null(t) then t = {} end
	want(t, "table", "storage")
	check_keys(t, { host = true, container = true, dir = true, sas_ttl = true, max_active = true }, "storage")
	local container = opt_string(t.container, "storage.container", "device-uploads")
	if not container:match("^[a-z0-9][a-z0-9%-]+$") or #container > 63 then
		error("storage.container must be 2-63 lower-case letters, digits and hyphens", 0)
	end
	local sas_ttl = seconds(t.sas_ttl, "storage.sas_ttl", 3600)
	if sas_ttl <= 0 then error("storage.sas_ttl must be a number of seconds > 0", 0) end
	return {
		host = opt_string(t.host, "storage.host"),
		container = container,
		dir = resolve(dir, opt_string(t.dir, "storage.dir", "blobs")),
		sas_ttl = sas_ttl,
		max_active = count(t.max_active, "storage.max_active", 10),
	}
end

-- The issuance fault queue: names of emu_csr.FAULTS, one per certificate issued.
local function issuance_faults(q, where)
	if is_null(q) then return {} end
	if not is_array(q) then error(where .. " must be an array", 0) end
	for i, f in ipairs(q) do
		if type(f) ~= "string" or not emu_csr.FAULTS[f] then
			error(string.format("%s[%d]: unknown issuance fault %s", where, i, tostring(f)), 0)
		end
	end
	return q
end

-- An enrollment's certificate policy: {"validity_days":30,"curves":["P-384","P-256"]}.
local function certificate_policy(p, where)
	if is_null(p) then return nil end
	want(p, "table", where)
	check_keys(p, { validity_days = true, curves = true }, where)
	local days = p.validity_days
	if is_null(days) then days = 30 end
	if type(days) ~= "number" or days ~= days or days <= 0 or days > 36500 then
		error(where .. ".validity_days must be a number of days > 0", 0)
	end
	local curves = p.curves
	if is_null(curves) then curves = { "P-384" } end
	if not is_array(curves) or #curves == 0 then error(where .. ".curves must be a non-empty array", 0) end
	for i, c in ipairs(curves) do
		if c ~= "P-384" and c ~= "P-256" then
			error(string.format('%s.curves[%d] must be "P-384" or "P-256"', where, i), 0)
		end
	end
	return { validity_days = days, curves = curves }
end

local function scenario(s, where)
	want(s, "table", where)
	check_keys(s, { polls_before_assignment = true, retry_after = true, result = true,
		register = true, poll = true, lookup = true, assigned_hub = true, device_id = true, hub = true,
		issuance = true, storage = true }, where)
	local result = opt_string(s.result, where .. ".result", "assigned")
	if not RESULTS[result] then error(where .. ".result must be assigned, failed or disabled", 0) end
	return {
		polls_before_assignment = count(s.polls_before_assignment, where .. ".polls_before_assignment"),
		retry_after = s.retry_after,  -- resolved against the top level below
		result = result,
		register = fault_queue(s.register, where .. ".register"),
		poll = fault_queue(s.poll, where .. ".poll"),
		lookup = fault_queue(s.lookup, where .. ".lookup"),
		assigned_hub = opt_string(s.assigned_hub, where .. ".assigned_hub"),
		device_id = opt_string(s.device_id, where .. ".device_id"),
		hub = hub_fault_queue(s.hub, where .. ".hub"),
		issuance = issuance_faults(s.issuance, where .. ".issuance"),
		storage = storage_fault_queue(s.storage, where .. ".storage"),
	}
end

local function enrollment(e, where, dir)
	want(e, "table", where)
	local attestation = opt_string(e.attestation, where .. ".attestation", "symmetric_key")
	if attestation ~= "symmetric_key" and attestation ~= "x509" then
		error(where .. ".attestation must be symmetric_key or x509", 0)
	end
	local out = { type = e.type, attestation = attestation }
	if e.type == "individual" then
		check_keys(e, { type = true, attestation = true, registration_id = true, symmetric_key = true,
			secondary_key = true, device_id = true, certificate = true, certificate_policy = true }, where)
		out.device_id = opt_string(e.device_id, where .. ".device_id")
		if attestation == "x509" then
			local crt = load_certs(dir, e.certificate, where .. ".certificate")[1]
			out.certificate = crt
			out.der = crt:tostring("DER")
			out.registration_id = opt_string(e.registration_id, where .. ".registration_id") or cn_of(crt)
			if not out.registration_id then error(where .. ": certificate has no CN", 0) end
		else
			out.registration_id = want(e.registration_id, "string", where .. ".registration_id")
			out.keys = { base64_key(e.symmetric_key, where .. ".symmetric_key") }
			if not is_null(e.secondary_key) then
				out.keys[2] = base64_key(e.secondary_key, where .. ".secondary_key")
			end
		end
	elseif e.type == "group" then
		check_keys(e, { type = true, attestation = true, group_id = true, symmetric_key = true,
			secondary_key = true, ca = true, certificate_policy = true }, where)
		out.group_id = want(e.group_id, "string", where .. ".group_id")
		if attestation == "x509" then
			out.ca = not is_null(e.ca) and load_certs(dir, e.ca, where .. ".ca") or nil
		else
			out.keys = { base64_key(e.symmetric_key, where .. ".symmetric_key") }
			if not is_null(e.secondary_key) then
				out.keys[2] = base64_key(e.secondary_key, where .. ".secondary_key")
			end
		end
	else
		error(where .. ".type must be individual or group", 0)
	end
	out.certificate_policy = certificate_policy(e.certificate_policy, where .. ".certificate_policy")
	return out
end

local function parse(t, dir)
	want(t, "table", "config")
	check_keys(t, { id_scope = true, hub = true, ready_file = true, log_file = true, listeners = true,
		client_ca = true, retry_after = true, polls_before_assignment = true, enrollments = true,
		scenarios = true, max_body_bytes = true, latency = true, register_quota = true,
		quota_window = true, cloud_to_device = true, issuance = true, storage = true }, "config")
	local c = {
		id_scope = opt_string(t.id_scope, "id_scope", "0ne00000001"),
		hub = opt_string(t.hub, "hub", "emulated-hub.azure-devices.net"),
		retry_after = retry_after(t.retry_after, "retry_after", "1"),
		polls_before_assignment = count(t.polls_before_assignment, "polls_before_assignment", 1),
		max_body_bytes = count(t.max_body_bytes, "max_body_bytes", 96 * 1024),
		-- seconds every DPS request waits before its answer (a distant service)
		latency = seconds(t.latency, "latency", 0),
		-- registrations accepted per quota_window seconds; past that: 429 (0: no quota)
		register_quota = count(t.register_quota, "register_quota", 0),
		quota_window = seconds(t.quota_window, "quota_window", 60),
		listeners = {},
		individual = {},  -- lower-cased registration id → enrollment
		groups = {},      -- symmetric-key groups, config order
		x509_groups = {},
		scenarios = {},   -- lower-cased registration id → scenario
	}
	c.storage = storage_config(t.storage, dir)
	local ready = opt_string(t.ready_file, "ready_file")
	c.ready_file = ready and resolve(dir, ready)
	local log = opt_string(t.log_file, "log_file")
	c.log_file = log and resolve(dir, log)

	if not is_array(t.listeners) or #t.listeners == 0 then
		error("listeners must be a non-empty array", 0)
	end
	for i, l in ipairs(t.listeners) do
		local where = "listeners[" .. i .. "]"
		want(l, "table", where)
		check_keys(l, { host = true, port = true, cert = true, key = true }, where)
		local certs = load_certs(dir, l.cert, where .. ".cert")
		c.listeners[i] = {
			host = opt_string(l.host, where .. ".host", "127.0.0.1"),
			port = count(l.port, where .. ".port", 0),
			cert = certs[1],
			key = load_key(dir, l.key, where .. ".key"),
		}
	end

	if not is_null(t.client_ca) then
		c.client_ca = load_certs(dir, t.client_ca, "client_ca")
	end

	-- the issuing CA of certificate issuance: {"ca","ca_key","root"} (PEM files)
	if not is_null(t.issuance) then
		want(t.issuance, "table", "issuance")
		check_keys(t.issuance, { ca = true, ca_key = true, root = true }, "issuance")
		c.issuance = {
			ca = load_certs(dir, t.issuance.ca, "issuance.ca")[1],
			ca_key = load_key(dir, t.issuance.ca_key, "issuance.ca_key"),
			root = load_certs(dir, t.issuance.root, "issuance.root")[1],
		}
	end

	local enrollments = t.enrollments
	if is_null(enrollments) then enrollments = {} end
	if not is_array(enrollments) then error("enrollments must be an array", 0) end
	for i, raw in ipairs(enrollments) do
		local e = enrollment(raw, "enrollments[" .. i .. "]", dir)
		if e.certificate_policy and not c.issuance then
			error("enrollments[" .. i .. "]: a certificate_policy needs the top-level issuance CA", 0)
		end
		if e.type == "individual" then
			c.individual[e.registration_id:lower()] = e
		elseif e.attestation == "x509" then
			e.ca = e.ca or c.client_ca
			if not e.ca then
				error("enrollments[" .. i .. "]: an x509 group needs ca or a top-level client_ca", 0)
			end
			c.x509_groups[#c.x509_groups + 1] = e
		else
			c.groups[#c.groups + 1] = e
		end
	end

	local scenarios = t.scenarios
	if is_null(scenarios) then scenarios = {} end
	want(scenarios, "table", "scenarios")
	for id, s in pairs(scenarios) do
		if type(id) ~= "string" then error("scenarios must be keyed by registration id", 0) end
		if id:sub(1, 1) ~= "_" then
			local sc = scenario(s, "scenarios." .. id)
			sc.retry_after = retry_after(sc.retry_after, "scenarios." .. id .. ".retry_after", c.retry_after)
			c.scenarios[id:lower()] = sc
		end
	end
	-- the hub's cloud-to-device queues at start: device ID → messages (emu_hub)
	if not is_null(t.cloud_to_device) then
		want(t.cloud_to_device, "table", "cloud_to_device")
		c.cloud_to_device = {}
		for id, list in pairs(t.cloud_to_device) do
			if type(id) == "string" and id:sub(1, 1) ~= "_" then
				if not is_array(list) then error("cloud_to_device." .. id .. " must be an array", 0) end
				for i, m in ipairs(list) do
					want(m, "table", "cloud_to_device." .. id .. "[" .. i .. "]")
					want(m.body, "string", "cloud_to_device." .. id .. "[" .. i .. "].body")
				end
				c.cloud_to_device[id] = list
			end
		end
	end
	return c
end

--- Load and check the config file. Returns the config table or nil, message.
function M.load(path)
	local text, err = util.read_file(path)
	if not text then return nil, "cannot read config: " .. tostring(err) end
	local t, jerr = cjson.decode(text)
	if t == nil then return nil, "config is not valid JSON: " .. tostring(jerr) end
	local dir = path:match("^(.*)/[^/]*$") or "."
	local ok, res = pcall(parse, t, dir)
	if not ok then return nil, "config: " .. tostring(res) end
	return res
end

--- The scenario for a registration id (defaults when none is configured:
-- one table per config, never changed by its callers).
function M.scenario_for(c, registration_id)
	local sc = c.scenarios[registration_id:lower()]
	if sc then return sc end
	if not c.default_scenario then
		c.default_scenario = {
			polls_before_assignment = nil, retry_after = c.retry_after, result = "assigned",
			register = {}, poll = {}, lookup = {}, issuance = {}, storage = {},
		}
	end
	return c.default_scenario
end

return M
