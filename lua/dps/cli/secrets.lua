--- Where the command's credentials come from: key files and environment
-- variables, never the command line. Reads them, checks that a key is
-- base64 and that no other user can read its file (with `stat` from the C
-- core), and registers every secret with the terminal so that no message
-- shows it.
-- @module dps.cli.secrets
local core = require "dps.core"
local errors = require "dps.errors"
local output = require "dps.cli.output"

local fail, usage_error = output.fail, output.usage_error

local secrets = {}

-- A key-file flag's value that may be the secret itself, given by mistake in
-- place of a file name, is kept out of every message (the library's rule).
local may_be_secret = errors.may_be_secret
secrets.may_be_secret = may_be_secret

-- Stops the command: the file named by `flag` cannot be opened (`problem`
-- from io.open: "PATH: reason"); the path is shown only when it cannot be a
-- secret (`hidden` false).
local function fail_unreadable(flag, path, problem, hidden)
  local reason = tostring(problem):sub(#path + 3)
  if tostring(problem):sub(1, #path) ~= path or reason == "" then reason = "cannot be opened" end
  fail("credentials", hidden and string.format("%s: the value given is no file that can be read (%s); it looks "
    .. "like a key or pass phrase, so it is not shown: give the name of a file that holds it", flag, reason)
    or string.format("%s %s: %s", flag, path, reason))
end

--- Warns when a secret file can be read by other users (group or others).
function secrets.check_mode(path, term)
  local facts = core.stat(path)
  if not facts then return end -- reading it says what is wrong
  local mode = facts.mode
  local group_reads, others_read = math.floor(mode / 32) % 2 == 1, math.floor(mode / 4) % 2 == 1
  if group_reads or others_read then
    term.err(string.format("warning: %s can be read by other users (mode %04o); run: chmod 600 '%s'", path, mode,
      (path:gsub("'", "'\\''"))))
  end
end

--- Reads a secret from file `path`, named by `flag` (as typed) in messages:
-- the whole file for a pass phrase (`exact`: one trailing newline removed),
-- the trimmed contents for a key. Registers it with `term`.
--
-- A `path` that may be the secret itself, given by mistake, is not shown:
-- one that looks like a key never (it is registered as a secret); for a
-- pass phrase, any name without a `/` while it names no file that can be
-- read; once read, it was a file's name, which later messages name
-- (`wrong --key-password-file pass.txt?`).
function secrets.read(path, flag, term, exact)
  local hidden = may_be_secret(path) or (exact and not path:find("/", 1, true))
  if may_be_secret(path) then
    term.keep_secret(path) -- perhaps the secret itself, given by mistake
    term.keep_secret(path:match("^%s*(.-)%s*$"))
  end
  local facts = core.stat(path)
  if facts and facts.type == "directory" then
    fail("credentials", hidden and (flag .. ": the value given is a directory, not a file")
      or string.format("%s %s is a directory: give the file that holds the %s", flag, path,
        exact and "pass phrase" or "key"))
  end
  local f, problem = io.open(path, "rb")
  if not f then
    fail_unreadable(flag, path, problem, hidden)
  end
  local text, read_problem = f:read("*a")
  f:close()
  if text == nil then
    fail("credentials", string.format("%s %s cannot be read: %s", flag, hidden and "(the value given)" or path,
      tostring(read_problem)))
  end
  if exact then
    text = text:gsub("\r?\n$", "")
  else
    text = text:match("^%s*(.-)%s*$")
  end
  if text == "" then
    fail("credentials", string.format("%s %s is empty", flag, path))
  end
  secrets.check_mode(path, term)
  term.keep_secret(text)
  return text
end

local function getenv_secret(env, name, term)
  local value = env(name)
  if value == nil or value == "" then return nil end
  term.keep_secret(value)
  local trimmed = value:match("^%s*(.-)%s*$")
  if trimmed ~= value and trimmed ~= "" then term.keep_secret(trimmed) end
  return trimmed
end

-- The key's rules are the C core's (core.key_problem), as for dps.new and
-- the token functions: a key the command accepts is one the library takes.
local function key_source(kind, key, from)
  local problem = core.key_problem(key)
  if problem then
    fail("credentials", string.format("%s: the key is not base64: it %s", from, problem))
  end
  return { kind = kind, key = key, from = from }
end

local function no_key(command)
  if command.name == "derive-key" then
    fail("credentials", "no group key: give --group-key-file FILE or set DPS_GROUP_KEY")
  elseif command.name == "token" then
    fail("credentials", "no key: give --symmetric-key-file FILE or --group-key-file FILE, or set "
      .. "DPS_SYMMETRIC_KEY or DPS_GROUP_KEY")
  end
  fail("credentials", "no key: give --symmetric-key-file FILE, --group-key-file FILE or --cert-file FILE "
    .. "--key-file FILE, or set DPS_SYMMETRIC_KEY or DPS_GROUP_KEY")
end

--- The one key source of a command:
-- `{ kind = "symmetric" | "group" | "x509", key = …, from = "…" }`
-- (x509: `cert_file`, `key_file`, `key_password`), from `opts` and `given`
-- (`dps.cli.args.parse`), `env` (a function `name -> value`), the `command`
-- (`dps.cli.args.COMMANDS`) and the `term`inal.
function secrets.source(opts, given, env, command, term)
  local flag_sources = {}
  for _, name in ipairs({ "symmetric-key-file", "group-key-file", "cert-file" }) do
    if opts[name] then flag_sources[#flag_sources + 1] = given[name] end
  end
  if #flag_sources > 1 then
    usage_error("give one key source, not " .. table.concat(flag_sources, " and "))
  end
  if opts["key-password-file"] and not opts["cert-file"] then
    usage_error("--key-password-file belongs to --cert-file and --key-file")
  end

  local source
  local symmetric_file, group_file = opts["symmetric-key-file"], opts["group-key-file"]
  if opts["cert-file"] then
    if not opts["key-file"] then
      usage_error(given["cert-file"] .. " needs the certificate's private key: give --key-file FILE")
    end
    source = { kind = "x509", cert_file = opts["cert-file"], key_file = opts["key-file"],
      from = "certificate " .. opts["cert-file"],
      names = { cert_file = given["cert-file"], key_file = given["key-file"] } }
    if may_be_secret(opts["key-file"]) then
      -- perhaps the private key itself, given by mistake: kept out of every
      -- message, and not handed to the library, whose message would name it
      term.keep_secret(opts["key-file"])
      local f, problem = io.open(opts["key-file"], "rb")
      if not f then fail_unreadable(given["key-file"], opts["key-file"], problem, true) end
      f:close()
    end
    secrets.check_mode(opts["key-file"], term)
    if opts["key-password-file"] then
      source.key_password = secrets.read(opts["key-password-file"], "--key-password-file", term, true)
      source.names.key_password = "--key-password-file " .. opts["key-password-file"]
    else
      source.key_password = getenv_secret(env, "DPS_KEY_PASSWORD", term)
      source.names.key_password = source.key_password and "DPS_KEY_PASSWORD" or nil
    end
  elseif symmetric_file then
    local flag = given["symmetric-key-file"]
    source = key_source("symmetric", secrets.read(symmetric_file, flag, term), flag .. " " .. symmetric_file)
  elseif group_file then
    source = key_source("group", secrets.read(group_file, "--group-key-file", term),
      "--group-key-file " .. group_file)
  else
    local individual = command.sources.symmetric and getenv_secret(env, "DPS_SYMMETRIC_KEY", term)
    local group = command.sources.group and getenv_secret(env, "DPS_GROUP_KEY", term)
    if individual and group then
      usage_error("both DPS_SYMMETRIC_KEY and DPS_GROUP_KEY are set: unset one, or give --symmetric-key-file "
        .. "or --group-key-file")
    elseif individual then
      source = key_source("symmetric", individual, "DPS_SYMMETRIC_KEY")
    elseif group then
      source = key_source("group", group, "DPS_GROUP_KEY")
    else
      no_key(command)
    end
  end
  if not command.sources[source.kind] then
    if command.name == "derive-key" then
      usage_error("derive-key derives from a group key: give --group-key-file FILE or set DPS_GROUP_KEY")
    else
      usage_error("dps token signs with a symmetric key; an X.509 device needs no token")
    end
  end
  return source
end

return secrets
