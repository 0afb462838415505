-- The IoT Hub of the DPS emulator: the device API over HTTPS (IoT Hub's
-- REST API for devices: messaging, file upload) for every device the emulator assigned,
-- and admin requests for tests and users. See README.md "The hub".
--
-- Device requests (api-version required, any value):
--   POST   /devices/{id}/messages/events                 telemetry, one message or a batch → 204
--   GET    /devices/{id}/messages/devicebound            cloud-to-device: 200 + ETag, or 204
--   DELETE /devices/{id}/messages/devicebound/{lock}     complete (`&reject`: reject) → 204 / 412
--   POST   /devices/{id}/messages/devicebound/{lock}/abandon                          → 204 / 412
--   POST   /devices/{id}/files                           file upload: a place and its SAS → 200
--   POST   /devices/{id}/files/notifications             the upload's outcome → 204 (emu_storage)
-- A device exists on a hub once the emulator assigned it there (until an
-- admin request deletes or moves it). Checks in order: route (404/405) →
-- body size (413) → api-version (400) → the device on the token's hub (404
-- DeviceNotFound) → the scenario's `hub` fault queue → token or client
-- certificate (401 IotHubUnauthorizedAccess) → the call. Every device
-- request is answered the config's `latency` after it came in (as DPS
-- requests are); admin requests and unknown paths at once.
--
-- Admin requests (no credentials: a local test tool):
--   POST   /admin/devices/{id}/c2d     body {"body","properties"?,"message_id"?,"correlation_id"?,"ack"?}
--   GET    /admin/devices/{id}/c2d     the queue and what was settled
--   GET    /admin/devices/{id}/events  telemetry received
--   DELETE /admin/devices/{id}         the hub forgets the device (404 until it provisions again)
--   POST   /admin/devices/{id}/move    body {"hub":"other-hub…"}: forgotten here; its next
--                                      registration assigns the other hub
--   GET    /admin/devices/{id}/certificates  the certificates issued to a registration ID
--   GET    /admin/devices/{id}/files   the device's file uploads and their notifications
--   POST   /admin/devices/{id}/storage_faults  body: a storage fault or an array of them
--   GET    /admin/blobs/{container}/{blob}     a blob's bytes
--   POST   /admin/storage              body {"host":"name[:port]"}: the storage host the hub names
--                                      ({}: the address the device reached the hub at)
local cjson = require "cjson.safe"
local cqueues = require "cqueues"
local hmac = require "openssl.hmac"
local util = require "emu_util"
local auth = require "emu_auth"
local http = require "emu_http"
local storage_mod = require "emu_storage"

local M = {}
M.__index = M

M.MAX_MESSAGE = 256 * 1024
M.MAX_QUEUE = 50
M.LOCK_SECONDS = 60
local BATCH = "application/vnd.microsoft.iothub.json"

function M.new(cfg, log, registry)
	local self = setmetatable({
		cfg = cfg, log = log, registry = registry,
		queues = {},   -- device id → { messages…, settled = { … } }
		events = {},   -- device id → telemetry received
		sequence = 0,
		hub_faults = {}, -- lower-cased registration id → hub requests so far
	}, M)
	self.storage = storage_mod.new(cfg, log, registry) -- file upload: the blob store
	for id, list in pairs(cfg.cloud_to_device or {}) do
		for _, m in ipairs(list) do self:enqueue(id, m) end
	end
	return self
end

local function queue_of(self, device_id)
	local q = self.queues[device_id]
	if not q then
		q = { settled = {} }
		self.queues[device_id] = q
	end
	return q
end

--- Queue a cloud-to-device message; nil, reason when the queue is full or
-- the message is not an object with a string body.
function M:enqueue(device_id, m)
	if type(m) ~= "table" or type(m.body) ~= "string" then
		return nil, "a message is an object with a string body"
	end
	local q = queue_of(self, device_id)
	if #q >= M.MAX_QUEUE then
		return nil, "full"
	end
	self.sequence = self.sequence + 1
	q[#q + 1] = {
		body = m.body, properties = type(m.properties) == "table" and m.properties or {},
		message_id = m.message_id or util.uuid(), correlation_id = m.correlation_id, ack = m.ack,
		sequence = self.sequence, enqueued = util.now(), delivery_count = 0,
	}
	return #q
end

-- Whether a device record is device_id's on `hub` (nil: any hub).
local function on_hub(dev, device_id, hub)
	local st = dev.state
	return st and st.status == "assigned" and st.deviceId == device_id and not dev.hub_gone
		and (hub == nil or st.assignedHub:lower() == hub:lower())
end

-- The device record of a device ID on `hub` (nil: not there). Devices come
-- from the registry's assignments: the one last assigned that device ID,
-- else (two registrations given one device ID) any that is there.
function M:device(device_id, hub)
	local dev = self.registry.by_device_id[device_id]
	if dev and on_hub(dev, device_id, hub) then return dev end
	for _, other in pairs(self.registry.devices) do
		if on_hub(other, device_id, hub) then return other end
	end
	return nil
end

local function hmac_sha256(key, msg)
	return hmac.new(key, "sha256"):final(msg)
end

-- The hub token of a device: {hub}/devices/{id}, signed with its key.
-- Returns the hub the token names (nil when it is no hub token) and a
-- check function for a device record.
local function parse_token(header)
	local f = auth.parse_sas(header or "")
	if not f or not f.sr or not f.sig or not f.se or not f.se:match("^%d+$") then
		return nil
	end
	local resource = util.url_decode(f.sr)
	local hub, id = resource:match("^([^/]+)/devices/(.+)$")
	return hub, id, f
end

local function token_ok(f, dev)
	if tonumber(f.se) <= util.now() then return false, "expired" end
	if f.skn then return false, "bad_skn" end
	local sig = util.url_decode(f.sig)
	local to_sign = f.sr .. "\n" .. f.se
	local e = dev.enrollment
	local keys = {}
	if e and e.type == "individual" and e.keys then
		keys = e.keys
	elseif e and e.type == "group" and e.keys then
		for i, g in ipairs(e.keys) do keys[i] = auth.derive(g, dev.state.registrationId) end
	end
	for _, key in ipairs(keys) do
		if util.equal_ct(util.b64encode(hmac_sha256(key, to_sign)), sig) then return true, "sas" end
	end
	return false, "bad_signature"
end

-- route(method, path) → call, device id, lock token; or "other", bad method
local function route(method, path)
	local s = {}
	for seg in path:gmatch("[^/]+") do s[#s + 1] = util.pct_decode(seg) end
	if s[1] ~= "devices" or (s[3] ~= "messages" and s[3] ~= "files") or path:find("//", 1, true) then
		return "other"
	end
	local call, want
	if #s == 3 and s[3] == "files" then
		call, want = "files", "POST"
	elseif #s == 4 and s[3] == "files" and s[4] == "notifications" then
		call, want = "files_notify", "POST"
	elseif s[3] ~= "messages" then
		return "other"
	elseif #s == 4 and s[4] == "events" then
		call, want = "send", "POST"
	elseif #s == 4 and s[4] == "devicebound" then
		call, want = "receive", "GET"
	elseif #s == 5 and s[4] == "devicebound" then
		call, want = "complete", "DELETE"
	elseif #s == 6 and s[4] == "devicebound" and s[6] == "abandon" then
		call, want = "abandon", "POST"
	else
		return "other"
	end
	if method ~= want then return "other", true end
	return call, s[2], s[5]
end

local function has_param(query, name)
	for pair in query:gmatch("[^&]+") do
		if util.url_decode((pair:match("^([^=]*)"))) == name then return true end
	end
	return false
end

local function hub_error(stream, status, code, text, extra)
	local headers = { { "iothub-errorcode", code } }
	for _, kv in ipairs(extra or {}) do headers[#headers + 1] = kv end
	local body = cjson.encode({
		Message = "ErrorCode:" .. code .. ";" .. text,
		ExceptionMessage = "Tracking ID:" .. util.uuid():gsub("-", "") .. "-G:0-TimeStamp:" .. util.utc(),
	})
	return http.respond(stream, status, headers, body)
end

local function json_answer(stream, status, value)
	return http.respond(stream, status, nil, assert(cjson.encode(value)))
end

local function app_properties(req_headers)
	local props = {}
	for name, value in req_headers:each() do
		local app = name:match("^iothub%-app%-(.+)$")
		if app then props[app] = value end
	end
	return props
end

-- Telemetry: one message, or a batch. Returns the messages or nil, reason.
local function messages_of(req_headers, body)
	local ctype = (req_headers:get("content-type") or ""):match("^%s*([^;%s]*)"):lower()
	if ctype ~= BATCH then
		return { {
			body = body, properties = app_properties(req_headers),
			message_id = req_headers:get("iothub-messageid"),
			correlation_id = req_headers:get("iothub-correlationid"),
			content_type = req_headers:get("iothub-contenttype"),
			content_encoding = req_headers:get("iothub-contentencoding"),
		} }
	end
	local doc = cjson.decode(body)
	if type(doc) ~= "table" or #doc == 0 then return nil, "a batch is a non-empty JSON array" end
	local out = {}
	for i, item in ipairs(doc) do
		local raw = type(item) == "table" and util.b64decode(item.body)
		if not raw then return nil, "batch item " .. i .. ": body is not base64" end
		local props, sys = {}, {}
		if type(item.properties) == "table" then
			for k, v in pairs(item.properties) do
				local app = type(k) == "string" and k:match("^iothub%-app%-(.+)$")
				if app then props[app] = v elseif type(k) == "string" then sys[k] = v end
			end
		end
		out[i] = { body = raw, properties = props, message_id = sys["iothub-messageid"],
			correlation_id = sys["iothub-correlationid"], content_type = sys["iothub-contenttype"],
			content_encoding = sys["iothub-contentencoding"] }
	end
	return out
end

local function http_date(t)
	return os.date("!%a, %d %b %Y %H:%M:%S GMT", math.floor(t))
end

-- The next message that is not locked (an expired lock counts as none).
local function next_message(q, now)
	for _, m in ipairs(q) do
		if not m.lock or m.locked_until <= now then return m end
	end
	return nil
end

local function find_lock(q, lock)
	for i, m in ipairs(q) do
		if m.lock == lock and m.locked_until > util.now() then return i, m end
	end
	return nil
end

--- Handle a device request under /devices/.
function M:handle(stream, req_headers, info, method, path, query)
	local call, device_id, lock = route(method, path)
	local entry = { event = "request", conn = info.id, method = method, path = path, kind = "hub_" .. call,
		device_id = device_id, status = cjson.null, auth = "none", fault = cjson.null, t = util.now() }
	-- the config's `latency`, as for DPS requests: the answer goes out that
	-- long after the request came in, the hub's own work inside that time
	-- (unknown paths get none)
	local answer_at = cqueues.monotime() + (call ~= "other" and self.cfg.latency or 0)
	local function finish(status)
		http.wait_until(answer_at)
		entry.status = status or cjson.null
		self.log:write(entry)
	end
	local body, berr = http.read_body(stream, req_headers, M.MAX_MESSAGE)
	if not body then
		if berr == "too_large" then
			finish(413)
			hub_error(stream, 413, "MessageTooLarge", "Message too large.")
		else
			finish(nil)
		end
		return http.abandon(stream)
	end
	if call == "other" then
		finish(device_id and 405 or 404)
		return hub_error(stream, device_id and 405 or 404, device_id and "MethodNotAllowed" or "NotFound",
			"No such resource.")
	end
	if not has_param(query, "api-version") then
		finish(400)
		return hub_error(stream, 400, "InvalidProtocolVersion", "api-version is missing.")
	end
	local header = req_headers:get("authorization")
	local token_hub, token_device, fields = parse_token(header)
	local dev = self:device(device_id, header and token_hub or nil)
	if not dev then
		finish(404)
		return hub_error(stream, 404, "DeviceNotFound", "The device " .. device_id .. " is not on this hub.")
	end
	entry.registration_id = dev.state.registrationId
	-- the scenario's hub faults, one per hub request of this registration
	local key = dev.state.registrationId:lower()
	self.hub_faults[key] = (self.hub_faults[key] or 0) + 1
	local sc = self.cfg.scenarios[key]
	local fault = sc and sc.hub and sc.hub[self.hub_faults[key]]
	if fault and fault.fault then
		entry.fault = fault.fault
		finish(nil)
		if fault.fault == "reset" then return http.reset(stream) end
		return http.hang(stream, fault.seconds)
	elseif fault then
		entry.fault = "status"
		finish(fault.status)
		local extra = fault.retry_after and { { "retry-after", fault.retry_after } } or nil
		return hub_error(stream, fault.status, fault.error_code, fault.message or "Injected fault.", extra)
	end
	local ok, how
	if header then
		if not token_hub or token_device ~= device_id then
			ok, how = false, "wrong_resource"
		else
			ok, how = token_ok(fields, dev)
		end
		entry.se = fields and tonumber(fields.se) or nil
	elseif info.leaf then
		-- an onboarding certificate (X.509 enrollments), else one the emulator issued
		local r = auth.check_x509(self.cfg, info.leaf, info.chain, dev.state.registrationId)
		if not r.ok then
			r = auth.check_issued(self.cfg, info.leaf, info.chain, dev.state.registrationId) or r
		end
		ok, how = r.ok, r.auth
	else
		ok, how = false, "none"
	end
	entry.auth = how
	if not ok then
		finish(401)
		return hub_error(stream, 401, "IotHubUnauthorizedAccess", "Unauthorized")
	end
	return self[call](self, stream, req_headers, body, query, device_id, lock, finish, dev)
end

-- File upload: a place in the blob store (emu_storage).
function M:files(stream, req_headers, body, _, device_id, _, finish, dev)
	local ok, answer, code, text = self.storage:start(device_id, dev.state.registrationId, body,
		req_headers:get(":authority") or "localhost")
	if not ok then
		finish(answer)
		return hub_error(stream, answer, code, text)
	end
	finish(200)
	return json_answer(stream, 200, answer)
end

-- File upload: the device says how it went.
function M:files_notify(stream, _, body, _, device_id, _, finish)
	local ok, status, code, text = self.storage:notify(device_id, body)
	if not ok then
		finish(status)
		return hub_error(stream, status, code, text)
	end
	finish(204)
	return http.respond_empty(stream, 204)
end

function M:send(stream, req_headers, body, _, device_id, _, finish)
	local list, why = messages_of(req_headers, body)
	if not list then
		finish(400)
		return hub_error(stream, 400, "ArgumentInvalid", why)
	end
	local store = self.events[device_id] or {}
	self.events[device_id] = store
	for _, m in ipairs(list) do
		store[#store + 1] = m
		self.log:write({ event = "telemetry", device_id = device_id, body = m.body, properties = m.properties,
			message_id = m.message_id or cjson.null, batch = #list > 1 or nil, t = util.now() })
	end
	finish(204)
	return http.respond_empty(stream, 204)
end

function M:receive(stream, _, _, _, device_id, _, finish)
	local q = queue_of(self, device_id)
	local now = util.now()
	local m = next_message(q, now)
	if not m then
		finish(204)
		return http.respond_empty(stream, 204)
	end
	m.lock = util.uuid()
	m.locked_until = now + M.LOCK_SECONDS
	m.delivery_count = m.delivery_count + 1
	local extra = {
		{ "etag", '"' .. m.lock .. '"' },
		{ "iothub-messageid", m.message_id },
		{ "iothub-sequencenumber", tostring(m.sequence) },
		{ "iothub-enqueuedtime", http_date(m.enqueued) },
		{ "iothub-expiry", http_date(m.enqueued + 3600) },
		{ "iothub-deliverycount", tostring(m.delivery_count) },
		{ "iothub-to", "/devices/" .. device_id .. "/messages/devicebound" },
	}
	if m.correlation_id then extra[#extra + 1] = { "iothub-correlationid", m.correlation_id } end
	if m.ack then extra[#extra + 1] = { "iothub-ack", m.ack } end
	local names = {}
	for k in pairs(m.properties) do names[#names + 1] = k end
	table.sort(names)
	for _, k in ipairs(names) do extra[#extra + 1] = { "iothub-app-" .. k, tostring(m.properties[k]) } end
	finish(200)
	return http.respond(stream, 200, extra, m.body, { content_type = "application/octet-stream" })
end

local function settle(self, stream, device_id, lock, how, finish)
	local q = queue_of(self, device_id)
	local i, m = find_lock(q, lock)
	if not i then
		finish(412)
		return hub_error(stream, 412, "DeviceMessageLockLost", "The lock token is not valid (any more).")
	end
	if how == "abandon" then
		m.lock, m.locked_until = nil, nil
	else
		table.remove(q, i)
	end
	q.settled[#q.settled + 1] = { message_id = m.message_id, outcome = how, delivery_count = m.delivery_count }
	finish(204)
	return http.respond_empty(stream, 204)
end

function M:complete(stream, _, _, query, device_id, lock, finish)
	return settle(self, stream, device_id, lock, has_param(query, "reject") and "reject" or "complete", finish)
end

function M:abandon(stream, _, _, _, device_id, lock, finish)
	return settle(self, stream, device_id, lock, "abandon", finish)
end

-- Admin ---------------------------------------------------------------------

--- Handle an admin request under /admin/.
function M:admin(stream, req_headers, info, method, path)
	local s = {}
	for seg in path:gmatch("[^/]+") do s[#s + 1] = util.pct_decode(seg) end
	local body = http.read_body(stream, req_headers, M.MAX_MESSAGE) or ""
	local device_id, what = s[3], s[4]
	self.log:write({ event = "admin", conn = info.id, method = method, path = path, t = util.now() })
	if s[2] == "blobs" and method == "GET" and #s >= 4 then
		local bytes = self.storage:read_blob(s[3], table.concat(s, "/", 4))
		if not bytes then return json_answer(stream, 404, { error = "no such blob" }) end
		return http.respond(stream, 200, nil, bytes, { content_type = "application/octet-stream" })
	end
	if s[2] == "storage" and method == "POST" and #s == 2 then
		-- where the hub sends devices to upload: {"host":"name:port"}; {} = back to its own address
		local doc = cjson.decode(body)
		if type(doc) ~= "table" or (doc.host ~= nil and (type(doc.host) ~= "string" or doc.host == "")) then
			return json_answer(stream, 400, { error = 'give {"host":"name[:port]"} or {}' })
		end
		self.storage.host = doc.host
		return json_answer(stream, 200, { host = doc.host or cjson.null })
	end
	if s[2] ~= "devices" or not device_id then
		return json_answer(stream, 404, { error = "no such admin request" })
	end
	if method == "POST" and what == "c2d" then
		local n, why = self:enqueue(device_id, cjson.decode(body))
		if not n then
			if why == "full" then
				return hub_error(stream, 403, "DeviceMaximumQueueDepthExceeded", "The queue holds 50 messages.")
			end
			return json_answer(stream, 400, { error = why })
		end
		return json_answer(stream, 201, { queued = n })
	elseif method == "GET" and what == "c2d" then
		local q = queue_of(self, device_id)
		local pending = {}
		for i, m in ipairs(q) do
			pending[i] = { body = m.body, message_id = m.message_id, delivery_count = m.delivery_count,
				locked = m.lock ~= nil and m.locked_until > util.now() }
		end
		return json_answer(stream, 200, { pending = pending, settled = q.settled })
	elseif method == "GET" and what == "certificates" then
		-- by registration ID (a device may be issued certificates before it is on a hub)
		local dev = self.registry.devices[device_id:lower()]
		local list = {}
		for i, crt in ipairs(dev and dev.issued or {}) do
			local nb, na = crt:getLifetime()
			list[i] = { serial = crt:getSerial():tohex(), not_before = nb, not_after = na, pem = crt:toPEM() }
		end
		if #list == 0 then
			return http.respond(stream, 200, nil, "[]")
		end
		return json_answer(stream, 200, list)
	elseif method == "GET" and what == "files" then
		local list = self.storage:files(device_id)
		if #list == 0 then return http.respond(stream, 200, nil, "[]") end
		return json_answer(stream, 200, list)
	elseif method == "POST" and what == "storage_faults" then
		local n, why = self.storage:add_faults(device_id, cjson.decode(body))
		if not n then return json_answer(stream, 400, { error = why }) end
		return json_answer(stream, 201, { queued = n })
	elseif method == "GET" and what == "events" then
		return json_answer(stream, 200, self.events[device_id] or cjson.empty_array)
	elseif method == "DELETE" and what == nil then
		local dev = self:device(device_id)
		if dev then dev.hub_gone = true end
		return json_answer(stream, dev and 200 or 404, { deleted = dev ~= nil })
	elseif method == "POST" and what == "move" then
		local to = (cjson.decode(body) or {}).hub
		local dev = self:device(device_id)
		if type(to) ~= "string" or to == "" or not dev then
			return json_answer(stream, 400, { error = "give {\"hub\":…} for a device on a hub" })
		end
		dev.hub_gone = true
		dev.moved_to = to
		return json_answer(stream, 200, { moved = to })
	end
	return json_answer(stream, 404, { error = "no such admin request" })
end

return M
