--- The header block of an answer, as a table (internal): what the C
-- engine's `take` returns is the header lines as received; `dps.response`
-- and `dps.hub_response` read them as `name → value`.
-- @module dps.headers
local headers = {}

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
  local t, name, value = {}, nil, nil
  for line in block:gmatch("([^\n]*)\n") do
    local first = line:sub(1, 1)
    if first == " " or first == "\t" then
      local more = name and line:match("^[ \t]*(.-)[ \t]*$")
      if more and more ~= "" then
        value = value .. " " .. more
      end
    else
      local n, v = line:match("^([^:]+):(.*)$")
      if n then
        add(t, name, value)
        name = n:match("^(.-)[ \t]*$"):gsub("[A-Z]", LOWER)
        value = v:match("^[ \t]*(.-)[ \t]*$")
      end
    end
  end
  add(t, name, value)
  return t
end

return headers
