-- Small helpers for the DPS emulator: time, ids, encodings, raw JSON scanning.
-- Independent of the project's own `dps` modules on purpose.
local basexx = require "basexx"
local rand = require "openssl.rand"

local M = {}

local ok_time, posix_time = pcall(require, "posix.sys.time")

--- Wall-clock time as a float of seconds since the epoch.
function M.now()
	if ok_time then
		local tv = posix_time.gettimeofday()
		return tv.tv_sec + tv.tv_usec / 1e6
	end
	return os.time()
end

--- ISO 8601 UTC time with 7 fractional digits, like the service.
function M.utc(t)
	t = t or M.now()
	local sec = math.floor(t)
	local frac = math.floor((t - sec) * 1e7 + 0.5)
	if frac >= 1e7 then frac = 1e7 - 1 end
	return os.date("!%Y-%m-%dT%H:%M:%S", sec) .. string.format(".%07dZ", frac)
end

-- byte → two lower-case hex digits
local HEX = {}
for i = 0, 255 do HEX[i] = string.format("%02x", i) end

--- Random version-4 UUID string.
function M.uuid()
	local b1, b2, b3, b4, b5, b6, b7, b8, b9, b10, b11, b12, b13, b14, b15, b16 = rand.bytes(16):byte(1, 16)
	b7 = b7 % 16 + 0x40
	b9 = b9 % 64 + 0x80
	return HEX[b1] .. HEX[b2] .. HEX[b3] .. HEX[b4] .. "-" .. HEX[b5] .. HEX[b6] .. "-" .. HEX[b7] .. HEX[b8]
		.. "-" .. HEX[b9] .. HEX[b10] .. "-" .. HEX[b11] .. HEX[b12] .. HEX[b13] .. HEX[b14] .. HEX[b15] .. HEX[b16]
end

--- Operation id shaped like the service's: "5.<16 hex>.<uuid>".
function M.operation_id()
	local h = {}
	for i, c in ipairs({ rand.bytes(8):byte(1, 8) }) do h[i] = HEX[c] end
	return "5." .. table.concat(h) .. "." .. M.uuid()
end

--- Strict base64 decode (standard alphabet, padding required); nil on error.
function M.b64decode(s)
	if type(s) ~= "string" or #s % 4 ~= 0 or not s:match("^[A-Za-z0-9+/]*=?=?$") then
		return nil
	end
	return basexx.from_base64(s)
end

-- base64 of 12 bits at a time: value 0..4095 → two characters (basexx's
-- encoder walks strings of "0"/"1" digits: a quarter of the emulator's time
-- under load went there, once per token check)
local B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
local B64_PAIR = {}
for i = 0, 4095 do
	local hi, lo = math.floor(i / 64), i % 64
	B64_PAIR[i] = B64:sub(hi + 1, hi + 1) .. B64:sub(lo + 1, lo + 1)
end

--- Standard base64 with padding.
function M.b64encode(s)
	local out, n, len = {}, 0, #s
	local full = len - len % 3
	for i = 1, full, 3 do
		local a, b, c = s:byte(i, i + 2)
		local v = a * 65536 + b * 256 + c
		n = n + 1
		out[n] = B64_PAIR[math.floor(v / 4096)] .. B64_PAIR[v % 4096]
	end
	local rest = len - full
	if rest == 1 then
		out[n + 1] = B64_PAIR[s:byte(len) * 16] .. "=="
	elseif rest == 2 then
		local a, b = s:byte(len - 1, len)
		local v = (a * 256 + b) * 4
		out[n + 1] = B64_PAIR[math.floor(v / 64)] .. B64:sub(v % 64 + 1, v % 64 + 1) .. "="
	end
	return table.concat(out)
end

--- One pass of percent-decoding (path segments: '+' stays '+').
function M.pct_decode(s)
	return (s:gsub("%%(%x%x)", function(h) return string.char(tonumber(h, 16)) end))
end

--- One pass of URL decoding of a token value. '+' becomes a space, as in form
-- encoding and .NET's WebUtility.UrlDecode (the service is .NET; an inference).
function M.url_decode(s)
	return M.pct_decode((s:gsub("%+", " ")))
end

--- Constant-time string comparison.
function M.equal_ct(a, b)
	if #a ~= #b then return false end
	local diff = 0
	for i = 1, #a do
		if a:byte(i) ~= b:byte(i) then diff = diff + 1 end
	end
	return diff == 0
end

-- Raw JSON scanning (input already validated by cjson) ------------------------

local function skip_ws(s, i)
	return s:find("[^ \t\r\n]", i) or #s + 1
end

local function skip_string(s, i)
	local j = i + 1
	while true do
		local c = s:find('["\\]', j)
		if not c then return nil end
		if s:sub(c, c) == '"' then return c + 1 end
		j = c + 2
	end
end

local function skip_value(s, i)
	local c = s:sub(i, i)
	if c == '"' then return skip_string(s, i) end
	if c == "{" or c == "[" then
		local depth, j = 0, i
		while j <= #s do
			local k = s:find('[%[%]{}"]', j)
			if not k then return nil end
			local ch = s:sub(k, k)
			if ch == '"' then
				j = skip_string(s, k)
				if not j then return nil end
			else
				depth = depth + ((ch == "{" or ch == "[") and 1 or -1)
				j = k + 1
				if depth == 0 then return j end
			end
		end
		return nil
	end
	return s:find("[,}%] \t\r\n]", i) or #s + 1
end

--- Raw text of member `key` of the top-level JSON object `s` (last one wins),
-- so a payload can be echoed byte for byte; nil when absent.
function M.raw_member(s, key)
	local i = skip_ws(s, 1)
	if s:sub(i, i) ~= "{" then return nil end
	i = skip_ws(s, i + 1)
	local found
	while i <= #s and s:sub(i, i) == '"' do
		local kend = skip_string(s, i)
		if not kend then return nil end
		local name = s:sub(i + 1, kend - 2)
		i = skip_ws(s, kend)
		if s:sub(i, i) ~= ":" then return nil end
		i = skip_ws(s, i + 1)
		local vend = skip_value(s, i)
		if not vend then return nil end
		if name == key then found = s:sub(i, vend - 1) end
		i = skip_ws(s, vend)
		if s:sub(i, i) == "," then i = skip_ws(s, i + 1) end
	end
	return found
end

--- Placeholder for a JSON value that splice() replaces with raw JSON text.
M.RAW = "RAW-" .. M.uuid()

--- Placeholder for an empty JSON array (cjson 2.1.0 writes {} for an empty
-- table): M.empty_arrays() turns it into [] in encoded text.
M.EMPTY_ARRAY = "EMPTY-ARRAY-" .. M.uuid()

function M.empty_arrays(text)
	local quoted = '"' .. M.EMPTY_ARRAY .. '"'
	local i, j = text:find(quoted, 1, true)
	if not i then return text end
	return text:sub(1, i - 1) .. "[]" .. M.empty_arrays(text:sub(j + 1))
end

--- Replace the string value util.RAW in encoded JSON `text` by raw JSON `raw`.
function M.splice(text, raw)
	local quoted = '"' .. M.RAW .. '"'
	local i, j = text:find(quoted, 1, true)
	if not i then return text end
	return text:sub(1, i - 1) .. raw .. text:sub(j + 1)
end

--- Read a whole file; nil, message on error.
function M.read_file(path)
	local f, err = io.open(path, "rb")
	if not f then return nil, err end
	local data = f:read("*a")
	f:close()
	return data
end

return M
