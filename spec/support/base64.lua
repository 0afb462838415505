-- base64 in plain Lua for specs: to compare dps.core's encoding with, and
-- to decode (dps.core only encodes: the library decodes keys inside C and
-- never hands raw key bytes to Lua). decode raises on text that is not
-- base64 of the standard alphabet with padding.
local ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
local VALUE = {}
for i = 1, #ALPHABET do VALUE[ALPHABET:sub(i, i)] = i - 1 end

local base64 = {}

function base64.encode(s)
  local out = {}
  for i = 1, #s, 3 do
    local a, b, c = s:byte(i, i + 2)
    local n = a * 65536 + (b or 0) * 256 + (c or 0)
    local chunk = ""
    for k = 3, 0, -1 do
      local v = math.floor(n / 64 ^ k) % 64
      chunk = chunk .. ALPHABET:sub(v + 1, v + 1)
    end
    if not b then chunk = chunk:sub(1, 2) .. "==" elseif not c then chunk = chunk:sub(1, 3) .. "=" end
    out[#out + 1] = chunk
  end
  return table.concat(out)
end

function base64.decode(text)
  assert(#text % 4 == 0 and text:find("^[%w+/]*=?=?$"), "not base64")
  local body = text:gsub("=+$", "")
  local out, bits, value = {}, 0, 0
  for i = 1, #body do
    value = value * 64 + VALUE[body:sub(i, i)]
    bits = bits + 6
    if bits >= 8 then
      bits = bits - 8
      local byte = math.floor(value / 2 ^ bits)
      out[#out + 1] = string.char(byte)
      value = value - byte * 2 ^ bits
    end
  end
  return table.concat(out)
end

return base64
