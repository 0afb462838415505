-- The blob store of the emulator's hub (file upload, iot-hub-https.md "File
-- upload"): the hub's two calls (`POST /devices/{id}/files` hands out a
-- place and a SAS, `POST …/files/notifications` takes the outcome) and the
-- storage requests a device then makes with that SAS, on the emulator's
-- own listeners under the path of the container: `PUT /{container}/{blob}`
-- with `x-ms-blob-type: BlockBlob` (one request), `…?comp=block&blockid=…`
-- and `…?comp=blocklist`. Bodies are streamed to files, never held whole;
-- blobs are kept as files under `storage.dir`.
--
-- The SAS names one blob: HMAC-SHA256 under a key the emulator draws at
-- start over the permissions, the expiry and the blob's path; a request
-- whose SAS is missing, another blob's, altered or expired is a 403
-- `AuthenticationFailed`. Faults (scenario `storage`, or the admin request
-- `POST /admin/devices/{id}/storage_faults`) fail chosen storage requests.
local cjson = require "cjson.safe"
local hmac = require "openssl.hmac"
local rand = require "openssl.rand"
local pstat = require "posix.sys.stat"
local util = require "emu_util"
local http = require "emu_http"
local config = require "emu_config"

local S = {}
S.__index = S

S.MAX_REQUEST = 100 * 1024 * 1024 -- bytes of one PUT: the service's limit of a block
S.MAX_BLOCKS = 50000 -- blocks in a block list
S.MAX_NAME = 1024 -- characters of a blob name
S.MAX_BLOCK_ID = 64 -- bytes of a decoded block ID
local SAS_VERSION = "2018-03-28"
local IO_TIMEOUT = 30
local null = cjson.null

function S.new(cfg, log, registry)
	local st = cfg.storage
	return setmetatable({
		cfg = cfg, log = log, registry = registry,
		key = rand.bytes(32), -- signs every SAS this emulator issues
		dir = st.dir, container = st.container, host = st.host, ttl = st.sas_ttl, max_active = st.max_active,
		uploads = {},   -- correlation id → upload
		by_device = {}, -- device id → its uploads, in start order
		by_blob = {},   -- "container/blob" → the latest upload of that blob
		blocks = {},    -- "container/blob" → { len = block ID length, ids = { block ID → file } }
		faults = {},    -- device id → storage fault queue
	}, S)
end

-- Files and names -------------------------------------------------------------

local function mkdir_p(path)
	local sofar = path:sub(1, 1) == "/" and "" or "."
	for seg in path:gmatch("[^/]+") do
		sofar = sofar .. "/" .. seg
		if not pstat.stat(sofar) then
			local ok, err = pstat.mkdir(sofar, 493) -- 0755
			if not ok and not pstat.stat(sofar) then return nil, err end
		end
	end
	return true
end

local function parent(path)
	return path:match("^(.*)/[^/]*$") or "."
end

local function pct_encode(s)
	return (s:gsub("[^%w%-%._~]", function(c) return string.format("%%%02X", c:byte()) end))
end

--- What is wrong with a blob name (the device's part, or the whole name), or
-- nil: 1-1024 characters, no control character or backslash, no empty, `.`
-- or `..` path segment (the emulator keeps blobs as files under their name).
function S.name_problem(name)
	if type(name) ~= "string" or name == "" or #name > S.MAX_NAME then
		return "blobName must be a string of 1-" .. S.MAX_NAME .. " characters"
	end
	if name:find("[%z\1-\31\127\\]") then
		return "blobName must not contain control characters or a backslash"
	end
	for seg in (name .. "/"):gmatch("([^/]*)/") do
		if seg == "" or seg == "." or seg == ".." then
			return "blobName must not have an empty, '.' or '..' path segment"
		end
	end
	return nil
end

--- The file of a blob.
function S:blob_file(container, blob)
	return self.dir .. "/" .. container .. "/" .. blob
end

-- The SAS of a blob: base64 HMAC-SHA256 of permissions, expiry, resource, version.
local function signature(self, sp, se, container, blob)
	local to_sign = sp .. "\n" .. se .. "\n/blob/emulated/" .. container .. "/" .. blob .. "\n" .. SAS_VERSION
	return util.b64encode(hmac.new(self.key, "sha256"):final(to_sign))
end

-- The hub's calls ---------------------------------------------------------------

local function copy_queue(list)
	local out = {}
	for i, f in ipairs(list or {}) do
		local c = {}
		for k, v in pairs(f) do c[k] = v end
		out[i] = c
	end
	return out
end

-- The device's storage fault queue (made from its scenario on first use).
local function fault_queue(self, device_id, registration_id)
	local q = self.faults[device_id]
	if not q then
		q = copy_queue(registration_id and config.scenario_for(self.cfg, registration_id).storage)
		self.faults[device_id] = q
	end
	return q
end

--- `POST /devices/{id}/files`: a place for the blob and its SAS.
-- @return true and the answer (a table), or nil, status, hub error code, text
function S:start(device_id, registration_id, body, authority)
	local doc = cjson.decode(body)
	if type(doc) ~= "table" or type(doc.blobName) ~= "string" then
		return nil, 400, "ArgumentInvalid", 'The body must be a JSON object {"blobName":"…"}.'
	end
	local problem = S.name_problem(doc.blobName)
	if problem then
		return nil, 400, "ArgumentInvalid", problem .. "."
	end
	local now = util.now()
	local active = 0
	for _, u in ipairs(self.by_device[device_id] or {}) do
		if not u.notification and u.expires > now then active = active + 1 end
	end
	if active >= self.max_active then
		return nil, 403, "DeviceMaximumActiveFileUploadLimitExceeded",
			string.format("The device has %d file uploads in progress, the most the hub allows.", active)
	end
	local blob = device_id .. "/" .. doc.blobName
	if #blob > S.MAX_NAME then
		return nil, 400, "ArgumentInvalid", "blobName is too long with the device ID in front of it."
	end
	local expires = math.floor(now + self.ttl)
	local se = os.date("!%Y-%m-%dT%H:%M:%SZ", expires)
	local u = {
		correlation_id = util.b64encode(os.date("!%Y%m%d%H%M%S", math.floor(now)) .. "_" .. util.uuid()),
		device_id = device_id, registration_id = registration_id, container = self.container, blob = blob,
		se = se, expires = expires, started = now,
	}
	self.uploads[u.correlation_id] = u
	local list = self.by_device[device_id] or {}
	self.by_device[device_id] = list
	list[#list + 1] = u
	self.by_blob[self.container .. "/" .. blob] = u
	fault_queue(self, device_id, registration_id)
	local sig = signature(self, "rw", se, self.container, blob)
	return true, {
		correlationId = u.correlation_id,
		hostName = self.host or authority,
		containerName = self.container,
		blobName = blob,
		sasToken = "?sv=" .. SAS_VERSION .. "&sr=b&sig=" .. pct_encode(sig) .. "&se=" .. pct_encode(se) .. "&sp=rw",
	}
end

--- `POST /devices/{id}/files/notifications`: the outcome of an upload. The
-- first notification of an upload is kept; the same one again is answered
-- alike (a client that lost the answer sends it again).
-- @return true, or nil, status, hub error code, text
function S:notify(device_id, body)
	local doc = cjson.decode(body)
	if type(doc) ~= "table" or type(doc.correlationId) ~= "string" or type(doc.isSuccess) ~= "boolean"
		or type(doc.statusCode) ~= "number" or doc.statusCode ~= math.floor(doc.statusCode)
		or (doc.statusDescription ~= nil and type(doc.statusDescription) ~= "string") then
		return nil, 400, "ArgumentInvalid", "The body must be {correlationId: string, isSuccess: boolean, "
			.. "statusCode: integer, statusDescription: string}."
	end
	local u = self.uploads[doc.correlationId]
	if not u or u.device_id ~= device_id then
		return nil, 400, "ArgumentInvalid", "No file upload of this device has that correlationId."
	end
	if not u.notification then
		u.notification = { isSuccess = doc.isSuccess, statusCode = doc.statusCode,
			statusDescription = doc.statusDescription or "" }
		self.log:write({ event = "file_notification", device_id = device_id, correlation_id = u.correlation_id,
			blob = u.container .. "/" .. u.blob, is_success = doc.isSuccess, status_code = doc.statusCode,
			status_description = doc.statusDescription or "", t = util.now() })
	end
	return true
end

-- Admin ----------------------------------------------------------------------------

--- The uploads of a device, oldest first (for `GET /admin/devices/{id}/files`).
function S:files(device_id)
	local out = {}
	for i, u in ipairs(self.by_device[device_id] or {}) do
		local file = self:blob_file(u.container, u.blob)
		local st = pstat.stat(file)
		out[i] = {
			correlation_id = u.correlation_id, container = u.container, blob_name = u.blob,
			started = u.started, expires = u.expires,
			notification = u.notification or null,
			size = st and st.st_size or null, file = st and file or null, content_type = u.content_type or null,
			blocks = u.committed_blocks or null,
		}
	end
	return out
end

--- Append storage faults to a device's queue (`POST /admin/devices/{id}/storage_faults`).
-- @return the queue's length, or nil, message
function S:add_faults(device_id, value)
	local list, err = config.storage_faults(value, "storage_faults")
	if not list then return nil, err end
	local q = fault_queue(self, device_id, self.registry and self:registration_of(device_id))
	for _, f in ipairs(list) do q[#q + 1] = f end
	return #q
end

-- The registration ID of a device ID on the hub (for its scenario), or nil.
function S:registration_of(device_id)
	for _, dev in pairs(self.registry.devices) do
		if dev.state and dev.state.deviceId == device_id then return dev.state.registrationId end
	end
	return nil
end

-- Storage requests --------------------------------------------------------------

--- Whether a request path is the store's (its first segment is the container).
function S:owns(path)
	return path:match("^/([^/]+)") == self.container
end

local function query_params(query)
	local out = {}
	for pair in query:gmatch("[^&]+") do
		local k, v = pair:match("^([^=]*)=?(.*)$")
		k = util.url_decode(k)
		if out[k] == nil then out[k] = util.url_decode(v) else out[k] = false end -- twice: neither
	end
	return out
end

local function storage_error(stream, status, code, text, extra, opts)
	local hdrs = { { "x-ms-error-code", code } }
	for _, kv in ipairs(extra or {}) do hdrs[#hdrs + 1] = kv end
	local body = '<?xml version="1.0" encoding="utf-8"?><Error><Code>' .. code .. "</Code><Message>" .. text
		.. "\nRequestId:" .. util.uuid() .. "\nTime:" .. util.utc() .. "</Message></Error>"
	opts = opts or {}
	opts.content_type = "application/xml"
	return http.respond(stream, status, hdrs, body, opts)
end

local function created(stream, extra)
	local hdrs = { { "x-ms-request-server-encrypted", "true" } }
	for _, kv in ipairs(extra or {}) do hdrs[#hdrs + 1] = kv end
	return http.respond_empty(stream, 201, hdrs)
end

-- The request body, streamed to a new file: its name and size, or nil and
-- "too_large" / "io". A client waiting for "100 Continue" with a body over
-- the limit gets the 413 at once; a larger body sent anyway is read and
-- dropped (up to twice the limit), so that the client reads the answer.
local function receive(self, stream, req_headers)
	local cl = req_headers:get("content-length")
	local length = cl and (tonumber(cl) or math.huge)
	local expect = (req_headers:get("expect") or ""):lower() == "100-continue"
	if length and length > S.MAX_REQUEST and (expect or length > 2 * S.MAX_REQUEST) then
		return nil, "too_large"
	end
	local ok, err = mkdir_p(self.dir .. "/.incoming")
	if not ok then return nil, "io", err end
	if expect then
		stream:write_continue(IO_TIMEOUT)
	end
	local name = self.dir .. "/.incoming/" .. util.uuid()
	local f = assert(io.open(name, "wb"))
	local n = 0
	while true do
		local chunk, cerr = stream:get_next_chunk(IO_TIMEOUT)
		if chunk == nil then
			if cerr or (length and n ~= length) then
				f:close()
				os.remove(name)
				return nil, "io"
			end
			break
		end
		n = n + #chunk
		if n <= S.MAX_REQUEST then
			f:write(chunk)
		elseif n > 2 * S.MAX_REQUEST then
			f:close()
			os.remove(name)
			return nil, "too_large"
		end
	end
	f:close()
	if n > S.MAX_REQUEST then
		os.remove(name)
		return nil, "too_large"
	end
	return name, n
end

-- The next fault for a storage request `op` of the device, consumed; nil
-- when none applies.
local function next_fault(self, device_id, op)
	local q = self.faults[device_id]
	if not q then return nil end
	for i, f in ipairs(q) do
		if f.on == "any" or f.on == op then
			if f.after > 0 then
				f.after = f.after - 1
				return nil
			end
			table.remove(q, i)
			return f
		end
	end
	return nil
end

-- How the request's SAS stands: "sas" (good), else why not.
local function check_sas(self, u, container, blob, params)
	if not params.sig or not params.se or not params.sp then
		return "no_sas"
	end
	if not u or params.sr ~= "b" or params.sv ~= SAS_VERSION or not params.sp:find("w", 1, true) then
		return "bad_sas"
	end
	if not util.equal_ct(signature(self, params.sp, params.se, container, blob), params.sig) then
		return "bad_signature"
	end
	if params.se ~= u.se then
		return "bad_sas"
	end
	if u.expires <= util.now() then
		return "expired"
	end
	return "sas"
end

local function copy_into(out, file)
	local f = assert(io.open(file, "rb"))
	while true do
		local chunk = f:read(65536)
		if not chunk then break end
		out:write(chunk)
	end
	f:close()
end

-- Move a finished file into the blob's place (whole, by rename).
local function place(self, container, blob, tmp)
	local file = self:blob_file(container, blob)
	local ok, err = mkdir_p(parent(file))
	if not ok then return nil, err end
	return os.rename(tmp, file)
end

-- The block IDs of a block list body, in order, or nil.
local function block_list(text)
	if not text:find("<BlockList>", 1, true) then return nil end
	local ids = {}
	for tag, id in text:gmatch("<(%a+)>([^<]*)</%a+>") do
		if tag == "Latest" or tag == "Uncommitted" or tag == "Committed" then
			ids[#ids + 1] = id
		end
	end
	return ids
end

local OPS = { [false] = "put", block = "block", blocklist = "blocklist" }

--- Handle a storage request (`S:owns(path)`).
function S:handle(stream, req_headers, info, method, path, query)
	local segs = {}
	for seg in path:gmatch("[^/]+") do segs[#segs + 1] = util.pct_decode(seg) end
	local container, blob = segs[1], table.concat(segs, "/", 2)
	local params = query_params(query)
	local op = OPS[params.comp or false] or "other"
	local key = container .. "/" .. blob
	local u = self.by_blob[key]
	local entry = { event = "request", conn = info.id, method = method, path = path, kind = "storage_" .. op,
		blob = key, device_id = u and u.device_id or null, registration_id = u and u.registration_id or null,
		status = null, auth = "none", fault = null, bytes = null, t = util.now(),
		block_id = op == "block" and params.blockid or nil }
	local function finish(status)
		entry.status = status or null
		self.log:write(entry)
	end

	-- the body first (to a file), so that any answer reaches a client still sending
	local tmp, n = receive(self, stream, req_headers)
	if not tmp then
		if n == "too_large" then
			finish(413)
			storage_error(stream, 413, "RequestBodyTooLarge", "The request body is too large: at most "
				.. S.MAX_REQUEST .. " bytes.", nil, { close = true })
		else
			finish(nil)
		end
		return http.abandon(stream)
	end
	entry.bytes = n
	local function fail(status, code, text, extra)
		os.remove(tmp)
		finish(status)
		return storage_error(stream, status, code, text, extra)
	end
	if method ~= "PUT" then
		return fail(405, "UnsupportedHttpVerb", "The resource doesn't support the specified HTTP verb.")
	end
	entry.auth = check_sas(self, u, container, blob, params)
	if entry.auth ~= "sas" then
		return fail(403, "AuthenticationFailed", "Server failed to authenticate the request. Make sure the value "
			.. "of Authorization header is formed correctly including the signature.")
	end
	local fault = next_fault(self, u.device_id, op)
	if fault then
		entry.fault = fault.fault or "status"
		if fault.fault == "reset" then
			os.remove(tmp)
			finish(nil)
			return http.reset(stream)
		elseif fault.fault == "hang" then
			os.remove(tmp)
			finish(nil)
			return http.hang(stream, fault.seconds)
		end
		return fail(fault.status, fault.code, fault.message or "Injected fault.",
			fault.retry_after and { { "retry-after", fault.retry_after } } or nil)
	end

	if op == "put" then
		if req_headers:get("x-ms-blob-type") ~= "BlockBlob" then
			return fail(400, "MissingRequiredHeader", "x-ms-blob-type: BlockBlob is required.")
		end
		local ok, err = place(self, container, blob, tmp)
		if not ok then return fail(500, "InternalError", "cannot keep the blob: " .. tostring(err)) end
		u.content_type = req_headers:get("x-ms-blob-content-type") or req_headers:get("content-type")
		u.committed_blocks = 0
		self.blocks[key] = nil
		finish(201)
		return created(stream, { { "etag", '"0x' .. util.uuid():gsub("-", ""):sub(1, 15):upper() .. '"' } })
	elseif op == "block" then
		local id = params.blockid
		local raw = id and util.b64decode(id)
		if not raw or #raw == 0 or #raw > S.MAX_BLOCK_ID then
			return fail(400, "InvalidQueryParameterValue", "blockid must be base64 of 1-64 bytes.")
		end
		local b = self.blocks[key]
		if not b then
			b = { len = #id, ids = {}, count = 0 }
			self.blocks[key] = b
		end
		if #id ~= b.len then
			return fail(400, "InvalidBlobOrBlock", "The specified blob or block content is invalid: block IDs of "
				.. "a blob must all have the same length.")
		end
		local ok, err = mkdir_p(self.dir .. "/.blocks")
		if not ok then return fail(500, "InternalError", tostring(err)) end
		local file = b.ids[id] or (self.dir .. "/.blocks/" .. util.uuid())
		os.rename(tmp, file)
		if not b.ids[id] then b.count = b.count + 1 end
		b.ids[id] = file
		finish(201)
		return created(stream)
	elseif op == "blocklist" then
		local f = assert(io.open(tmp, "rb"))
		local text = f:read("*a")
		f:close()
		local ids = block_list(text)
		local b = self.blocks[key] or { ids = {} }
		if not ids or #ids > S.MAX_BLOCKS then
			return fail(400, "InvalidXmlDocument", "The block list is not a <BlockList> of at most "
				.. S.MAX_BLOCKS .. " blocks.")
		end
		for _, id in ipairs(ids) do
			if not b.ids[id] then
				return fail(400, "InvalidBlockList", "The specified block list is invalid: a block was not uploaded.")
			end
		end
		local out_name = tmp .. ".blob"
		local out = assert(io.open(out_name, "wb"))
		for _, id in ipairs(ids) do copy_into(out, b.ids[id]) end
		out:close()
		os.remove(tmp)
		local ok, err = place(self, container, blob, out_name)
		if not ok then
			os.remove(out_name)
			return fail(500, "InternalError", "cannot keep the blob: " .. tostring(err))
		end
		for _, file in pairs(b.ids) do os.remove(file) end -- uncommitted blocks go with the commit
		self.blocks[key] = nil
		u.content_type = req_headers:get("x-ms-blob-content-type")
		u.committed_blocks = #ids
		entry.blocks = #ids
		finish(201)
		return created(stream, { { "etag", '"0x' .. util.uuid():gsub("-", ""):sub(1, 15):upper() .. '"' } })
	end
	return fail(400, "InvalidQueryParameterValue", "comp must be block or blocklist.")
end

--- The bytes of a blob (`GET /admin/blobs/{container}/{blob}`), or nil.
function S:read_blob(container, blob)
	if S.name_problem(blob) then return nil end
	return util.read_file(self:blob_file(container, blob))
end

return S
