-- A stand-in for OpenWrt's `uci` command, for the specs that run the
-- package's shell scripts in a temporary root (IPKG_INSTROOT): it reads and
-- writes the UCI files under $IPKG_INSTROOT/etc/config (or -c DIR), with
-- changes staged under $IPKG_INSTROOT/tmp/.uci (or -t DIR) until `commit`,
-- as uci does. Written from uci's documented behaviour, for the commands the
-- scripts use: get, set, add_list, delete, commit, export, show, changes.
-- Options -q (no error messages), -c DIR, -t DIR; -P, -S, -n, -N, -X are
-- taken and ignored. Exit status 1 with `uci: Entry not found` (and the
-- like) on stderr, as uci.
--
-- Usage: lua uci.lua [OPTIONS] COMMAND [ARGUMENT]
local cjson = require("cjson")

local root = os.getenv("IPKG_INSTROOT") or ""
local confdir, savedir, quiet = root .. "/etc/config", root .. "/tmp/.uci", false

local function fail(message)
  if not quiet then io.stderr:write("uci: " .. message .. "\n") end
  os.exit(1)
end

local function read(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("*a")
  f:close()
  return s
end

local function write(path, text)
  local f = assert(io.open(path, "wb"))
  f:write(text)
  f:close()
end

-- One line's words, with UCI's quoting: '…' as is, "…" and bare words
-- with backslash escapes; adjacent pieces join (a'b'"c" is abc); # starts a
-- comment. nil when a quote is not closed.
local function words(line)
  local out, pos = {}, 1
  while true do
    pos = line:find("%S", pos)
    if not pos or line:sub(pos, pos) == "#" then return out end
    local word = {}
    while pos <= #line and not line:sub(pos, pos):match("%s") do
      local c = line:sub(pos, pos)
      if c == "'" then
        local close = line:find("'", pos + 1, true)
        if not close then return nil end
        word[#word + 1] = line:sub(pos + 1, close - 1)
        pos = close + 1
      elseif c == '"' then
        pos = pos + 1
        while true do
          local d = line:sub(pos, pos)
          if d == "" then return nil end
          pos = pos + 1
          if d == '"' then break end
          if d == "\\" then
            d = line:sub(pos, pos)
            pos = pos + 1
          end
          word[#word + 1] = d
        end
      elseif c == "\\" then
        word[#word + 1] = line:sub(pos + 1, pos + 1)
        pos = pos + 2
      else
        word[#word + 1] = c
        pos = pos + 1
      end
    end
    out[#out + 1] = table.concat(word)
  end
end

-- A package: { sections = { {name, type, anonymous, options = { {name, value} } } } };
-- a list's value is a table of strings.
local function parse(name, text)
  local pkg, section, anonymous = { sections = {} }, nil, 0
  local n = 0
  for line in ((text or "") .. "\n"):gmatch("(.-)\n") do
    n = n + 1
    local w = words(line)
    if not w then fail(string.format("Parse error (unterminated quote) at line %d in %s", n, name)) end
    local kw = w[1]
    if kw == "config" and w[2] then
      local sname = w[3]
      if not sname then
        anonymous = anonymous + 1
        sname = string.format("cfg%02x%04x", anonymous, #pkg.sections)
      end
      section = { name = sname, type = w[2], anonymous = w[3] == nil, options = {} }
      pkg.sections[#pkg.sections + 1] = section
    elseif (kw == "option" or kw == "list") and w[2] and w[3] and section then
      local found
      for _, o in ipairs(section.options) do
        if o.name == w[2] then found = o end
      end
      if kw == "list" then
        if not found then
          found = { name = w[2], value = {} }
          section.options[#section.options + 1] = found
        elseif type(found.value) ~= "table" then
          found.value = {}
        end
        found.value[#found.value + 1] = w[3]
      elseif found then
        found.value = w[3]
      else
        section.options[#section.options + 1] = { name = w[2], value = w[3] }
      end
    elseif kw ~= nil and kw ~= "package" then
      fail(string.format("Parse error (invalid command) at line %d in %s", n, name))
    end
  end
  return pkg
end

local function find_section(pkg, ref)
  local stype, index = ref:match("^@([%w_]+)%[(%-?%d+)%]$")
  if stype then
    local of_type = {}
    for _, s in ipairs(pkg.sections) do
      if s.type == stype then of_type[#of_type + 1] = s end
    end
    index = tonumber(index)
    return of_type[index < 0 and #of_type + index + 1 or index + 1]
  end
  for _, s in ipairs(pkg.sections) do
    if s.name == ref then return s end
  end
end

local function find_option(section, name)
  for i, o in ipairs(section.options) do
    if o.name == name then return o, i end
  end
end

-- Applies one staged change; false when its section or option is missing.
local function apply(pkg, change)
  local section = find_section(pkg, change.section)
  if change.op == "set" and not change.option then
    if section then
      section.type = change.value
    else
      pkg.sections[#pkg.sections + 1] = { name = change.section, type = change.value, options = {} }
    end
    return true
  end
  if not section then return false end
  local option, index = nil, nil
  if change.option then option, index = find_option(section, change.option) end
  if change.op == "set" then
    if option then
      option.value = change.value
    else
      section.options[#section.options + 1] = { name = change.option, value = change.value }
    end
  elseif change.op == "add_list" then
    if option and type(option.value) == "table" then
      option.value[#option.value + 1] = change.value
    elseif option then
      option.value = { option.value, change.value }
    else
      section.options[#section.options + 1] = { name = change.option, value = { change.value } }
    end
  elseif change.op == "delete" then
    if change.option then
      if not option then return false end
      table.remove(section.options, index)
    else
      for i, s in ipairs(pkg.sections) do
        if s == section then table.remove(pkg.sections, i) end
      end
    end
  end
  return true
end

local function staged(name)
  local text = read(savedir .. "/" .. name)
  return text and cjson.decode(text) or {}
end

-- The package NAME as its file says, with its staged changes applied.
local function load(name)
  if not name:match("^[%w_%-]+$") then fail("Invalid argument") end
  local text = read(confdir .. "/" .. name)
  if not text then fail("Entry not found") end
  local pkg = parse(name, text)
  for _, change in ipairs(staged(name)) do apply(pkg, change) end
  return pkg
end

local function stage(name, change)
  local pkg = load(name)
  if not apply(pkg, change) then fail("Entry not found") end
  local changes = staged(name)
  changes[#changes + 1] = change
  os.execute("mkdir -p '" .. savedir:gsub("'", "'\\''") .. "'")
  write(savedir .. "/" .. name, cjson.encode(changes))
end

local function quote(value)
  return "'" .. value:gsub("'", "'\\''") .. "'"
end

-- The package in UCI's file syntax.
local function render(pkg)
  local out = {}
  for _, s in ipairs(pkg.sections) do
    out[#out + 1] = "\nconfig " .. s.type .. (s.anonymous and "" or " " .. quote(s.name)) .. "\n"
    for _, o in ipairs(s.options) do
      if type(o.value) == "table" then
        for _, v in ipairs(o.value) do out[#out + 1] = "\tlist " .. o.name .. " " .. quote(v) .. "\n" end
      else
        out[#out + 1] = "\toption " .. o.name .. " " .. quote(o.value) .. "\n"
      end
    end
  end
  return table.concat(out) .. "\n"
end

-- PATH (package.section.option) and, with `=`, VALUE.
local function split(argument)
  local path, value = argument, nil
  local eq = argument and argument:find("=", 1, true)
  if eq then path, value = argument:sub(1, eq - 1), argument:sub(eq + 1) end
  local pkg, section, option = (path or ""):match("^([^.]+)%.?([^.]*)%.?([^.]*)$")
  if not pkg then fail("Invalid argument") end
  return pkg, section ~= "" and section or nil, option ~= "" and option or nil, value
end

local args, i = arg, 1
while args[i] and args[i]:sub(1, 1) == "-" do
  local o = args[i]
  if o == "-q" then
    quiet = true
  elseif o == "-c" then
    i = i + 1
    confdir = args[i]
  elseif o == "-t" then
    i = i + 1
    savedir = args[i]
  elseif o == "-P" or o == "-p" then
    i = i + 1
  elseif not (o == "-S" or o == "-n" or o == "-N" or o == "-X") then
    fail("unknown option " .. o)
  end
  i = i + 1
end
local command, argument = args[i], args[i + 1]

if command == "get" then
  local name, sref, oname = split(argument)
  local section = sref and find_section(load(name), sref)
  if not section then fail("Entry not found") end
  if not oname then
    print(section.type)
  else
    local option = find_option(section, oname)
    if not option then fail("Entry not found") end
    print(type(option.value) == "table" and table.concat(option.value, " ") or option.value)
  end
elseif command == "set" or command == "add_list" then
  local name, section, option, value = split(argument)
  if not section or not value then fail("Invalid argument") end
  stage(name, { op = command, section = section, option = option, value = value })
elseif command == "delete" then
  local name, section, option = split(argument)
  if not section then fail("Invalid argument") end
  stage(name, { op = "delete", section = section, option = option })
elseif command == "commit" then
  local names = {}
  if argument then
    names[1] = argument
  else
    local p = io.popen("ls '" .. savedir:gsub("'", "'\\''") .. "' 2>/dev/null")
    for n in p:read("*a"):gmatch("[^\n]+") do names[#names + 1] = n end
    p:close()
  end
  for _, name in ipairs(names) do
    local pkg = load(name)
    write(confdir .. "/" .. name, render(pkg))
    os.remove(savedir .. "/" .. name)
  end
elseif command == "export" and argument then
  io.write("package " .. argument .. "\n" .. render(load(argument)))
elseif command == "show" and argument then
  local name, sref, oname = split(argument)
  local pkg = load(name)
  for _, s in ipairs(pkg.sections) do
    if not sref or find_section(pkg, sref) == s then
      if not oname then print(name .. "." .. s.name .. "=" .. s.type) end
      for _, o in ipairs(s.options) do
        if not oname or o.name == oname then
          local v = type(o.value) == "table" and o.value or { o.value }
          local quoted = {}
          for k, x in ipairs(v) do quoted[k] = quote(x) end
          print(name .. "." .. s.name .. "." .. o.name .. "=" .. table.concat(quoted, " "))
        end
      end
    end
  end
elseif command == "changes" then
  local p = io.popen("ls '" .. savedir:gsub("'", "'\\''") .. "' 2>/dev/null")
  for name in p:read("*a"):gmatch("[^\n]+") do
    if not argument or argument == name then
      for _, c in ipairs(staged(name)) do
        local path = name .. "." .. c.section .. (c.option and "." .. c.option or "")
        print((c.op == "delete" and "-" or c.op == "add_list" and "+" or "") .. path
          .. (c.value and "=" .. quote(c.value) or ""))
      end
    end
  end
  p:close()
else
  fail("Invalid argument (a command this stand-in does not know: " .. tostring(command) .. ")")
end
