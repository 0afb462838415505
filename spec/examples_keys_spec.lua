-- No example takes a key on its command line (issue 21), where every user
-- of the machine can read it with ps: each Lua program in examples/ is read
-- for values that come from the command line (`arg`, `...`) and for where
-- keys go (symmetric_key, group_key, key, key_password, and the functions
-- that take a key), and no key's value may come from the command line, nor
-- may a usage line ask for a key. The check is tried on the form it exists
-- to refuse (the old cqueues_gateway.lua) so that it cannot pass by reading
-- nothing.
local shell = require "spec.support.shell"
local emulator = require "spec.support.emulator"

-- Where keys go: options, and the functions' arguments.
local KEY_OPTIONS = { "symmetric_key", "group_key", "key", "key_password" }
local KEY_FUNCTIONS = { "derive_key", "registration_token", "hub_token", "sas_token" }

-- The source without its comments (a string holding "--" loses the rest of
-- its line: the check then sees less, and the self-test below still fails).
local function code_of(text)
  return (text:gsub("%-%-%[(=*)%[.-%]%1%]", ""):gsub("%-%-[^\n]*", ""))
end

-- The expression that starts at `i`: up to a comma, closing bracket or line
-- end outside brackets.
local function expression_at(text, i)
  local depth, j = 0, i
  while j <= #text do
    local c = text:sub(j, j)
    if c == "(" or c == "{" or c == "[" then
      depth = depth + 1
    elseif c == ")" or c == "}" or c == "]" then
      if depth == 0 then break end
      depth = depth - 1
    elseif (c == "," or c == "\n") and depth == 0 then
      break
    end
    j = j + 1
  end
  return text:sub(i, j - 1)
end

local function mentions(expr, name)
  return expr:find("%f[%w_]" .. name:gsub("%p", "%%%0") .. "%f[^%w_]") ~= nil
end

-- Whether an expression reads the command line, directly or through one of
-- the `tainted` names.
local function from_command_line(expr, tainted)
  if expr:find("%f[%w_]arg%f[^%w_]") or expr:find("...", 1, true) then return true end
  for name in pairs(tainted) do
    if mentions(expr, name) then return true end
  end
  return false
end

-- The names that hold values from the command line: assigned (`local a, b =
-- …`, `a = …` or `t.a = …`) from `arg`, `...`, or another such name, to a fixed point.
local function tainted_names(code)
  local tainted, grew = {}, true
  while grew do
    grew = false
    for names, rhs in code:gmatch("\n%s*local%s+([%w_,%s]-)%s*=%s*([^\n]+)") do
      if from_command_line(rhs, tainted) then
        for name in names:gmatch("[%w_]+") do
          if not tainted[name] then tainted[name], grew = true, true end
        end
      end
    end
    for name, rhs in code:gmatch("\n%s*([%a_][%w_.]*)%s*=%s*([^\n=][^\n]*)") do
      if from_command_line(rhs, tainted) and not tainted[name] then tainted[name], grew = true, true end
    end
  end
  return tainted
end

--- The problems of one program's source: each a line saying where a key
-- comes from the command line.
local function key_from_command_line(text)
  local code = "\n" .. code_of(text)
  local tainted = tainted_names(code)
  local problems = {}
  for _, option in ipairs(KEY_OPTIONS) do
    for i in code:gmatch("%f[%w_]" .. option .. "%s*=%s*()[^=]") do
      local expr = expression_at(code, i)
      if from_command_line(expr, tainted) then
        problems[#problems + 1] = option .. " = " .. expr
      end
    end
  end
  for _, fn in ipairs(KEY_FUNCTIONS) do
    for call in code:gmatch("%f[%w_]" .. fn .. "%s*(%b())") do
      if from_command_line(call, tainted) then problems[#problems + 1] = fn .. call end
    end
  end
  -- a usage line (the header's or the program's own) that asks for a key
  for name, rest in text:gmatch("([%w_]+%.lua)([^\n]*)") do
    local asked = rest:match("[%u_]*KEY[%u_]*") or rest:match("PASSWORD") or rest:match("[%u_]*TOKEN")
    if asked then
      problems[#problems + 1] = "its usage asks for " .. asked .. " on the command line: " .. name .. rest
    end
  end
  return problems
end

-- The old examples/cqueues_gateway.lua: the group key as arg[2].
local OLD_CQUEUES_GATEWAY = [==[
--   lua5.4 examples/cqueues_gateway.lua ID_SCOPE GROUP_KEY [ENDPOINT CA_FILE [LEAVES]]
local dps = require "dps"
local id_scope, group_key, endpoint, ca_file, leaves = arg[1], arg[2], arg[3], arg[4], tonumber(arg[5] or 100)
local batch = dps.batch{ id_scope = id_scope, group_key = group_key, endpoint = endpoint, ca_file = ca_file,
  concurrency = 16, rate = 6000 }
]==]

describe("no example takes a key on its command line", function()
  it("the check finds a key taken from arg, from ..., or through a name, and a usage line that asks for one",
    function()
      local problems = key_from_command_line(OLD_CQUEUES_GATEWAY)
      assert.are.equal(2, #problems, table.concat(problems, "\n"))
      assert.truthy(problems[1]:find("^group_key = group_key"), problems[1])
      assert.truthy(problems[2]:find("asks for GROUP_KEY", 1, true), problems[2])
      for _, case in ipairs({
        "local dps = require 'dps'\nlocal k = select(1, ...)\nlocal key2 = k\n"
          .. "print(dps.derive_key(key2, 'leaf-01'))\n",
        "local c = dps.new{ id_scope = os.getenv('S'), symmetric_key = arg[1] }\n",
        "local o = {}\no.x = ...\nlocal h = dps.hub{ key_password = o.x }\n",
        "local t = dps.registration_token(s, id, (arg[3]), 60)\n",
      }) do
        assert.are.equal(1, #key_from_command_line(case), case)
      end
      -- where the key comes from the environment, and a leaf ID from arg
      assert.are.same({}, key_from_command_line("local leaves = { ... }\n"
        .. "local key = os.getenv('DPS_GROUP_KEY')\nfor _, leaf in ipairs(leaves) do\n"
        .. "  dps.new{ registration_id = leaf, group_key = key }\nend\n"))
    end)

  it("holds for every Lua program in examples/", function()
    local list = assert(shell.run("ls " .. shell.quote(emulator.root .. "/examples") .. "/*.lua"))
    local count = 0
    for path in list:gmatch("[^\n]+") do
      count = count + 1
      local problems = key_from_command_line(assert(shell.read(path)))
      assert.are.same({}, problems, path .. ":\n" .. table.concat(problems, "\n"))
    end
    assert.is_true(count >= 8, "examples/*.lua: " .. count .. " programs")
  end)
end)
