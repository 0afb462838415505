-- docs/cli.md's synopsis says what the command does (issue 21): the same
-- commands as `dps --help` and the parser, and for each command the same
-- flags as `dps COMMAND --help` and as the parser accepts (old names
-- aside), every group of flags (KEY-SOURCE, SERVER, …) expanded; and the
-- same exit codes as `dps --help` and dps.cli.EXIT. The reader of the
-- synopsis is tried on a planted mismatch, so that it cannot pass by
-- reading nothing.
local cli = require "dps.cli"
local args = require "dps.cli.args"
local emulator = require "spec.support.emulator"
local shell = require "spec.support.shell"

local PAGE = "docs/cli.md"

-- What `dps ARGV…` prints on stdout (it must exit 0).
local function stdout_of(...)
  local out = {}
  local code = cli.main({ ... }, {}, { stdout = { write = function(_, s) out[#out + 1] = s end },
    stderr = { write = function() end } })
  assert.are.equal(0, code, table.concat({ ... }, " "))
  return table.concat(out)
end

-- The flags a text names (`-v` is `--verbose`), as a set of names without
-- the dashes; `--help` left out (every command takes it).
local function flags_in(text)
  local set = {}
  for name in (" " .. text):gmatch("[%s%[%(|]%-%-(%l[%l%-]*%l)") do set[name] = true end
  if (" " .. text):find("[%s%[]%-v[%s%]]") then set.verbose = true end
  set.help = nil
  return set
end

local function sorted(set)
  local list = {}
  for k in pairs(set) do list[#list + 1] = k end
  table.sort(list)
  return list
end

--- The synopsis of a page's text: `{ commands = { name → set of flags },
-- codes = { exit code → true } }`, from the code block under "## Synopsis"
-- (a line `dps NAME[|NAME…]  …` starts a command, an indented line goes on
-- with it; `GROUP  …` defines a group of flags that a command or another
-- group names) and the table under "## Exit codes".
local function synopsis_of(text)
  local block = text:match("\n## Synopsis\n.-\n```\n(.-)\n```")
  assert(block, PAGE .. " has no code block under ## Synopsis")
  local entries, groups, current = {}, {}, nil
  for line in (block .. "\n"):gmatch("([^\n]*)\n") do
    local names, rest = line:match("^dps ([%l][%l%-|]*)%s+(.*)$")
    local group, definition = line:match("^([%u][%u%-]+)%s%s+(.*)$")
    if names then
      current = { names = names, text = rest }
      entries[#entries + 1] = current
    elseif group then
      current = { text = definition }
      groups[group] = current
    elseif line:match("^%s+%S") and current then
      current.text = current.text .. " " .. line
    else
      current = nil -- `dps --help | …`, a blank line
    end
  end
  -- a text with its groups' texts, recursively
  local function expanded(t, depth)
    assert(depth < 10, "the groups of the synopsis name each other in a circle")
    return (t:gsub("%f[%w%-][%u][%u%-]+%f[^%w%-]", function(word)
      return groups[word] and (" " .. expanded(groups[word].text, depth + 1) .. " ") or nil
    end))
  end
  local commands = {}
  for _, e in ipairs(entries) do
    for name in e.names:gmatch("[^|]+") do
      assert(not commands[name], "the synopsis lists dps " .. name .. " twice")
      commands[name] = flags_in(expanded(e.text, 0))
    end
  end
  local codes = {}
  for code in (text:match("\n## Exit codes\n(.-)\n##") or ""):gmatch("\n| (%d+) |") do codes[tonumber(code)] = true end
  return { commands = commands, codes = codes }
end

-- The commands `dps --help` lists, and its exit codes.
local function overview()
  local text = stdout_of("--help")
  local commands, codes = {}, {}
  for line in (text:match("\nCommands:\n(.-\n)\n") or ""):gmatch("([^\n]*)\n") do
    local name = line:match("^  ([%l][%l%-]+)%s")
    if name then commands[name] = true end
  end
  for code in (text:match("\nExit codes:\n(.-)\n\n") or ""):gmatch("  (%d+)  ") do codes[tonumber(code)] = true end
  return commands, codes, text
end

-- The flags a command accepts, old names left out (args.OLD_NAMES, and
-- --key-file where there is no certificate: the old --symmetric-key-file).
local function accepted(name)
  local set, with_cert = {}, false
  for _, flag in ipairs(args.COMMANDS[name].flags) do
    set[flag] = true
    with_cert = with_cert or flag == "cert-file"
  end
  if not with_cert then set["key-file"] = nil end
  for old in pairs(args.OLD_NAMES) do set[old] = nil end
  return set
end

-- The differences between two sets of flags, as lines ("" when none).
local function differences(what, a, a_name, b, b_name)
  local lines = {}
  for _, f in ipairs(sorted(a)) do
    if not b[f] then lines[#lines + 1] = string.format("%s: --%s in %s, not in %s", what, f, a_name, b_name) end
  end
  for _, f in ipairs(sorted(b)) do
    if not a[f] then lines[#lines + 1] = string.format("%s: --%s in %s, not in %s", what, f, b_name, a_name) end
  end
  return table.concat(lines, "\n")
end

-- Every difference between the synopsis of `text` and the command.
local function mismatches(text)
  local synopsis = synopsis_of(text)
  local listed, codes = overview()
  local problems, parsed = {}, {}
  for _, name in ipairs(args.ORDER) do parsed[name] = true end
  for _, set in ipairs({ { listed, "dps --help" }, { parsed, "dps.cli.args.ORDER" } }) do
    for name in pairs(set[1]) do
      if not synopsis.commands[name] then problems[#problems + 1] = name .. ": in " .. set[2] .. ", not in " .. PAGE end
    end
  end
  for name, flags in pairs(synopsis.commands) do
    if not listed[name] then
      problems[#problems + 1] = name .. ": in " .. PAGE .. ", not in dps --help"
    elseif not args.COMMANDS[name] then
      problems[#problems + 1] = name .. ": in " .. PAGE .. ", not a command"
    else
      local help = flags_in(stdout_of(name, "--help"))
      for _, d in ipairs({ differences(name, flags, PAGE, help, "dps " .. name .. " --help"),
        differences(name, flags, PAGE, accepted(name), "what it accepts") }) do
        if d ~= "" then problems[#problems + 1] = d end
      end
    end
  end
  local exits = {}
  for _, code in pairs(cli.EXIT) do exits[code] = true end
  for _, set in ipairs({ { codes, "dps --help" }, { exits, "dps.cli.EXIT" } }) do
    for code in pairs(set[1]) do
      if not synopsis.codes[code] then problems[#problems + 1] = "exit code " .. code .. ": not in " .. PAGE end
    end
    for code in pairs(synopsis.codes) do
      if not set[1][code] then problems[#problems + 1] = "exit code " .. code .. ": not in " .. set[2] end
    end
  end
  table.sort(problems)
  return problems
end

describe("docs/cli.md's synopsis", function()
  local page

  setup(function()
    page = assert(shell.read(emulator.root .. "/" .. PAGE), "no " .. PAGE)
  end)

  it("reads every command, its flags through its groups, and the exit codes", function()
    local synopsis = synopsis_of(page)
    assert.is_true(#sorted(synopsis.commands) >= 12, table.concat(sorted(synopsis.commands), " "))
    for _, flag in ipairs({ "symmetric-key-file", "cert-file", "key-password-file", "ca-path", "verbose",
      "hub-endpoint", "renew-at", "cache" }) do
      assert.is_true(synopsis.commands.complete[flag], "complete: --" .. flag)
    end
    assert.is_nil(synopsis.commands.status.cache)
    assert.are.same({ 0, 1, 2, 3, 4, 5, 6 }, sorted(synopsis.codes))
  end)

  it("agrees with dps --help, each command's --help and what each command accepts", function()
    local problems = mismatches(page)
    assert.is_true(#problems == 0, table.concat(problems, "\n"))
  end)

  it("finds a mismatch planted in the synopsis, a group or the exit codes", function()
    for _, case in ipairs({
      -- the issue's: status said to take --cache, provision-batch missing
      { "\ndps status           --id-scope S KEY-SOURCE [SERVER]\n",
        "\ndps status           --id-scope S KEY-SOURCE [SERVER] [--cache FILE]\n",
        "status: --cache in docs/cli.md, not in dps status --help" },
      { "\ndps provision-batch ", "\n", "provision-batch: in dps --help, not in docs/cli.md" },
      { "[--ca-path DIR] ", "", "provision: --ca-path in dps provision --help, not in docs/cli.md" },
      { "dps complete|reject|abandon ", "dps complete|abandon ", "reject: in dps --help, not in docs/cli.md" },
      { "\n| 6 | ", "\n| 7 | ", "exit code 7: not in dps --help" },
    }) do
      local planted, n = page:gsub(case[1]:gsub("[%p]", "%%%0"), (case[2]:gsub("%%", "%%%%")), 1)
      assert.are.equal(1, n, case[1])
      local problems = table.concat(mismatches(planted), "\n")
      assert.truthy(problems:find(case[3], 1, true), case[3] .. " not found in:\n" .. problems)
    end
  end)
end)
