-- A stand-in for OpenWrt's `jsonfilter`, for the specs that run the
-- package's shell scripts off a router: the JSON comes from -i FILE, -s
-- STRING or stdin; each -e EXPRESSION (a path: @ or $, then .name or [n]
-- steps) prints what it selects: a string as is, anything else as JSON.
-- Exit status 1 when an expression selects nothing (or the input is not
-- JSON), as jsonfilter. Written from jsonfilter's usage, for the paths the
-- scripts use.
--
-- Usage: lua jsonfilter.lua [-q] [-i FILE | -s STRING] -e EXPRESSION...
local cjson = require("cjson")

local input, expressions, quiet = nil, {}, false
local i = 1
while arg[i] do
  local o = arg[i]
  if o == "-i" then
    local f = io.open(arg[i + 1] or "", "rb")
    if not f then
      io.stderr:write("Failed to open " .. tostring(arg[i + 1]) .. "\n")
      os.exit(1)
    end
    input = f:read("*a")
    f:close()
    i = i + 1
  elseif o == "-s" then
    input = arg[i + 1]
    i = i + 1
  elseif o == "-e" then
    expressions[#expressions + 1] = arg[i + 1]
    i = i + 1
  elseif o == "-q" then
    quiet = true
  else
    io.stderr:write("jsonfilter stand-in: unknown option " .. o .. "\n")
    os.exit(2)
  end
  i = i + 1
end
input = input or io.read("*a")

local ok, doc = pcall(cjson.decode, input)
if not ok then
  if not quiet then io.stderr:write("Failed to parse input data: " .. tostring(doc) .. "\n") end
  os.exit(1)
end

local function pick(value, expression)
  local rest = expression:match("^[@$](.*)$")
  if not rest then return nil end
  while rest ~= "" do
    local name, after = rest:match("^%.([%w_%-]+)(.*)$")
    local index
    if not name then
      index, after = rest:match("^%[(%d+)%](.*)$")
      if not index then
        name, after = rest:match("^%[['\"]([^'\"]+)['\"]%](.*)$")
      end
    end
    if type(value) ~= "table" or not after then return nil end
    if index then
      value = value[tonumber(index) + 1]
    else
      value = value[name]
    end
    if value == nil or value == cjson.null then return nil end
    rest = after
  end
  return value
end

local status = 0
for _, expression in ipairs(expressions) do
  local value = pick(doc, expression)
  if value == nil then
    status = 1
  elseif type(value) == "string" then
    print(value)
  elseif type(value) == "number" and value == math.floor(value) then
    print(string.format("%d", value))
  else
    print(cjson.encode(value))
  end
end
os.exit(status)
