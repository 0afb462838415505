-- JSON-lines request log of the DPS emulator. One object per line, appended
-- and flushed at once. Callers never pass keys, tokens, signatures or the
-- Authorization header: only the fields listed in README.md.
local cjson = require "cjson.safe"
local util = require "emu_util"

local M = {}
M.__index = M

--- Open the log (nil path: a log that writes nothing).
function M.open(path)
	local self = setmetatable({}, M)
	if path then
		local f, err = io.open(path, "a")
		if not f then
			return nil, "cannot open log_file: " .. tostring(err)
		end
		f:setvbuf("line")
		self.file = f
	end
	return self
end

--- Append one entry. `raw` (optional): JSON text that replaces the value
-- util.RAW wherever it occurs (used to echo a request payload verbatim).
function M:write(entry, raw)
	if not self.file then return end
	local line = assert(cjson.encode(entry))
	if raw then
		line = util.splice(line, (raw:gsub("[\r\n\t]", " ")))
	end
	self.file:write(line, "\n")
	self.file:flush()
end

function M:close()
	if self.file then
		self.file:close()
		self.file = nil
	end
end

return M
