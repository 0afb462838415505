-- HTTP side of the DPS emulator: reading bounded request bodies, writing
-- responses the way the service frames them (JSON, chunked), and the
-- connection-level faults (hang, reset, truncated, slow, …).
local cjson = require "cjson"
local cqueues = require "cqueues"
local ce = require "cqueues.errno"
local http_headers = require "http.headers"
local http_util = require "http.util"
local util = require "emu_util"

local M = {}

local IO_TIMEOUT = 30
local JSON = "application/json; charset=utf-8"

local ok_sock, psock = pcall(require, "posix.sys.socket")
local yieldable_pcall = http_util.yieldable_pcall

--- Sleep until the monotonic time `at` (cqueues.monotime), at once when it
-- passed: a distant service's answer waits for its latency this way.
function M.wait_until(at)
	local left = at - cqueues.monotime()
	if left > 0 then cqueues.sleep(left) end
end

--- Read the request body, keeping at most `limit` bytes.
-- Returns body, or nil and "too_large" / "io". A too large body is still read
-- and thrown away up to DRAIN_MAX bytes, so that the client, still sending,
-- gets to read the 413 instead of a reset. A client that waits for
-- "100 Continue" gets the 413 at once.
local DRAIN_MAX = 4 * 1024 * 1024
function M.read_body(stream, req_headers, limit)
	local cl = req_headers:get("content-length")
	local expect = (req_headers:get("expect") or ""):lower() == "100-continue"
	local length = cl and (tonumber(cl) or math.huge)
	if length and length > limit and (expect or length > DRAIN_MAX) then
		return nil, "too_large"
	end
	if expect then
		stream:write_continue(IO_TIMEOUT)
	end
	local parts, n = {}, 0
	while true do
		local chunk, err = stream:get_next_chunk(IO_TIMEOUT)
		if chunk == nil then
			-- lua-http reports EOF inside a Content-Length body as a plain end
			if err or (length and n ~= length) then return nil, "io" end
			break
		end
		n = n + #chunk
		if n > DRAIN_MAX then return nil, "too_large" end
		if n <= limit then parts[#parts + 1] = chunk end
	end
	if n > limit then return nil, "too_large" end
	return table.concat(parts)
end

local function base_headers(status, extra)
	local h = http_headers.new()
	h:append(":status", tostring(status))
	h:append("date", http_util.imf_date())
	h:append("x-ms-request-id", util.uuid())
	for _, kv in ipairs(extra or {}) do
		h:append(kv[1], kv[2])
	end
	return h
end

-- lua-http flushes after the headers and after each chunk: three TLS
-- records and three sends for one small answer, each waking the client.
-- These stand-ins for its connection's methods buffer instead; respond()
-- flushes once at the end (same bytes, same chunked framing).
local function buffered_headers_done(conn, timeout)
	local ok, err, errno = conn.socket:xwrite("\r\n", "f", timeout)
	if not ok then return nil, err, errno end
	return true
end

local function buffered_body_chunk(conn, chunk, _, timeout)
	local ok, err, errno = conn.socket:xwrite(string.format("%x\r\n", #chunk) .. chunk .. "\r\n", "f", timeout)
	if not ok then return nil, err, errno end
	return true
end

-- Headers, the whole body as one chunk and the last chunk, sent at once.
local function respond_at_once(stream, h, body)
	local conn = stream.connection
	conn.write_headers_done, conn.write_body_chunk = buffered_headers_done, buffered_body_chunk
	-- the connection gets its own methods back whatever happens
	local done, ok = yieldable_pcall(function()
		return stream:write_headers(h, false, IO_TIMEOUT) and stream:write_chunk(body, true, IO_TIMEOUT)
	end)
	conn.write_headers_done, conn.write_body_chunk = nil, nil
	if not done then error(ok, 0) end
	if not ok or not conn.socket then return false end
	return conn.socket:flush("n", IO_TIMEOUT) and true or false
end

--- Write a complete response with a chunked body.
-- opts: content_type, close (send Connection: close), slow (seconds between
-- bytes), truncate (stop before the last chunk and drop the connection).
function M.respond(stream, status, extra, body, opts)
	opts = opts or {}
	local h = base_headers(status, extra)
	h:append("content-type", opts.content_type or JSON)
	h:append("transfer-encoding", "chunked")
	if opts.close then
		h:append("connection", "close")
	end
	if not (opts.close or opts.slow or opts.truncate) and #body > 0 then
		return respond_at_once(stream, h, body)
	end
	if not stream:write_headers(h, false, IO_TIMEOUT) then return false end
	if opts.slow then
		for i = 1, #body do
			if not stream:write_chunk(body:sub(i, i), false, IO_TIMEOUT) then return false end
			cqueues.sleep(opts.slow)
		end
		return stream:write_chunk("", true, IO_TIMEOUT)
	elseif opts.truncate then
		stream:write_chunk(body:sub(1, math.max(1, math.floor(#body / 2))), false, IO_TIMEOUT)
		M.abandon(stream)
		return true
	end
	return stream:write_chunk(body, true, IO_TIMEOUT)
end

--- Status line and headers only, `content-length: 0`.
function M.respond_empty(stream, status, extra)
	return stream:write_headers(base_headers(status, extra), true, IO_TIMEOUT)
end

--- The service's error body + x-ms-error-code header.
function M.error_response(stream, status, code, message, extra, opts)
	local hdrs = { { "x-ms-error-code", tostring(code) } }
	for _, kv in ipairs(extra or {}) do hdrs[#hdrs + 1] = kv end
	local body = cjson.encode({
		errorCode = code,
		trackingId = util.uuid(),
		message = message,
		timestampUtc = util.utc(),
	})
	return M.respond(stream, status, hdrs, body, opts)
end

-- Mark the stream finished and take the socket away from lua-http, which
-- then neither answers the stream again nor reads further requests.
local function take(stream)
	local conn = stream.connection
	if stream.state ~= "closed" then
		yieldable_pcall(stream.set_state, stream, "closed")
	end
	local sock = conn:take_socket()
	if sock then
		sock:onerror(function(_, _, why) return why end) -- return errors, never throw
	end
	return sock
end

-- Read what the peer sends until `deadline`: the data (possibly ""), or nil
-- at EOF, on an error or when the deadline has passed.
local function discard(sock, deadline)
	local left = deadline - cqueues.monotime()
	if left <= 0 then return nil end
	local data, errno = sock:xread(-65536, nil, math.min(left, 0.5))
	if data then return data end
	if errno == ce.ETIMEDOUT then
		sock:clearerr("r")
		return ""
	end
	return nil
end

--- Close the connection under the stream: flush what was written, send FIN,
-- read and discard what the client still sends (briefly, bounded), close.
function M.abandon(stream)
	local sock = take(stream)
	if not sock then return end
	sock:flush(1)
	sock:shutdown("w")
	local deadline = cqueues.monotime() + 2
	local drained = 0
	while drained < DRAIN_MAX do
		local data = discard(sock, deadline)
		if not data then break end
		drained = drained + #data
	end
	sock:close()
end

--- Abort the TCP connection: SO_LINGER 0 makes close() send RST.
function M.reset(stream)
	local sock = take(stream)
	if not sock then return end
	local fd = sock:pollfd()
	if ok_sock and fd and fd >= 0 then
		psock.setsockopt(fd, psock.SOL_SOCKET, psock.SO_LINGER, 1, 0)
	end
	sock:close()
end

--- Do not answer: wait until the client goes away (or `max` seconds), reading
-- and discarding whatever it sends, then close. The emulator's exit also
-- ends it.
function M.hang(stream, max)
	local sock = take(stream)
	if not sock then return end
	local deadline = cqueues.monotime() + max
	while discard(sock, deadline) do end
	sock:close()
end

--- A large chunked JSON-looking body of exactly `bytes` bytes.
function M.oversized(stream, bytes)
	local h = base_headers(200)
	h:append("content-type", JSON)
	h:append("transfer-encoding", "chunked")
	if not stream:write_headers(h, false, IO_TIMEOUT) then return false end
	local head, tail = '{"filler":"', '"}'
	local fill = math.max(0, bytes - #head - #tail)
	local block = string.rep("x", 16384)
	if not stream:write_chunk(head:sub(1, bytes), false, IO_TIMEOUT) then return false end
	while fill > 0 do
		local n = math.min(fill, #block)
		if not stream:write_chunk(block:sub(1, n), false, IO_TIMEOUT) then return false end
		fill = fill - n
	end
	local rest = bytes - #head
	return stream:write_chunk(rest > 0 and tail:sub(1, rest) or "", true, IO_TIMEOUT)
end

function M.non_json(stream)
	return M.respond(stream, 200, nil,
		"<!DOCTYPE html>\n<html><head><title>Gateway</title></head>"
		.. "<body><h1>Something in the way answered with HTML</h1></body></html>\n",
		{ content_type = "text/html" })
end

return M
