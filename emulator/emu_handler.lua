-- Request handling of the DPS emulator: routing, validation, attestation,
-- fault injection and logging for the three device calls.
--
-- Order of checks for a request: route (404/405) → body size (413) → fault
-- queue → ID scope (404) → api-version (400) → attestation (401) →
-- Content-Type (415) → body (400) → csr (400) → the operation.
local cjson = require "cjson.safe"
local cqueues = require "cqueues"
local util = require "emu_util"
local auth = require "emu_auth"
local config = require "emu_config"
local http = require "emu_http"
local emu_tls = require "emu_tls"
local emu_csr = require "emu_csr"
local hub_mod = require "emu_hub"

local H = {}
H.__index = H

local null = cjson.null

--- handler for one emulator: cfg (emu_config), log (emu_log), registry.
function H.new(cfg, log, registry)
	return setmetatable({
		cfg = cfg,
		log = log,
		registry = registry,
		conns = setmetatable({}, { __mode = "k" }), -- connection → info
		next_conn = 0,
		quota_times = { first = 1, last = 0 }, -- monotonic times of accepted registrations
		hub = hub_mod.new(cfg, log, registry), -- the IoT Hub of assigned devices
	}, H)
end

-- route(method, path) → kind, scope, registration id, operation id, bad method?
local function route(method, path)
	local s = {}
	for seg in path:gmatch("[^/]+") do s[#s + 1] = util.pct_decode(seg) end
	if path:find("//", 1, true) or s[2] ~= "registrations" then
		return "other"
	end
	local kind, want
	if #s == 4 and s[4] == "register" then
		kind, want = "register", "PUT"
	elseif #s == 5 and s[4] == "operations" then
		kind, want = "poll", "GET"
	elseif #s == 3 then
		kind, want = "lookup", "POST"
	else
		return "other"
	end
	if method ~= want then
		return "other", s[1], s[3], nil, true
	end
	return kind, s[1], s[3], s[5]
end

local function query_param(query, name)
	for pair in query:gmatch("[^&]+") do
		local k, v = pair:match("^([^=]*)=?(.*)$")
		if util.url_decode(k) == name then return util.url_decode(v) end
	end
	return nil
end

-- Per-connection facts: id (logged once) and the client certificate.
function H:connection(stream, listener)
	local conn = stream.connection
	local info = self.conns[conn]
	if info then return info end
	self.next_conn = self.next_conn + 1
	info = { id = self.next_conn }
	local ssl = conn:checktls()
	if ssl then
		info.leaf = ssl:getPeerCertificate()
		info.chain = ssl:getPeerChain()
		if info.leaf then info.cn = config.cn_of(info.leaf) end
		info.resumed = emu_tls.session_reused(ssl)
	end
	self.conns[conn] = info
	self.log:write({
		event = "connection", conn = info.id, listener = listener, t = util.now(),
		client_cert = info.cn or null,
		resumed = info.resumed == nil and null or info.resumed, -- TLS session resumed (LuaJIT only)
	})
	return info
end

-- Attestation: SAS header first, else the client certificate, else none.
function H:attest(req_headers, info, scope, registration_id)
	local header = req_headers:get("authorization")
	if header then
		return auth.check_sas(self.cfg, header, scope, registration_id, util.now())
	elseif info.leaf then
		local r = auth.check_x509(self.cfg, info.leaf, info.chain, registration_id)
		if r.ok then r.certificate_info = auth.certificate_info(info.leaf) end
		return r
	end
	return { ok = false, auth = "none", message = "Unauthorized" }
end

local function is_json(ctype)
	local media = ctype and ctype:match("^%s*([^;%s]+)")
	return media ~= nil and media:lower() == "application/json"
end

-- Check a PUT/POST body. Returns the decoded body and the raw payload text,
-- or nil and a message.
local function check_body(body, registration_id)
	local t = cjson.decode(body)
	if type(t) ~= "table" or not body:match("^%s*{") then
		return nil, "The request body is not a JSON object."
	end
	if type(t.registrationId) ~= "string" then
		return nil, "registrationId is missing."
	end
	if t.registrationId:lower() ~= registration_id:lower() then
		return nil, "registrationId does not match the request path."
	end
	local raw
	if t.payload ~= nil and t.payload ~= null then
		raw = util.raw_member(body, "payload")
		if type(t.payload) ~= "table" or not raw or not raw:match("^{") then
			return nil, "payload must be a JSON object."
		end
	end
	return t, raw
end

--- The registration quota: nil when one more registration fits in the
-- window (and counts it), else the whole seconds until one does.
function H:over_quota()
	local quota, window = self.cfg.register_quota, self.cfg.quota_window
	if quota == 0 then return nil end
	local now, times = cqueues.monotime(), self.quota_times
	while times.first <= times.last and times[times.first] <= now - window do
		times[times.first] = nil
		times.first = times.first + 1
	end
	if times.last - times.first + 1 >= quota then
		return math.max(1, math.ceil(times[times.first] + window - now))
	end
	times.last = times.last + 1
	times[times.last] = now
	return nil
end

--- Handle one request stream (called by http.server for each request).
function H:handle(stream, listener)
	local req_headers = stream:get_headers(30)
	if not req_headers then return end
	local info = self:connection(stream, listener)
	local method = req_headers:get(":method")
	local target = req_headers:get(":path") or "/"
	local path, query = target:match("^([^?]*)%??(.*)$")
	if path:find("^/devices/") then
		return self.hub:handle(stream, req_headers, info, method, path, query)
	elseif path:find("^/admin/") then
		return self.hub:admin(stream, req_headers, info, method, path)
	elseif self.hub.storage:owns(path) then
		return self.hub.storage:handle(stream, req_headers, info, method, path, query)
	end
	local kind, scope, reg_id, op_id, bad_method = route(method, path)
	local entry = {
		event = "request", conn = info.id, method = method, path = path, kind = kind,
		registration_id = reg_id or null, status = null, auth = "none", fault = null,
		t = util.now(),
		user_agent = req_headers:get("user-agent") or req_headers:get("useragent") or null,
		payload = null,
	}
	local raw_payload
	-- When the answer may go out: `latency` seconds after the request came
	-- in. The emulator's own work (body, token check, JSON) happens inside
	-- that time, as a distant service's does, instead of on top of it.
	local answer_at = cqueues.monotime() + (kind ~= "other" and self.cfg.latency or 0)
	-- Waits until then and logs the request before its answer goes out, so a
	-- client that has its answer always finds the request in the log.
	local function finish(status)
		http.wait_until(answer_at)
		entry.status = status or null
		self.log:write(entry, raw_payload)
	end

	local body, berr = http.read_body(stream, req_headers, self.cfg.max_body_bytes)
	if not body then
		if berr == "too_large" then
			finish(413)
			http.error_response(stream, 413, 413001, "The request body is too large.", nil, { close = true })
		else
			finish(nil)
		end
		return http.abandon(stream)
	end

	if kind == "other" then
		if bad_method then
			finish(405)
			return http.error_response(stream, 405, 405001, "Method not allowed.")
		end
		finish(404)
		return http.error_response(stream, 404, 404001, "Not found.")
	end

	-- fault injection --------------------------------------------------------
	local fault = self.registry:next_fault(reg_id, kind)
	local opts = {}
	if fault then
		entry.fault = fault.fault or "status"
		if fault.status and not fault.fault then
			local extra = fault.retry_after and { { "retry-after", fault.retry_after } } or nil
			finish(fault.status)
			return http.error_response(stream, fault.status, fault.error_code,
				fault.message or "Injected fault.", extra)
		end
		local name = fault.fault
		if name == "hang" then
			finish(nil)
			return http.hang(stream, fault.seconds or 600)
		elseif name == "reset" then
			finish(nil)
			return http.reset(stream)
		elseif name == "non_json" then
			finish(200)
			return http.non_json(stream)
		elseif name == "oversized" then
			finish(200)
			return http.oversized(stream, fault.bytes or 2 * 1024 * 1024)
		elseif name == "no_body" then
			local st = fault.status or 503
			finish(st)
			return http.respond_empty(stream, st)
		elseif name == "raw" then
			-- a hostile answer, exactly as scripted: status, extra headers, body
			local st = fault.status or 200
			local extra = {}
			for k, v in pairs(fault.headers or {}) do extra[#extra + 1] = { tostring(k):lower(), tostring(v) } end
			table.sort(extra, function(a, b) return a[1] < b[1] end)
			finish(st)
			return http.respond(stream, st, extra, fault.body or "")
		elseif name == "delay" then
			-- the request goes on after the delay; its answer, the latency later
			cqueues.sleep(fault.seconds or 1)
			answer_at = answer_at + (fault.seconds or 1)
		elseif name == "close" then
			opts.close = true
		elseif name == "slow" then
			opts.slow = fault.delay or 0.05
		elseif name == "truncated" then
			opts.truncate = true
		end
	end

	-- validation ---------------------------------------------------------------
	local function fail(status, code, message, extra_opts)
		finish(status)
		return http.error_response(stream, status, code, message, nil, extra_opts or opts)
	end
	if scope:lower() ~= self.cfg.id_scope:lower() then
		return fail(404, 404001, "The ID scope was not found.")
	end
	if not query_param(query, "api-version") then
		return fail(400, 400001, "The api-version query parameter is missing.")
	end
	local who = self:attest(req_headers, info, scope, reg_id)
	entry.auth = who.auth
	entry.se = who.se -- the token's expiry (not a secret), so specs can see renewals
	if not who.ok then
		return fail(401, 401002, who.message)
	end
	local decoded
	if kind ~= "poll" then
		if not is_json(req_headers:get("content-type")) then
			return fail(415, 415001, "Content-Type must be application/json.")
		end
		local msg
		decoded, msg = check_body(body, reg_id)
		if not decoded then
			return fail(400, 400004, msg)
		end
		if kind == "register" then
			raw_payload = msg
			if raw_payload then entry.payload = util.RAW end
		end
	end

	-- certificate issuance: a csr in a register body is checked here (400
	-- when it cannot be issued), issued below; a lookup never takes one
	local csr_req, policy
	if decoded and decoded.csr ~= nil and decoded.csr ~= null then
		entry.csr = true
		if kind == "lookup" then
			return fail(400, 400004, "csr is not accepted by the registration status lookup.")
		end
		policy = who.enrollment and who.enrollment.certificate_policy
		if not policy then
			return fail(400, 400004, "The enrollment has no certificate policy: no certificate can be issued.")
		end
		local why
		csr_req, why = emu_csr.check(decoded.csr, reg_id, policy)
		if not csr_req then
			return fail(400, 400004, why)
		end
	end

	-- the operation --------------------------------------------------------------
	if kind == "register" then
		local wait = self:over_quota()
		if wait then
			entry.fault = "quota"
			finish(429)
			return http.error_response(stream, 429, 429001, "Too many requests: the registration quota is used up.",
				{ { "retry-after", tostring(wait) } }, opts)
		end
	end
	local status, result, splice
	if kind == "register" then
		local chain, leaf
		if csr_req then
			local issuance_fault = self.registry:next_fault(reg_id, "issuance")
			chain, leaf = emu_csr.issue(self.cfg.issuance, reg_id, csr_req, policy, issuance_fault, util.now())
			entry.issuance_fault = issuance_fault
			entry.issued_serial = leaf and leaf:getSerial():tohex() or nil
		end
		status, result, splice = self.registry:register(reg_id, {
			enrollment = who.enrollment,
			certificate_info = who.certificate_info,
			payload_raw = raw_payload,
			chain = chain,
			leaf = leaf,
		})
	elseif kind == "poll" then
		status, result, splice = self.registry:poll(reg_id, op_id)
		if not status then
			return fail(404, 404204, "The operation was not found.")
		end
	else
		status, result, splice = self.registry:lookup(reg_id)
		if not status then
			return fail(404, 404203, "The registration was not found.")
		end
	end

	local extra = {}
	if fault and fault.fault == "no_operation_id" and kind ~= "lookup" then
		status = 202
		result = { status = "assigning" }
		if kind == "poll" then
			result.registrationState = { registrationId = reg_id, status = "assigning" }
		end
	end
	if fault and fault.fault == "no_assigned_hub" then
		local function without_hub(state)
			local copy = {}
			for k, v in pairs(state) do copy[k] = v end
			copy.assignedHub = nil
			return copy
		end
		if kind == "lookup" then
			result = without_hub(result)
		elseif result.registrationState then
			result = { operationId = result.operationId, status = result.status,
				registrationState = without_hub(result.registrationState) }
		end
	end
	if status == 202 then
		local ra = self.registry:retry_after(reg_id)
		if ra then extra[#extra + 1] = { "retry-after", ra } end
		extra[#extra + 1] = { "location", string.format("https://%s/%s/registrations/%s/register?api-version=%s",
			req_headers:get(":authority") or "localhost", scope, reg_id, query_param(query, "api-version")) }
	end
	local text = util.empty_arrays(assert(cjson.encode(result)))
	if splice then text = util.splice(text, splice) end
	finish(status)
	return http.respond(stream, status, extra, text, opts)
end

return H
