-- The local DPS emulator on its own, driven the way its README documents:
-- one curl process per request (curl --cacert …), SAS tokens computed with the
-- openssl CLI. Never uses the project's `dps` modules.
local cjson = require "cjson"
local emulator = require "spec.support.emulator"
local shell = require "spec.support.shell"

local keys = require "spec.support.keys"
local KEY = keys.KEY_32
local GROUP_KEY = keys.GROUP_KEY
local OTHER_KEY = keys.OTHER_KEY
local API = "api-version=2021-06-01"

local q, write = shell.quote, shell.write

local function read(path)
	return assert(shell.read(path), "cannot read " .. path)
end

-- A command's standard output, whatever its exit status.
local function sh(cmd)
	return (shell.run(cmd))
end

-- base64(HMAC-SHA256(base64decode(key), msg)) with the openssl CLI
local function hmac_b64(key_b64, msg)
	local file = os.tmpname()
	write(file, msg)
	local hex = sh("printf %s " .. q(key_b64) .. " | base64 -d | od -An -v -tx1 | tr -d ' \\n'")
	local out = sh("openssl dgst -sha256 -mac HMAC -macopt hexkey:" .. hex .. " -binary < " .. q(file)
		.. " | base64 -w0")
	os.remove(file)
	assert(#out == 44, "openssl HMAC failed")
	return out
end

local function pct(s)
	return (s:gsub("[^%w%-%._~]", function(c) return string.format("%%%02X", c:byte()) end))
end

-- "SharedAccessSignature sr=…&sig=…&se=…&skn=registration" (sr upper-hex encoded)
local function token(key_b64, scope, registration_id, se)
	se = se or (os.time() + 3600)
	local sr = pct(scope .. "/registrations/" .. registration_id)
	local sig = hmac_b64(key_b64, sr .. "\n" .. se)
	return "SharedAccessSignature sr=" .. sr .. "&sig=" .. pct(sig) .. "&se=" .. se .. "&skn=registration"
end

-- A device's hub token: "SharedAccessSignature sr=…&sig=…&se=…" for
-- {hub}/devices/{device_id} (no skn)
local function hub_token(key_b64, hub, device_id, se)
	se = se or (os.time() + 3600)
	local sr = pct(hub .. "/devices/" .. device_id)
	return "SharedAccessSignature sr=" .. sr .. "&sig=" .. pct(hmac_b64(key_b64, sr .. "\n" .. se)) .. "&se=" .. se
end

local function parse_headers(text)
	local h = {}
	for line in text:gmatch("[^\r\n]+") do
		local k, v = line:match("^([^:]+):%s*(.-)%s*$")
		if k then h[k:lower()] = v end
	end
	return h
end

describe("DPS emulator #emulator", function()
	local certs, emu

	lazy_setup(function()
		certs = emulator.certs()
		local enrollments = {
			{ type = "individual", registration_id = "dev-01", symmetric_key = KEY, device_id = "dev-01-hub" },
			{ type = "individual", registration_id = "dev-direct", symmetric_key = KEY },
			{ type = "individual", registration_id = "dev-misc", symmetric_key = KEY },
			{ type = "individual", registration_id = "dev-hubfaults", symmetric_key = KEY },
			{ type = "group", group_id = "g1", symmetric_key = GROUP_KEY },
			{ type = "individual", attestation = "x509", certificate = certs.x509_self_01 },
			{ type = "group", group_id = "x509-group", attestation = "x509" },
		}
		emu = emulator.start {
			enrollments = enrollments,
			scenarios = {
				["dev-direct"] = { polls_before_assignment = 0 },
				["dev-hubfaults"] = { polls_before_assignment = 0, hub = { cjson.null, { fault = "reset" },
					{ fault = "hang", seconds = 1 }, { status = 503, error_code = "ServerBusy", retry_after = "2" } } },
				["grp-429"] = { register = { { status = 429, retry_after = "1" } } },
				["grp-html"] = { register = { { fault = "non_json" } } },
				["grp-close"] = { register = { { fault = "close" } } },
				["grp-hang"] = { register = { { fault = "hang" } } },
				["grp-reset"] = { register = { { fault = "reset" } } },
				["grp-trunc"] = { register = { { fault = "truncated" } } },
				["grp-nobody"] = { register = { { fault = "no_body" } } },
				["grp-big"] = { register = { { fault = "oversized", bytes = 300000 } } },
				["grp-noop"] = { register = { { fault = "no_operation_id" } } },
				["grp-nohub"] = { polls_before_assignment = 0, register = { { fault = "no_assigned_hub" } } },
				["grp-failed"] = { polls_before_assignment = 0, result = "failed" },
				["grp-noretry"] = { retry_after = false },
				["grp-slow"] = { register = { { fault = "slow", delay = 0.01 } } },
				["grp-delay"] = { register = { { fault = "delay", seconds = 1 } } },
				["grp-pollfault"] = { poll = { { status = 503, retry_after = "2" } } },
			},
		}
	end)

	lazy_teardown(function()
		if emu then emu:stop() end
	end)

	-- One curl process per request. o: method, path, token, body, headers,
	-- cert, key, base (endpoint), max_time, content_type (false: none).
	local function curl(o)
		local hfile, bfile, efile = os.tmpname(), os.tmpname(), os.tmpname()
		local args = { "curl", "-sS", "--cacert", q(emu.ca_file), "-D", q(hfile), "-o", q(bfile),
			"-w", q("%{http_code} %{time_total} %{time_pretransfer} %{time_starttransfer}"),
			"-m", tostring(o.max_time or 10) }
		if o.method then args[#args + 1] = "-X " .. o.method end
		if o.token then args[#args + 1] = "-H " .. q("Authorization: " .. o.token) end
		if o.body then
			if o.content_type ~= false then
				args[#args + 1] = "-H " .. q("Content-Type: " .. (o.content_type or "application/json"))
			end
			args[#args + 1] = "--data-binary " .. q(o.body)
		end
		for _, h in ipairs(o.headers or {}) do args[#args + 1] = "-H " .. q(h) end
		if o.cert then args[#args + 1] = "--cert " .. q(o.cert) end
		if o.key then args[#args + 1] = "--key " .. q(o.key) end
		args[#args + 1] = q((o.base or emu.endpoint) .. o.path)
		local out = sh(table.concat(args, " ") .. " 2>" .. q(efile) .. "; echo \" $?\"")
		local code, secs, sent, first, rc = out:match("^(%d*) ([%d.,]*) ([%d.,]*) ([%d.,]*)%s+(%d+)%s*$")
		local function number(x) return tonumber((string.gsub(x or "", ",", "."))) end
		local r = {
			status = tonumber(code),
			seconds = number(secs),
			-- from the request sent to the answer's first byte: the server's
			-- time alone, without curl's start, the connection and TLS
			waited = (number(first) or 0) - (number(sent) or 0),
			exit = tonumber(rc),
			headers = parse_headers(read(hfile)),
			body = read(bfile),
			stderr = read(efile),
		}
		os.remove(hfile)
		os.remove(bfile)
		os.remove(efile)
		local ok, t = pcall(cjson.decode, r.body)
		if ok then r.json = t end
		return r
	end

	local function register(id, o)
		o = o or {}
		o.method = "PUT"
		o.path = "/" .. emu.id_scope .. "/registrations/" .. id .. "/register?" .. API
		o.body = o.body or cjson.encode({ registrationId = id })
		return curl(o)
	end

	local function poll(id, op, o)
		o = o or {}
		o.path = "/" .. emu.id_scope .. "/registrations/" .. id .. "/operations/" .. op .. "?" .. API
		return curl(o)
	end

	local function last_request(id)
		local r = emu:requests(id)
		return r[#r]
	end

	it("registers and polls to 'assigned' with an openssl-computed token", function()
		local tok = token(KEY, emu.id_scope, "dev-01")
		local r = register("dev-01", { token = tok })
		assert.are.equal(202, r.status)
		assert.are.equal("assigning", r.json.status)
		assert.is_string(r.json.operationId)
		assert.are.equal("1", r.headers["retry-after"])
		assert.is_truthy(r.headers["location"])
		assert.are.equal("chunked", r.headers["transfer-encoding"])
		assert.is_nil(r.headers["content-length"])
		assert.are.equal("application/json; charset=utf-8", r.headers["content-type"])

		local p = poll("dev-01", r.json.operationId, { token = tok })
		assert.are.equal(200, p.status)
		assert.are.equal("assigned", p.json.status)
		local st = p.json.registrationState
		assert.are.equal("dev-01", st.registrationId)
		assert.are.equal("dev-01-hub", st.deviceId)
		assert.are.equal("emulated-hub.azure-devices.net", st.assignedHub)
		assert.are.equal("initialAssignment", st.substatus)
		assert.matches("^%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%d%.%d%d%d%d%d%d%dZ$", st.createdDateTimeUtc)
		assert.is_string(st.etag)
		assert.is_nil(st.symmetricKey)

		local log = emu:requests("dev-01")
		assert.are.equal(2, #log)
		assert.are.same({ "register", "poll" }, { log[1].kind, log[2].kind })
		assert.are.same({ "sas", "sas" }, { log[1].auth, log[2].auth })
		assert.are.same({ 202, 200 }, { log[1].status, log[2].status })
		assert.matches("^curl/", log[1].user_agent)
	end)

	it("says deviceDataMigrated on re-registration and answers the status lookup", function()
		local tok = token(KEY, emu.id_scope, "dev-direct")
		local lookup = function()
			return curl({ method = "POST", token = tok, body = cjson.encode({ registrationId = "dev-direct" }),
				path = "/" .. emu.id_scope .. "/registrations/dev-direct?" .. API })
		end
		assert.are.equal(404, lookup().status)
		local first = register("dev-direct", { token = tok })
		assert.are.equal(200, first.status)
		assert.are.equal("initialAssignment", first.json.registrationState.substatus)
		local again = register("dev-direct", { token = tok })
		assert.are.equal(200, again.status)
		assert.are.equal("deviceDataMigrated", again.json.registrationState.substatus)
		local l = lookup()
		assert.are.equal(200, l.status)
		assert.are.equal("assigned", l.json.status)
		assert.are.equal("dev-direct", l.json.deviceId)
		assert.are.equal("lookup", last_request("dev-direct").kind)
	end)

	it("rejects a bad signature with 401 / 401002 and logs no secret", function()
		local good = token(KEY, emu.id_scope, "dev-misc")
		local bad = token("AAAA" .. KEY:sub(5), emu.id_scope, "dev-misc")
		local r = register("dev-misc", { token = bad })
		assert.are.equal(401, r.status)
		assert.are.equal(401002, r.json.errorCode)
		assert.are.equal("401002", r.headers["x-ms-error-code"])
		assert.matches("^%x+%-%x+%-%x+%-%x+%-%x+$", r.json.trackingId)
		assert.is_string(r.json.message)
		assert.is_string(r.json.timestampUtc)
		assert.are.equal("bad_signature", last_request("dev-misc").auth)
		local text = read(emu.log_file)
		for _, t in ipairs({ good, bad }) do
			assert.is_nil(text:find(t:match("sig=([^&]+)"), 1, true))
		end
		assert.is_nil(text:find("SharedAccessSignature", 1, true))
		assert.is_nil(text:find(KEY, 1, true))
	end)

	it("rejects an expired token with 401", function()
		local r = register("dev-misc", { token = token(KEY, emu.id_scope, "dev-misc", os.time() - 10) })
		assert.are.equal(401, r.status)
		assert.are.equal(401002, r.json.errorCode)
		assert.are.equal("expired", last_request("dev-misc").auth)
	end)

	it("rejects a token for another registration id (sr mismatch)", function()
		local r = register("dev-misc", { token = token(KEY, emu.id_scope, "dev-01") })
		assert.are.equal(401, r.status)
		assert.are.equal("wrong_resource", last_request("dev-misc").auth)
	end)

	it("answers 401 without any credential", function()
		local r = register("dev-misc")
		assert.are.equal(401, r.status)
		assert.are.equal("none", last_request("dev-misc").auth)
	end)

	it("answers 404 for a wrong ID scope", function()
		local tok = token(KEY, "0ne99999999", "dev-misc")
		local r = curl({ method = "PUT", token = tok, body = cjson.encode({ registrationId = "dev-misc" }),
			path = "/0ne99999999/registrations/dev-misc/register?" .. API })
		assert.are.equal(404, r.status)
		assert.are.equal(404001, r.json.errorCode)
	end)

	it("checks api-version, Content-Type and the body", function()
		local tok = token(KEY, emu.id_scope, "dev-misc")
		local no_api = curl({ method = "PUT", token = tok, body = cjson.encode({ registrationId = "dev-misc" }),
			path = "/" .. emu.id_scope .. "/registrations/dev-misc/register" })
		assert.are.equal(400, no_api.status)
		assert.are.equal(415, register("dev-misc", { token = tok, content_type = "text/plain" }).status)
		assert.are.equal(202, register("dev-misc", { token = tok,
			content_type = "Application/JSON; charset=utf-8" }).status)
		local cases = { "not json", "[]", '{"registrationId":"other"}', "{}",
			'{"registrationId":"dev-misc","payload":[]}', '{"registrationId":"dev-misc","payload":"x"}' }
		for _, body in ipairs(cases) do
			local r = register("dev-misc", { token = tok, body = body })
			assert.are.equal(400, r.status, body)
			assert.are.equal(400004, r.json.errorCode, body)
		end
		local big = cjson.encode({ registrationId = "dev-misc", payload = { s = string.rep("x", 100 * 1024) } })
		assert.are.equal(413, register("dev-misc", { token = tok, body = big }).status)
		local unknown = poll("dev-misc", "5.0000.nope", { token = tok })
		assert.are.equal(404, unknown.status)
	end)

	it("accepts a group-derived key and names the group", function()
		local derived = hmac_b64(GROUP_KEY, "leaf-01")
		local tok = token(derived, emu.id_scope, "leaf-01")
		local r = register("leaf-01", { token = tok })
		assert.are.equal(202, r.status)
		local p = poll("leaf-01", r.json.operationId, { token = tok })
		assert.are.equal("assigned", p.json.status)
		assert.are.equal("leaf-01", p.json.registrationState.deviceId)
		assert.are.same({ enrollmentGroupId = "g1" }, p.json.registrationState.symmetricKey)
		-- the group key itself is no device key
		local r2 = register("leaf-01", { token = token(GROUP_KEY, emu.id_scope, "leaf-01") })
		assert.are.equal(401, r2.status)
	end)

	it("echoes the request payload verbatim and logs it", function()
		local tok = token(hmac_b64(GROUP_KEY, "leaf-payload"), emu.id_scope, "leaf-payload")
		local body = '{"registrationId":"leaf-payload","payload":{"modelId":"dtmi:x;1","list":[],"n":1.5}}'
		local r = register("leaf-payload", { token = tok, body = body })
		assert.are.equal(202, r.status)
		local p = poll("leaf-payload", r.json.operationId, { token = tok })
		assert.are.equal(200, p.status)
		assert.matches('"payload":{"modelId":"dtmi:x;1","list":%[%],"n":1.5}', p.body)
		assert.are.equal("dtmi:x;1", emu:requests("leaf-payload")[1].payload.modelId)
		assert.is_nil(emu:requests("leaf-payload")[2].payload)
	end)

	it("injects a 429 with Retry-After, then behaves normally", function()
		local tok = token(hmac_b64(GROUP_KEY, "grp-429"), emu.id_scope, "grp-429")
		local r = register("grp-429", { token = tok })
		assert.are.equal(429, r.status)
		assert.are.equal("1", r.headers["retry-after"])
		assert.are.equal(429001, r.json.errorCode)
		local again = register("grp-429", { token = tok })
		assert.are.equal(202, again.status)
		local log = emu:requests("grp-429")
		assert.are.same({ "status", nil }, { log[1].fault, log[2].fault })
	end)

	it("injects an HTML answer (non_json)", function()
		local r = register("grp-html", { token = token(hmac_b64(GROUP_KEY, "grp-html"), emu.id_scope, "grp-html") })
		assert.are.equal(200, r.status)
		assert.matches("^text/html", r.headers["content-type"])
		assert.is_nil(r.json)
		assert.are.equal("non_json", last_request("grp-html").fault)
	end)

	it("serves a register and its poll over one keep-alive connection", function()
		local id = "leaf-keepalive"
		local tok = token(hmac_b64(GROUP_KEY, id), emu.id_scope, id)
		local base = emu.endpoint .. "/" .. emu.id_scope .. "/registrations/" .. id
		local cmd = table.concat({
			"curl -sS -o /dev/null -o /dev/null --cacert", q(emu.ca_file),
			"-X PUT -H", q("Authorization: " .. tok), "-H 'Content-Type: application/json'",
			"--data-binary", q(cjson.encode({ registrationId = id })),
			q(base .. "/register?" .. API), q(base .. "/register?" .. API),
		}, " ")
		sh(cmd)
		local reqs = emu:requests(id)
		assert.are.equal(2, #reqs)
		assert.are.same({ 202, 202 }, { reqs[1].status, reqs[2].status })
		assert.are.equal(1, #emu:connections(id))
	end)

	it("closes the connection after a 'close' fault, so the client reconnects", function()
		local id = "grp-close"
		local tok = token(hmac_b64(GROUP_KEY, id), emu.id_scope, id)
		local base = emu.endpoint .. "/" .. emu.id_scope .. "/registrations/" .. id
		local hfile = os.tmpname()
		sh(table.concat({
			"curl -sS -o /dev/null -o /dev/null -D", q(hfile), "--cacert", q(emu.ca_file),
			"-X PUT -H", q("Authorization: " .. tok), "-H 'Content-Type: application/json'",
			"--data-binary", q(cjson.encode({ registrationId = id })),
			q(base .. "/register?" .. API), q(base .. "/register?" .. API),
		}, " "))
		local headers = read(hfile)
		os.remove(hfile)
		assert.matches("[Cc]onnection: close", headers)
		local reqs = emu:requests(id)
		assert.are.equal(2, #reqs)
		assert.are.same({ 202, 202 }, { reqs[1].status, reqs[2].status })
		assert.are.equal(2, #emu:connections(id))
	end)

	it("accepts an X.509 device certificate that chains to the client CA", function()
		local c = { cert = certs.x509_device_01_chain, key = certs.x509_device_01_key }
		local r = register("x509-device-01", c)
		assert.are.equal(202, r.status)
		local p = poll("x509-device-01", r.json.operationId,
			{ cert = certs.x509_device_01_chain, key = certs.x509_device_01_key })
		assert.are.equal(200, p.status)
		local st = p.json.registrationState
		assert.are.equal("assigned", st.status)
		assert.are.equal("x509-device-01", st.registrationId)
		assert.are.equal("x509-device-01", st.deviceId)
		assert.are.equal("x509-group", st.x509.enrollmentGroupId)
		assert.are.equal("CN=x509-device-01", st.x509.certificateInfo.subjectName)
		assert.are.equal("x509", last_request("x509-device-01").auth)
		local conns = {}
		for _, e in ipairs(emu:log()) do
			if e.event == "connection" then conns[e.conn] = e.client_cert end
		end
		assert.are.equal("x509-device-01", conns[last_request("x509-device-01").conn])
	end)

	it("accepts the enrolled self-signed certificate of an individual enrollment", function()
		local r = register("x509-self-01", { cert = certs.x509_self_01, key = certs.x509_self_01_key })
		assert.are.equal(202, r.status)
		local p = poll("x509-self-01", r.json.operationId, { cert = certs.x509_self_01, key = certs.x509_self_01_key })
		assert.are.equal("assigned", p.json.status)
		assert.is_nil(p.json.registrationState.x509.enrollmentGroupId)
	end)

	it("answers a rogue certificate (same CN, self-signed) with 401 / 401002", function()
		local r = register("x509-device-01", { cert = certs.rogue, key = certs.rogue_key })
		assert.are.equal(0, r.exit, r.stderr)
		assert.are.equal(401, r.status)
		assert.are.equal(401002, r.json.errorCode)
		assert.are.equal("untrusted_certificate", last_request("x509-device-01").auth)
	end)

	it("refuses a valid certificate used for another registration id", function()
		local r = register("x509-device-02", { cert = certs.x509_device_01_chain, key = certs.x509_device_01_key })
		assert.are.equal(401, r.status)
		assert.are.equal(401002, r.json.errorCode)
	end)

	it("serves an expired certificate and a certificate without IP SAN", function()
		assert.are.equal(60, register("dev-misc", { base = emu.expired_endpoint }).exit)
		assert.are.equal(60, register("dev-misc", { base = emu.ip_endpoint }).exit)
	end)

	describe("connection faults", function()
		local function tok(id)
			return token(hmac_b64(GROUP_KEY, id), emu.id_scope, id)
		end

		it("hang: no answer", function()
			local r = register("grp-hang", { token = tok("grp-hang"), max_time = 1 })
			assert.are.equal(28, r.exit)
			assert.are.equal("hang", last_request("grp-hang").fault)
			assert.is_nil(last_request("grp-hang").status)
		end)

		it("reset: the connection is aborted", function()
			local r = register("grp-reset", { token = tok("grp-reset") })
			assert.are_not.equal(0, r.exit)
			assert.are.equal(0, r.status)
			assert.are.equal(202, register("grp-reset", { token = tok("grp-reset") }).status)
		end)

		it("truncated: the chunked body stops before its end", function()
			local r = register("grp-trunc", { token = tok("grp-trunc") })
			assert.are.equal(18, r.exit, r.stderr)
		end)

		it("no_body: 503 with an empty body", function()
			local r = register("grp-nobody", { token = tok("grp-nobody") })
			assert.are.equal(503, r.status)
			assert.are.equal("", r.body)
			assert.are.equal("0", r.headers["content-length"])
		end)

		it("oversized: a body of the configured size", function()
			local r = register("grp-big", { token = tok("grp-big") })
			assert.are.equal(200, r.status)
			assert.are.equal(300000, #r.body)
		end)

		it("no_operation_id: a 202 without operationId", function()
			local r = register("grp-noop", { token = tok("grp-noop") })
			assert.are.equal(202, r.status)
			assert.are.equal("assigning", r.json.status)
			assert.is_nil(r.json.operationId)
		end)

		it("no_assigned_hub: an assigned state without assignedHub", function()
			local r = register("grp-nohub", { token = tok("grp-nohub") })
			assert.are.equal(200, r.status)
			assert.are.equal("assigned", r.json.status)
			assert.is_nil(r.json.registrationState.assignedHub)
			assert.are.equal("grp-nohub", r.json.registrationState.deviceId)
		end)

		it("result failed: errorCode 400207", function()
			local r = register("grp-failed", { token = tok("grp-failed") })
			assert.are.equal("failed", r.json.status)
			assert.are.equal(400207, r.json.registrationState.errorCode)
		end)

		it("slow: the body arrives one byte at a time", function()
			local r = register("grp-slow", { token = tok("grp-slow") })
			assert.are.equal(202, r.status)
			assert.are.equal("assigning", r.json.status)
			assert.is_true(r.seconds >= #r.body * 0.01 * 0.8, tostring(r.seconds))
		end)

		it("delay: a normal answer after the configured seconds", function()
			local r = register("grp-delay", { token = tok("grp-delay") })
			assert.are.equal(202, r.status)
			assert.is_true(r.seconds >= 1, tostring(r.seconds))
			assert.are.equal("delay", last_request("grp-delay").fault)
		end)

		it("a status fault on the first poll, then the normal poll", function()
			local r = register("grp-pollfault", { token = tok("grp-pollfault") })
			assert.are.equal(202, r.status)
			local p1 = poll("grp-pollfault", r.json.operationId, { token = tok("grp-pollfault") })
			assert.are.equal(503, p1.status)
			assert.are.equal("2", p1.headers["retry-after"])
			assert.are.equal(503001, p1.json.errorCode)
			local p2 = poll("grp-pollfault", r.json.operationId, { token = tok("grp-pollfault") })
			assert.are.equal(200, p2.status)
			assert.are.equal("assigned", p2.json.status)
		end)

		it("retry_after false: a 202 without Retry-After", function()
			local r = register("grp-noretry", { token = tok("grp-noretry") })
			assert.are.equal(202, r.status)
			assert.is_nil(r.headers["retry-after"])
		end)
	end)

	it("the hub's fault queue: one element per hub request, null passes, then reset, hang, a status", function()
		local r = register("dev-hubfaults", { token = token(KEY, emu.id_scope, "dev-hubfaults") })
		assert.are.equal(200, r.status, r.body)
		local tok = hub_token(KEY, r.json.registrationState.assignedHub, "dev-hubfaults")
		local function send(n)
			return curl { method = "POST", path = "/devices/dev-hubfaults/messages/events?api-version=2020-03-13",
				body = "m" .. n, content_type = "text/plain", token = tok, max_time = 5 }
		end
		assert.are.equal(204, send(1).status) -- null: answered
		local reset = send(2)
		assert.are.equal(0, reset.status)
		assert.are.equal(56, reset.exit, reset.stderr) -- CURLE_RECV_ERROR: the connection was reset
		local hang = send(3)
		assert.are.equal(0, hang.status) -- no answer: the connection closed after `seconds`
		assert.is_true(hang.seconds >= 1 and hang.seconds < 5, tostring(hang.seconds))
		local busy = send(4)
		assert.are.equal(503, busy.status)
		assert.are.equal("ServerBusy", busy.headers["iothub-errorcode"])
		assert.are.equal("2", busy.headers["retry-after"])
		assert.are.equal(204, send(5).status) -- the queue is used up
		local faults = {}
		for _, e in ipairs(emu:requests("dev-hubfaults")) do
			if e.kind == "hub_send" then
				faults[#faults + 1] = (e.fault == nil or e.fault == cjson.null) and "none" or e.fault
			end
		end
		assert.are.same({ "none", "reset", "hang", "status", "none" }, faults)
		-- telemetry only from the requests answered
		local events = curl { path = "/admin/devices/dev-hubfaults/events" }
		local bodies = {}
		for i, m in ipairs(cjson.decode(events.body)) do bodies[i] = m.body end
		assert.are.same({ "m1", "m5" }, bodies)
	end)

	describe("latency", function()
		local slow
		lazy_setup(function()
			slow = emulator.start {
				latency = 0.3,
				enrollments = { { type = "individual", registration_id = "dev-far", symmetric_key = KEY },
					{ type = "individual", registration_id = "dev-far-delay", symmetric_key = KEY },
					{ type = "individual", registration_id = "dev-far-hub", symmetric_key = KEY } },
				scenarios = { ["dev-far-delay"] = { register = { { fault = "delay", seconds = 0.4 } } },
					["dev-far-hub"] = { polls_before_assignment = 0 } },
			}
		end)
		lazy_teardown(function()
			if slow then slow:stop() end
		end)

		it("answers a request no sooner than `latency` after it came in, and a delay fault on top", function()
			local r = register("dev-far", { token = token(KEY, slow.id_scope, "dev-far"), base = slow.endpoint })
			assert.are.equal(202, r.status)
			assert.is_true(r.seconds >= 0.3, tostring(r.seconds))
			local p = poll("dev-far", r.json.operationId, { token = token(KEY, slow.id_scope, "dev-far"),
				base = slow.endpoint })
			assert.are.equal(200, p.status)
			assert.is_true(p.seconds >= 0.3, tostring(p.seconds))
			local d = register("dev-far-delay", { token = token(KEY, slow.id_scope, "dev-far-delay"),
				base = slow.endpoint })
			assert.are.equal(202, d.status)
			assert.is_true(d.seconds >= 0.7, tostring(d.seconds))
			-- unknown paths are not DPS calls: no latency
			local other = curl { path = "/nowhere", base = slow.endpoint }
			assert.are.equal(404, other.status)
			assert.is_true(other.waited < 0.3, tostring(other.waited))
		end)

		it("answers the hub's device requests no sooner than `latency` either; admin and unknown paths at once",
			function()
			local r = register("dev-far-hub", { token = token(KEY, slow.id_scope, "dev-far-hub"), base = slow.endpoint })
			assert.are.equal(200, r.status, r.body)
			local hub = r.json.registrationState.assignedHub
			local function hub_call(o)
				o.base = slow.endpoint
				o.token = o.token or hub_token(KEY, hub, "dev-far-hub")
				return curl(o)
			end
			local events = "/devices/dev-far-hub/messages/events?api-version=2020-03-13"
			local sent = hub_call { method = "POST", path = events, body = "far", content_type = "text/plain" }
			assert.are.equal(204, sent.status, sent.body)
			assert.is_true(sent.seconds >= 0.3, tostring(sent.seconds))
			local c2d = hub_call { path = "/devices/dev-far-hub/messages/devicebound?api-version=2020-03-13" }
			assert.are.equal(204, c2d.status, c2d.body)
			assert.is_true(c2d.seconds >= 0.3, tostring(c2d.seconds))
			-- a refusal takes as long as an answer (the hub is just as far away)
			local refused = hub_call { method = "POST", path = events, body = "far", content_type = "text/plain",
				token = hub_token(OTHER_KEY, hub, "dev-far-hub") }
			assert.are.equal(401, refused.status, refused.body)
			assert.is_true(refused.seconds >= 0.3, tostring(refused.seconds))
			-- not device calls: at once
			local unknown = hub_call { path = "/devices/dev-far-hub/nothing?api-version=2020-03-13" }
			assert.are.equal(404, unknown.status)
			assert.is_true(unknown.waited < 0.3, tostring(unknown.waited))
			local admin = curl { path = "/admin/devices/dev-far-hub/events", base = slow.endpoint }
			assert.are.equal(200, admin.status, admin.body)
			assert.are.equal("far", cjson.decode(admin.body)[1].body)
			assert.is_true(admin.waited < 0.3, tostring(admin.waited))
		end)
	end)

	-- Certificate issuance (emulator/emu_csr.lua): requests made and judged
	-- with the openssl command, as a device of the service would send them.
	describe("certificate issuance", function()
		local iemu, dir
		local POLICY = { validity_days = 30, curves = { "P-384", "P-256" } }

		lazy_setup(function()
			dir = shell.tmpdir("dps-emu-csr")
			local function individual(id, policy)
				return { type = "individual", registration_id = id, symmetric_key = KEY, certificate_policy = policy }
			end
			iemu = emulator.start {
				polls_before_assignment = 1,
				enrollments = {
					individual("cert-01", POLICY), individual("cert-bad", POLICY), individual("cert-hub", POLICY),
					individual("cert-384only", { validity_days = 7 }), individual("cert-nopolicy"),
					individual("cert-faults", POLICY),
					{ type = "group", group_id = "cert-group", symmetric_key = GROUP_KEY, certificate_policy = POLICY },
				},
				scenarios = {
					["cert-faults"] = { issuance = { "no_chain", "wrong_key", "garbage", "long_chain", "reversed",
						"empty_chain" } },
				},
			}
		end)
		lazy_teardown(function()
			if iemu then iemu:stop() end
			if dir then shell.run("rm -rf " .. q(dir)) end
		end)

		local function openssl(args)
			local out, ok = shell.run("cd " .. q(dir) .. " && openssl " .. args .. " 2>&1")
			assert(ok, "openssl " .. args .. ": " .. tostring(out))
			return out
		end

		-- A new key NAME.key on CURVE and a request for CN (-sha384 or -sha256), base64 of its DER.
		local function csr(name, cn, curve, md)
			openssl("genpkey -algorithm EC -pkeyopt ec_paramgen_curve:" .. (curve or "P-384") .. " -out " .. name .. ".key")
			openssl("req -new -key " .. name .. ".key -subj " .. q("/CN=" .. cn) .. " -" .. (md or "sha384")
				.. " -outform DER -out " .. name .. ".der")
			return (openssl("base64 -A -in " .. name .. ".der"):gsub("%s+$", ""))
		end

		local function tok(id, group)
			return token(group and hmac_b64(GROUP_KEY, id) or KEY, iemu.id_scope, id)
		end

		-- register with a csr, then poll to the end: the final answer
		local function issue(id, csr_b64, group)
			local body = cjson.encode({ registrationId = id, csr = csr_b64 })
			local r = register(id, { token = tok(id, group), body = body, base = iemu.endpoint })
			if r.status ~= 202 then return r end
			return poll(id, r.json.operationId, { token = tok(id, group), base = iemu.endpoint })
		end

		-- base64 DER certificates written as PEM files NAME-1.pem, NAME-2.pem, …
		local function write_chain(name, chain)
			for i, c in ipairs(chain) do
				write(dir .. "/" .. name .. ".der.b64", c)
				openssl("base64 -d -A -in " .. name .. ".der.b64 -out " .. name .. ".der")
				openssl("x509 -inform DER -in " .. name .. ".der -out " .. name .. "-" .. i .. ".pem")
			end
		end

		local function lookup(id, body)
			return curl({ method = "POST", token = tok(id), base = iemu.endpoint,
				body = body or cjson.encode({ registrationId = id }),
				path = "/" .. iemu.id_scope .. "/registrations/" .. id .. "?" .. API })
		end

		it("issues a P-384 request a chain (leaf, issuing CA, root) that verifies to the emulator's root", function()
			local p = issue("cert-01", csr("c1", "cert-01"))
			assert.are.equal(200, p.status, p.body)
			local st = p.json.registrationState
			assert.are.equal("assigned", st.status)
			assert.are.equal(3, #st.issuedCertificateChain)
			write_chain("c1", st.issuedCertificateChain)
			assert.are.equal("c1-1.pem: OK\n", openssl("verify -CAfile " .. q(iemu.certs.issuance_root_ca)
				.. " -untrusted c1-2.pem c1-1.pem"))
			assert.are.equal(read(iemu.certs.issuance_ca), read(dir .. "/c1-2.pem"))
			assert.are.equal(read(iemu.certs.issuance_root_ca), read(dir .. "/c1-3.pem"))
			assert.are.equal("subject=CN=cert-01\n", openssl("x509 -in c1-1.pem -noout -subject -nameopt RFC2253"))
			assert.are.equal(openssl("pkey -in c1.key -pubout"), openssl("x509 -in c1-1.pem -noout -pubkey"))
			local text = openssl("x509 -in c1-1.pem -noout -text")
			assert.truthy(text:find("ecdsa-with-SHA384", 1, true))
			assert.truthy(text:find("TLS Web Client Authentication", 1, true))
			local function date(which)
				local d = openssl("x509 -in c1-1.pem -noout -" .. which):match("=(.-)%s*$")
				return tonumber((sh("date -u -d " .. q(d) .. " +%s")))
			end
			assert.are.equal(30 * 86400, date("enddate") - date("startdate"))
			local entry = iemu:requests("cert-01")[1]
			assert.is_true(entry.csr)
			assert.are.equal(openssl("x509 -in c1-1.pem -noout -serial"):match("=(%x+)"), entry.issued_serial)
			local admin = curl({ base = iemu.endpoint, path = "/admin/devices/cert-01/certificates" })
			assert.are.equal(200, admin.status)
			assert.are.equal(1, #admin.json)
			assert.are.equal(entry.issued_serial, admin.json[1].serial)
			assert.are.equal(read(dir .. "/c1-1.pem"), admin.json[1].pem)
		end)

		it("issues a P-256 request and a group device's, within the policy", function()
			local p = issue("cert-group-01", csr("g1", "cert-group-01", "P-256", "sha256"), true)
			assert.are.equal(200, p.status, p.body)
			assert.are.equal("cert-group", p.json.registrationState.symmetricKey.enrollmentGroupId)
			write_chain("g1", p.json.registrationState.issuedCertificateChain)
			assert.are.equal("g1-1.pem: OK\n", openssl("verify -CAfile " .. q(iemu.certs.issuance_root_ca)
				.. " -untrusted g1-2.pem g1-1.pem"))
			assert.truthy(openssl("x509 -in g1-1.pem -noout -text"):find("NIST CURVE: P-256", 1, true))
		end)

		it("never returns the chain from the status lookup, and answers a lookup with a csr 400", function()
			local l = lookup("cert-01")
			assert.are.equal(200, l.status)
			assert.are.equal("assigned", l.json.status)
			assert.is_nil(l.json.issuedCertificateChain)
			local bad = lookup("cert-01", cjson.encode({ registrationId = "cert-01", csr = csr("l1", "cert-01") }))
			assert.are.equal(400, bad.status)
			assert.are.equal(400004, bad.json.errorCode)
			assert.truthy(bad.json.message:find("status lookup", 1, true), bad.json.message)
			assert.is_true(iemu:requests("cert-01")[#iemu:requests("cert-01")].csr)
		end)

		it("answers a request it cannot issue with 400 and an error body, registering nothing", function()
			local good = csr("b0", "cert-bad")
			local der = read(dir .. "/b0.der")
			local flipped = der:sub(1, #der - 3) .. string.char((der:byte(#der - 2) + 1) % 256) .. der:sub(#der - 1)
			write(dir .. "/flipped.der", flipped)
			openssl("genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:1024 -out rsa.key")
			openssl("req -new -key rsa.key -subj /CN=cert-bad -outform DER -out rsa.der")
			local cases = {
				{ csr("b1", "cert-other"), "subject CN must be the registration ID" },
				{ csr("b2", "CERT-BAD"), "subject CN must be the registration ID" },
				{ (openssl("base64 -A -in flipped.der"):gsub("%s+$", "")), "signature does not verify" },
				{ (openssl("base64 -A -in rsa.der"):gsub("%s+$", "")), "RSA keys are not supported" },
				{ csr("b3", "cert-bad", "P-521"), "not EC on P-384 or P-256" },
				{ "!!!", "is not base64" },
				{ good:sub(1, 40), "not a DER PKCS#10" },
				{ "-----BEGIN CERTIFICATE REQUEST-----\n" .. good .. "\n-----END CERTIFICATE REQUEST-----",
					"without PEM armour" },
				{ 42, "must be a string" },
			}
			for i, c in ipairs(cases) do
				local p = issue("cert-bad", c[1])
				assert.are.equal(400, p.status, "case " .. i .. ": " .. p.body)
				assert.are.equal(400004, p.json.errorCode)
				assert.truthy(p.json.message:find(c[2], 1, true), "case " .. i .. ": " .. p.json.message)
			end
			assert.are.equal(404, lookup("cert-bad").status) -- never registered
			local p256 = issue("cert-384only", csr("b4", "cert-384only", "P-256", "sha256"))
			assert.are.equal(400, p256.status)
			assert.truthy(p256.json.message:find("allows P-384", 1, true), p256.json.message)
			local ok = issue("cert-384only", csr("b5", "cert-384only"))
			assert.are.equal(200, ok.status, ok.body)
			local none = issue("cert-nopolicy", csr("b6", "cert-nopolicy"))
			assert.are.equal(400, none.status)
			assert.truthy(none.json.message:find("no certificate policy", 1, true), none.json.message)
		end)

		it("lets its hub take the device by the issued certificate, over mutual TLS", function()
			if not iemu.x509 then
				pending("the emulator asks for client certificates only under LuaJIT")
				return
			end
			local p = issue("cert-hub", csr("h1", "cert-hub"))
			assert.are.equal(200, p.status, p.body)
			write_chain("h1", p.json.registrationState.issuedCertificateChain)
			write(dir .. "/h1-chain.pem", read(dir .. "/h1-1.pem") .. read(dir .. "/h1-2.pem"))
			local function send(cert, key)
				return curl({ method = "POST", base = iemu.endpoint, body = "hello", content_type = "text/plain",
					cert = dir .. "/" .. cert, key = dir .. "/" .. key,
					path = "/devices/cert-hub/messages/events?api-version=2020-03-13" })
			end
			local r = send("h1-chain.pem", "h1.key")
			assert.are.equal(204, r.status, r.body)
			local entries = iemu:requests("cert-hub")
			assert.are.equal("x509_issued", entries[#entries].auth)
			assert.are.equal(204, send("h1-1.pem", "h1.key").status) -- the leaf alone
			-- another device's issued certificate is not this device's
			local other = send("c1-1.pem", "c1.key")
			assert.are.equal(401, other.status)
			entries = iemu:requests("cert-hub")
			assert.are.equal("registration_id_mismatch", entries[#entries].auth)
		end)

		it("answers with the scripted issuance faults, one per issuance, then normally", function()
			local function final(n)
				return issue("cert-faults", csr("f" .. n, "cert-faults")).json.registrationState
			end
			local st = final(1)
			assert.are.equal("assigned", st.status)
			assert.is_nil(st.issuedCertificateChain) -- no_chain
			st = final(2) -- wrong_key
			write_chain("f2", st.issuedCertificateChain)
			assert.are_not.equal(openssl("pkey -in f2.key -pubout"), openssl("x509 -in f2-1.pem -noout -pubkey"))
			assert.are.equal("f2-1.pem: OK\n", openssl("verify -CAfile " .. q(iemu.certs.issuance_root_ca)
				.. " -untrusted f2-2.pem f2-1.pem"))
			st = final(3) -- garbage
			assert.are.equal(3, #st.issuedCertificateChain)
			assert.is_nil(st.issuedCertificateChain[1]:find("^[%w+/]+=*$"))
			st = final(4) -- long_chain
			assert.are.equal(100, #st.issuedCertificateChain)
			st = final(5) -- reversed: root first, leaf last
			write_chain("f5", st.issuedCertificateChain)
			assert.are.equal(read(iemu.certs.issuance_root_ca), read(dir .. "/f5-1.pem"))
			assert.are.equal("subject=CN=cert-faults\n", openssl("x509 -in f5-3.pem -noout -subject -nameopt RFC2253"))
			local empty = issue("cert-faults", csr("f6", "cert-faults"))
			assert.truthy(empty.body:find('"issuedCertificateChain":[]', 1, true), empty.body)
			st = final(7) -- the queue is used up
			assert.are.equal(3, #st.issuedCertificateChain)
			local faults = {}
			for _, e in ipairs(iemu:requests("cert-faults")) do
				if e.kind == "register" then faults[#faults + 1] = e.issuance_fault or "none" end
			end
			assert.are.same({ "no_chain", "wrong_key", "garbage", "long_chain", "reversed", "empty_chain", "none" },
				faults)
		end)
	end)
end)
