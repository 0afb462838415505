--- The header block of an answer, as a table (internal): what the C
-- engine's `take` returns is the header lines as received; `dps.response`
-- and `dps.hub_response` read them as `name → value`.
-- @module dps.headers
local headers = {}

local byte, find, gsub, match = string.byte, string.find, string.gsub, string.match

-- ASCII upper case to lower case, byte by byte: the same under any locale.
local LOWER = {}
for b = 65, 90 do
  LOWER[string.char(b)] = string.char(b + 32)
end

-- Value of a field so far, joined with an earlier field of the same name.
local function add(t, name, value)
  if name then
    local had = t[name]
    t[name] = had and had .. ", " .. value or value
  end
end

--- The header block as a table: names lower-cased, values without leading
-- or trailing blanks, repeated names joined with `", "` in order, obs-fold
-- continuation lines (starting with a space or a tab) joined to their field
-- with one space. A line without a colon, or starting with one, is skipped;
-- a continuation line with no field before it is dropped.
-- @tparam string block lines, each ending in `"\n"`
-- @treturn table name → value
function headers.parse(block)
  -- Read in place, line by line, so that a line costs no string of its own
  -- (a name the module already knows costs none either: Lua interns them).
  local t, name, value, pos = {}, nil, nil, 1
  while true do
    local eol = find(block, "\n", pos, true)
    if not eol then break end
    local first = byte(block, pos)
    if first == 32 or first == 9 then
      local more = name and match(block, "^[ \t]*([^\n]-)[ \t]*\n", pos)
      if more and more ~= "" then
        value = value .. " " .. more
      end
    else
      local n, v = match(block, "^([^:\n]-)[ \t]*:[ \t]*([^\n]-)[ \t]*\n", pos)
      if n and n ~= "" then
        add(t, name, value)
        name, value = find(n, "[A-Z]") and gsub(n, "[A-Z]", LOWER) or n, v
      end
    end
    pos = eol + 1
  end
  add(t, name, value)
  return t
end

return headers
