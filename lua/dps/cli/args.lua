--- The command line's grammar: the commands, the flags each takes (named as
-- the Lua options are: `--cert-file`, `--key-file` the certificate's private
-- key, `--symmetric-key-file`, `--group-key-file`), the old names still
-- accepted, and the parsing of `argv` into options.
-- @module dps.cli.args
local output = require "dps.cli.output"

local usage_error = output.usage_error

local args = {}

-- The flags of the commands that talk to the service (provision, status, and
-- the hub's send, receive, complete, reject, abandon and upload): --timeout
-- is the overall limit of a call that may retry, --request-timeout that of
-- one request.
local SERVICE_FLAGS = { "id-scope", "registration-id", "symmetric-key-file", "group-key-file", "cert-file",
  "key-file", "key-password-file", "endpoint", "ca-file", "ca-path", "proxy", "api-version", "timeout",
  "request-timeout", "verbose" }

local function with(list, ...)
  local out = { ... }
  for _, v in ipairs(list) do out[#out + 1] = v end
  return out
end

-- complete, reject and abandon (dps.cli.hub): LOCK-TOKEN, as receive printed
-- it, is the one argument that is not an option.
local function settling()
  return { flags = with(SERVICE_FLAGS, "cache", "hub-endpoint", "payload", "issue-cert", "curve", "renew-at"),
    required = { "id-scope" }, sources = { symmetric = true, group = true, x509 = true }, positional = "lock-token" }
end

--- The commands: the flags each accepts, the flags it requires, and the key
-- sources it can use.
-- @table COMMANDS
args.COMMANDS = {
  provision = { flags = with(SERVICE_FLAGS, "payload", "cache", "force", "issue-cert", "curve", "renew-at"),
    required = { "id-scope" }, sources = { symmetric = true, group = true, x509 = true } },
  renew = { flags = with(SERVICE_FLAGS, "payload", "cache", "issue-cert", "curve"), required = { "id-scope",
    "issue-cert" }, sources = { symmetric = true, group = true, x509 = true } },
  status = { flags = SERVICE_FLAGS, required = { "id-scope" },
    sources = { symmetric = true, group = true, x509 = true } },
  -- "key-file": its old meaning, the symmetric key (there is no certificate here)
  token = { flags = { "id-scope", "registration-id", "symmetric-key-file", "group-key-file", "key-file", "expiry",
    "ttl", "verbose" }, required = { "id-scope", "registration-id" }, sources = { symmetric = true, group = true } },
  ["derive-key"] = { flags = { "registration-id", "group-key-file" }, required = { "registration-id" },
    sources = { group = true } },
  ["provision-batch"] = { flags = { "id-scope", "group-key-file", "ids", "concurrency", "rate", "endpoint",
    "ca-file", "ca-path", "proxy", "api-version", "timeout", "request-timeout", "cache-dir", "verbose" },
    required = { "id-scope", "ids" },
    sources = { group = true } },
  -- the hub (dps.cli.hub): DATA is the one argument that is not an option
  send = { flags = with(SERVICE_FLAGS, "cache", "hub-endpoint", "property", "content-type", "content-encoding",
    "message-id", "payload", "issue-cert", "curve", "renew-at"), required = { "id-scope" },
    sources = { symmetric = true, group = true, x509 = true },
    positional = "data", repeatable = { property = true } },
  receive = { flags = with(SERVICE_FLAGS, "cache", "hub-endpoint", "payload", "complete", "reject", "abandon",
    "issue-cert", "curve", "renew-at"),
    required = { "id-scope" }, sources = { symmetric = true, group = true, x509 = true } },
  complete = settling(), reject = settling(), abandon = settling(),
  -- FILE is the one argument that is not an option
  upload = { flags = with(SERVICE_FLAGS, "cache", "hub-endpoint", "payload", "name", "block-size", "content-type",
    "issue-cert", "curve", "renew-at"), required = { "id-scope" },
    sources = { symmetric = true, group = true, x509 = true }, positional = "file" },
}

--- The commands in the order `dps help` lists them.
args.ORDER = { "provision", "provision-batch", "status", "renew", "token", "derive-key", "send", "receive",
  "complete", "reject", "abandon", "upload" }

--- Old flag names, still accepted (old name → name). `--key-file` without
-- `--cert-file` is also the old name of `--symmetric-key-file`
-- (`resolve_key_file`).
-- @table OLD_NAMES
args.OLD_NAMES = { cert = "cert-file", ["cert-key"] = "key-file" }
local ALIASES = args.OLD_NAMES

-- Flags that take no value.
local BOOLEAN = { verbose = true, help = true, force = true, complete = true, reject = true, abandon = true }

-- Flags someone might use to pass a secret: refused with a pointer to the
-- safe way.
local SYMMETRIC = "--symmetric-key-file FILE or DPS_SYMMETRIC_KEY"
local GROUP = "--group-key-file FILE or DPS_GROUP_KEY"
local PASSWORD = "--key-password-file FILE or DPS_KEY_PASSWORD"
local SECRET_FLAGS = {
  key = SYMMETRIC, ["symmetric-key"] = SYMMETRIC, ["primary-key"] = SYMMETRIC, ["secondary-key"] = SYMMETRIC,
  ["device-key"] = SYMMETRIC, ["connection-string"] = SYMMETRIC,
  ["group-key"] = GROUP, ["enrollment-key"] = GROUP,
  ["key-password"] = PASSWORD, password = PASSWORD, passphrase = PASSWORD,
  sas = "a key file (dps computes the token)", ["sas-token"] = "a key file (dps computes the token)",
}

--- Parses `argv[first..]` against a command's flags.
-- @treturn table opts, by canonical flag name (`opts["cert-file"]`)
-- @treturn table given: for each canonical name, the flag as it was typed (`"--cert"`)
function args.parse(argv, first, command)
  local allowed = { help = true }
  for _, name in ipairs(command.flags) do allowed[name] = true end
  local opts, given, i = {}, {}, first
  while argv[i] ~= nil do
    local a = tostring(argv[i])
    local name, value
    if a == "-h" then
      name = "help"
    elseif a == "-v" then
      name = "verbose"
    elseif a:sub(1, 2) == "--" and #a > 2 then
      name, value = a:match("^%-%-([^=]+)=(.*)$")
      name = name or a:sub(3)
    elseif command.positional and opts[command.positional] == nil then
      name, value = command.positional, a -- DATA, or "-" for stdin
    else
      usage_error(string.format("argument %d is not an option (options start with --); see dps %s --help",
        i, command.name))
    end
    if SECRET_FLAGS[name] then
      usage_error(string.format("--%s: secrets are not accepted on the command line, where every user can "
        .. "read them (ps); use %s", name, SECRET_FLAGS[name]))
    end
    local typed = "--" .. name
    name = ALIASES[name] or name
    if name == command.positional then
      typed = name:upper()
    elseif not allowed[name] then
      usage_error(string.format("unknown option %s for dps %s; see dps %s --help", typed:sub(1, 42),
        command.name, command.name))
    end
    local repeatable = command.repeatable and command.repeatable[name]
    if opts[name] ~= nil and not repeatable then
      usage_error(given[name] == typed and (typed .. " given more than once")
        or string.format("%s and %s are the same option: give it once", given[name], typed))
    end
    given[name] = typed
    if repeatable then -- a list of values (--property k=v …)
      i = i + (value == nil and 1 or 0)
      value = value or argv[i]
      if value == nil or value == "" then usage_error(typed .. " needs a value") end
      opts[name] = opts[name] or {}
      opts[name][#opts[name] + 1] = tostring(value)
    elseif BOOLEAN[name] then
      if value ~= nil then usage_error(typed .. " takes no value") end
      opts[name] = true
    else
      if value == nil then
        i = i + 1
        value = argv[i]
        if value == nil then usage_error(typed .. " needs a value") end
        value = tostring(value)
      end
      if value == "" then usage_error(typed .. " must not be empty") end
      opts[name] = value
    end
    i = i + 1
  end
  return opts, given
end

--- `--key-file` names the certificate's private key, as `key_file` does in
-- Lua. Without a certificate it keeps its old meaning, the symmetric key,
-- with a note on stderr; `--cert-key` goes with a certificate only.
function args.resolve_key_file(opts, given, term)
  if opts["key-file"] == nil or opts["cert-file"] ~= nil then return end
  if given["key-file"] ~= "--key-file" then
    usage_error(given["key-file"] .. " is the certificate's private key: give the certificate with --cert-file")
  end
  if opts["symmetric-key-file"] then
    usage_error("give one key source, not --symmetric-key-file and --key-file")
  end
  opts["symmetric-key-file"], opts["key-file"] = opts["key-file"], nil
  given["symmetric-key-file"], given["key-file"] = "--key-file", nil
  term.err("note: --key-file without --cert-file is the old name of --symmetric-key-file, which it will stop "
    .. "being; use --symmetric-key-file")
end

--- A required flag's value, or a usage error.
function args.required(opts, name)
  if opts[name] == nil then
    usage_error("--" .. name .. " is required")
  end
  return opts[name]
end

--- A positive number of seconds (fractions allowed), or nil when not given.
function args.positive_number(opts, name)
  local text = opts[name]
  if text == nil then return nil end
  local n = tonumber(text)
  if not n or n ~= n or n <= 0 or n == math.huge then
    usage_error("--" .. name .. " must be a positive number of seconds")
  end
  return n
end

--- A whole number, or nil when not given (how large it may be is the
-- library's rule: the token functions check the expiry they are given).
function args.whole_number(opts, name, what)
  local text = opts[name]
  if text == nil then return nil end
  local n = tonumber(text)
  if not text:match("^%d+$") or not n then
    usage_error("--" .. name .. " must be " .. what)
  end
  return n
end

return args
