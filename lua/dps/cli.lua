--- The `dps` command-line tool: `dps provision`, `status`, `token`,
-- `derive-key`.
--
-- `bin/dps` is a shim around `main`; busted calls `main` in-process:
--
--    local code = require("dps.cli").main({ "token", "--id-scope", "0ne…", "--registration-id", "dev-01" },
--      { DPS_SYMMETRIC_KEY = key }, { stdout = out, stderr = err })
--
-- Keys come from files or environment variables, never from the command
-- line (every user can read another's command line with `ps`). No output,
-- error or `--verbose` line ever holds a key, a token's signature or a
-- private key; `token` and `derive-key` print their value on stdout because
-- that value is what they are asked for.
-- @module dps.cli
local dps = require "dps"
local json = require("cjson").new()

local cli = {}

--- Exit codes, as listed by `dps help` and in the README.
-- @table EXIT
-- @field ok 0: success
-- @field error 1: the service refused the request (400, 404, 409, 429, 5xx, an answer
--   that breaks the protocol), or an internal error
-- @field usage 2: a mistake on the command line or in an option's value
-- @field credentials 3: a key, certificate or pass phrase is missing, unreadable or unusable
-- @field auth 4: the service refused the credentials (HTTP 401/403)
-- @field network 5: DNS, connection, proxy, TLS, or no decision within the time limit
-- @field outcome 6: the registration ended `failed` or `disabled`
cli.EXIT = { ok = 0, error = 1, usage = 2, credentials = 3, auth = 4, network = 5, outcome = 6 }
local EXIT = cli.EXIT

local EXIT_OF_KIND = {
  auth = EXIT.auth,
  resolve = EXIT.network, connect = EXIT.network, proxy = EXIT.network, tls = EXIT.network,
  timeout = EXIT.network, network = EXIT.network,
  credentials = EXIT.credentials,
  failed = EXIT.outcome, disabled = EXIT.outcome,
}

local HINT_OF_KIND = {
  auth = "the service refused the credentials: check the key or certificate, the registration ID and the clock",
  not_found = "check --id-scope and --endpoint",
  bad_request = "check --payload, --registration-id and --api-version",
  conflict = "another registration of this device is in progress: try again",
  throttled = "throttled by the service: try again later",
  service = "the service had a problem: try again later",
  resolve = "check --endpoint and DNS",
  connect = "check --endpoint, the network and --proxy",
  proxy = "check --proxy",
  tls = "check --ca-file / the system CA store and the clock",
  credentials = "check --cert, --cert-key and the key's pass phrase",
  timeout = "check the network, or give more --timeout",
  network = "check the network",
  disabled = "the enrollment or the registration is disabled in DPS",
}

local USAGE = [[
usage: dps COMMAND [OPTIONS]

Provision devices through the Azure IoT Hub Device Provisioning Service.

Commands:
  provision    register the device and wait for its assignment; prints the
               registration state as JSON
  status       look up the device's registration (no new registration);
               prints the registration state as JSON
  token        print a DPS SAS token for the device
  derive-key   print the device key derived from an enrollment group key

Keys are never taken from the command line (every user can read it with ps):
  --key-file FILE         individual enrollment key     (or DPS_SYMMETRIC_KEY)
  --group-key-file FILE   enrollment group key; the     (or DPS_GROUP_KEY)
                          device key is derived from it
  --cert FILE --cert-key FILE   X.509 certificate (PEM, with its chain) and key;
                          an encrypted key's pass phrase comes from
                          --key-password-file FILE or DPS_KEY_PASSWORD

Exit codes:
  0  success
  1  the service refused the request (400, 404, 409, 429, 5xx, bad answer)
  2  usage: a mistake on the command line or in an option's value
  3  local credentials: key, certificate or pass phrase missing or unusable
  4  authentication refused by the service (401, 403)
  5  network, DNS, proxy, TLS, or no decision within --timeout
  6  the registration ended "failed" or "disabled"

dps COMMAND --help shows the options of a command; dps --version the version.
]]

local CONNECTION_HELP = [[
  --id-scope S            the DPS instance's ID scope (required)
  --registration-id R     the device's registration ID (required, except with
                          --cert: then it is the certificate's subject CN)
  --key-file FILE         individual enrollment key, base64 (or DPS_SYMMETRIC_KEY)
  --group-key-file FILE   enrollment group key, base64 (or DPS_GROUP_KEY)
  --cert FILE             X.509 device certificate, PEM, with its chain
  --cert-key FILE         the certificate's private key, PEM
  --key-password-file FILE  pass phrase of an encrypted --cert-key (or DPS_KEY_PASSWORD)
  --endpoint URL          default https://global.azure-devices-provisioning.net
  --ca-file FILE          PEM bundle of CAs to trust (adds to libcurl's default
                          CA directory where it has one, as on Debian)
  --ca-path DIR           directory of hashed CA certificates
  --proxy URL             http://host:port, through HTTP CONNECT
  --api-version V         default 2021-06-01
  --timeout SECONDS       overall limit%s
  -v, --verbose           progress on stderr (never a key or token)
]]

local COMMANDS = {}

-- The flags of the commands that talk to the service (provision, status).
local SERVICE_FLAGS = { "id-scope", "registration-id", "key-file", "group-key-file", "cert", "cert-key",
  "key-password-file", "endpoint", "ca-file", "ca-path", "proxy", "api-version", "timeout", "verbose" }

local function with(list, ...)
  local out = { ... }
  for _, v in ipairs(list) do out[#out + 1] = v end
  return out
end

COMMANDS.provision = {
  required = { "id-scope" },
  summary = "register the device and print its assignment as JSON",
  usage = "usage: dps provision --id-scope S --registration-id R KEY-SOURCE [OPTIONS]\n\n"
    .. "Registers the device, polls until the service decides, and prints the\n"
    .. "registration state (assignedHub, deviceId, …) as one line of JSON.\n\n"
    .. CONNECTION_HELP:format(" (default 60)")
    .. "  --payload JSON          a JSON object sent as the registration's payload,\n"
    .. "                          e.g. '{\"modelId\":\"dtmi:com:example:Thermostat;1\"}'\n",
  flags = with(SERVICE_FLAGS, "payload"),
  sources = { symmetric = true, group = true, x509 = true },
}

COMMANDS.status = {
  required = { "id-scope" },
  summary = "look up the device's registration and print it as JSON",
  usage = "usage: dps status --id-scope S --registration-id R KEY-SOURCE [OPTIONS]\n\n"
    .. "Looks up the device's registration (Device Registration Status Lookup)\n"
    .. "without registering again, and prints it as one line of JSON.\n\n"
    .. CONNECTION_HELP:format(" (default 30)"),
  flags = SERVICE_FLAGS,
  sources = { symmetric = true, group = true, x509 = true },
}

COMMANDS.token = {
  required = { "id-scope", "registration-id" },
  summary = "print a DPS SAS token",
  usage = [[
usage: dps token --id-scope S --registration-id R KEY-SOURCE [--expiry EPOCH | --ttl SECONDS]

Prints the device's DPS SAS token (resource {id_scope}/registrations/{id},
skn=registration) for an Authorization header.

  --id-scope S            the DPS instance's ID scope (required)
  --registration-id R     the device's registration ID (required)
  --key-file FILE         individual enrollment key, base64 (or DPS_SYMMETRIC_KEY)
  --group-key-file FILE   enrollment group key, base64 (or DPS_GROUP_KEY)
  --expiry EPOCH          expiry, whole seconds since 1970-01-01 UTC
  --ttl SECONDS           lifetime from now (default 3600)
  -v, --verbose           the expiry on stderr
]],
  flags = { "id-scope", "registration-id", "key-file", "group-key-file", "expiry", "ttl", "verbose" },
  sources = { symmetric = true, group = true },
}

COMMANDS["derive-key"] = {
  required = { "registration-id" },
  summary = "print a device key derived from a group key",
  usage = [[
usage: dps derive-key --registration-id R (--group-key-file FILE | DPS_GROUP_KEY)

Prints the device key (base64) of enrollment group member R: the
HMAC-SHA256 of R under the group key. Give each device its own derived key;
keep the group key off the devices.

  --registration-id R     the device's registration ID (required)
  --group-key-file FILE   enrollment group key, base64 (or DPS_GROUP_KEY)
]],
  flags = { "registration-id", "group-key-file" },
  sources = { group = true },
}

local ORDER = { "provision", "status", "token", "derive-key" }

-- Flags that take no value.
local BOOLEAN = { verbose = true, help = true }

-- Flags someone might use to pass a secret: refused with a pointer to the
-- safe way.
local SECRET_FLAGS = {
  key = "--key-file FILE or DPS_SYMMETRIC_KEY",
  ["symmetric-key"] = "--key-file FILE or DPS_SYMMETRIC_KEY",
  ["primary-key"] = "--key-file FILE or DPS_SYMMETRIC_KEY",
  ["secondary-key"] = "--key-file FILE or DPS_SYMMETRIC_KEY",
  ["device-key"] = "--key-file FILE or DPS_SYMMETRIC_KEY",
  ["group-key"] = "--group-key-file FILE or DPS_GROUP_KEY",
  ["enrollment-key"] = "--group-key-file FILE or DPS_GROUP_KEY",
  ["key-password"] = "--key-password-file FILE or DPS_KEY_PASSWORD",
  password = "--key-password-file FILE or DPS_KEY_PASSWORD",
  passphrase = "--key-password-file FILE or DPS_KEY_PASSWORD",
  sas = "a key file (dps computes the token)",
  ["sas-token"] = "a key file (dps computes the token)",
  ["connection-string"] = "--key-file FILE or DPS_SYMMETRIC_KEY",
}

-- A failure the CLI itself detected: thrown as a table, caught in main.
local Failure = {}

local function fail(code, message)
  error(setmetatable({ code = code, message = message }, Failure), 0)
end

local function usage_error(message)
  fail(EXIT.usage, message)
end

-- Library misuse raises "file.lua:12: message"; the message alone is what
-- the user needs.
local function strip_position(message)
  message = tostring(message)
  return (message:gsub("^[^%s]-:%d+: ", ""))
end

local function one_line(text)
  return (tostring(text):gsub("[\r\n]+", " "))
end

-- Replaces every occurrence of each secret with <redacted>, and any SAS
-- signature: nothing secret reaches stderr, even by mistake.
local function redact(text, secrets)
  for _, secret in ipairs(secrets) do
    if #secret >= 4 then
      local out, init = {}, 1
      while true do
        local s, e = text:find(secret, init, true)
        if not s then break end
        out[#out + 1] = text:sub(init, s - 1) .. "<redacted>"
        init = e + 1
      end
      out[#out + 1] = text:sub(init)
      text = table.concat(out)
    end
  end
  return (text:gsub("([Ss][Ii][Gg]=)[^&%s\"]+", "%1<redacted>"))
end

local function shell_quote(s)
  return "'" .. s:gsub("'", "'\\''") .. "'"
end

-- Parses argv[first..] against a command's flags.
local function parse(argv, first, command)
  local allowed = { help = true }
  for _, name in ipairs(command.flags) do allowed[name] = true end
  local opts, i = {}, first
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
    else
      usage_error(string.format("argument %d is not an option (options start with --); see dps %s --help",
        i, command.name))
    end
    if SECRET_FLAGS[name] then
      usage_error(string.format("--%s: secrets are not accepted on the command line, where every user can "
        .. "read them (ps); use %s", name, SECRET_FLAGS[name]))
    end
    if not allowed[name] then
      usage_error(string.format("unknown option --%s for dps %s; see dps %s --help", name:sub(1, 40),
        command.name, command.name))
    end
    if opts[name] ~= nil then
      usage_error("--" .. name .. " given more than once")
    end
    if BOOLEAN[name] then
      if value ~= nil then usage_error("--" .. name .. " takes no value") end
      opts[name] = true
    else
      if value == nil then
        i = i + 1
        value = argv[i]
        if value == nil then usage_error("--" .. name .. " needs a value") end
        value = tostring(value)
      end
      if value == "" then usage_error("--" .. name .. " must not be empty") end
      opts[name] = value
    end
    i = i + 1
  end
  return opts
end

local function positive_number(opts, name)
  local text = opts[name]
  if text == nil then return nil end
  local n = tonumber(text)
  if not n or n ~= n or n <= 0 or n == math.huge then
    usage_error("--" .. name .. " must be a positive number of seconds")
  end
  return n
end

local function whole_number(opts, name, what)
  local text = opts[name]
  if text == nil then return nil end
  local n = tonumber(text)
  if not text:match("^%d+$") or not n or n > 9007199254740991 then
    usage_error("--" .. name .. " must be " .. what)
  end
  return n
end

-- The terminal for messages: stderr writes through redaction.
local function new_terminal(stdio, secrets, verbose)
  local t = { secrets = secrets, verbose = verbose }
  function t.out(text)
    stdio.stdout:write(text)
  end
  function t.err(text)
    stdio.stderr:write(redact("dps: " .. one_line(text), secrets) .. "\n")
  end
  function t.say(text)
    if t.verbose then t.err(text) end
  end
  return t
end

-- Warns when a secret file can be read by other users.
local function check_mode(path, term)
  if not io.popen then return end
  local p = io.popen("ls -lLd -- " .. shell_quote(path) .. " 2>/dev/null")
  if not p then return end
  local line = p:read("*l") or ""
  p:close()
  local mode = line:match("^(%S+)")
  if mode and #mode >= 10 and (mode:sub(5, 5) == "r" or mode:sub(8, 8) == "r") then
    term.err(string.format("warning: %s can be read by other users (%s); run: chmod 600 %s", path,
      mode:sub(1, 10), shell_quote(path)))
  end
end

-- Reads a secret from a file: the whole file for a pass phrase (one trailing
-- newline removed), the trimmed contents for a key.
local function read_secret(path, flag, term, exact)
  local f, problem = io.open(path, "rb")
  if not f then
    fail(EXIT.credentials, string.format("%s: cannot read %s", flag, strip_position(problem)))
  end
  local text = f:read("*a") or ""
  f:close()
  if exact then
    text = text:gsub("\r?\n$", "")
  else
    text = text:match("^%s*(.-)%s*$")
  end
  if text == "" then
    fail(EXIT.credentials, string.format("%s: %s is empty", flag, path))
  end
  check_mode(path, term)
  term.secrets[#term.secrets + 1] = text
  return text
end

local function getenv_secret(env, name, term)
  local value = env(name)
  if value == nil or value == "" then return nil end
  term.secrets[#term.secrets + 1] = value
  local trimmed = value:match("^%s*(.-)%s*$")
  if trimmed ~= value and trimmed ~= "" then term.secrets[#term.secrets + 1] = trimmed end
  return trimmed
end

-- Works out the one key source of a command: returns
-- { kind = "symmetric" | "group" | "x509", key = …, from = "…" } (x509: cert_file, key_file, key_password).
local function credentials(opts, env, command, term)
  local flag_sources = {}
  if opts["key-file"] then flag_sources[#flag_sources + 1] = "--key-file" end
  if opts["group-key-file"] then flag_sources[#flag_sources + 1] = "--group-key-file" end
  if opts.cert or opts["cert-key"] then flag_sources[#flag_sources + 1] = "--cert/--cert-key" end
  if #flag_sources > 1 then
    usage_error("give one key source, not " .. table.concat(flag_sources, " and "))
  end
  if opts["key-password-file"] and not opts.cert then
    usage_error("--key-password-file belongs to --cert and --cert-key")
  end

  local source
  if opts.cert or opts["cert-key"] then
    if not (opts.cert and opts["cert-key"]) then
      usage_error("--cert and --cert-key go together: the certificate and its private key")
    end
    source = { kind = "x509", cert_file = opts.cert, key_file = opts["cert-key"],
      from = "certificate " .. opts.cert }
    check_mode(opts["cert-key"], term)
    if opts["key-password-file"] then
      source.key_password = read_secret(opts["key-password-file"], "--key-password-file", term, true)
    else
      source.key_password = getenv_secret(env, "DPS_KEY_PASSWORD", term)
    end
  elseif opts["key-file"] then
    source = { kind = "symmetric", from = "--key-file " .. opts["key-file"] }
    source.key = read_secret(opts["key-file"], "--key-file " .. opts["key-file"], term)
  elseif opts["group-key-file"] then
    source = { kind = "group", from = "--group-key-file " .. opts["group-key-file"] }
    source.key = read_secret(opts["group-key-file"], "--group-key-file " .. opts["group-key-file"], term)
  else
    local individual = command.sources.symmetric and getenv_secret(env, "DPS_SYMMETRIC_KEY", term)
    local group = command.sources.group and getenv_secret(env, "DPS_GROUP_KEY", term)
    if individual and group then
      usage_error("both DPS_SYMMETRIC_KEY and DPS_GROUP_KEY are set: unset one, or give --key-file or "
        .. "--group-key-file")
    elseif individual then
      source = { kind = "symmetric", key = individual, from = "DPS_SYMMETRIC_KEY" }
    elseif group then
      source = { kind = "group", key = group, from = "DPS_GROUP_KEY" }
    elseif command.name == "derive-key" then
      fail(EXIT.credentials, "no group key: give --group-key-file FILE or set DPS_GROUP_KEY")
    elseif command.name == "token" then
      fail(EXIT.credentials, "no key: give --key-file FILE or --group-key-file FILE, or set DPS_SYMMETRIC_KEY "
        .. "or DPS_GROUP_KEY")
    else
      fail(EXIT.credentials, "no key: give --key-file FILE, --group-key-file FILE or --cert FILE --cert-key "
        .. "FILE, or set DPS_SYMMETRIC_KEY or DPS_GROUP_KEY")
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

-- Runs a library call; a raise becomes a Failure: credential problems
-- (unreadable certificate, key that is not base64) exit 3, misuse exits 2.
local function call(source, f, ...)
  local results = { pcall(f, ...) }
  if results[1] then
    return results[2], results[3], results[4]
  end
  local message = strip_position(results[2])
  if message:find("^dps%.new: credentials: ") then
    fail(EXIT.credentials, (message:gsub("^dps%.new: ", "")))
  end
  message = message:gsub("^dps%.[%w_.]+: ", "")
  if message:find("base64", 1, true) and message:find("key", 1, true) then
    fail(EXIT.credentials, string.format("%s: %s", source and source.from or "key", message))
  end
  usage_error(message)
end

-- One line on stderr for an operational failure; returns the exit code.
local function report(term, message, info)
  local kind = info.kind
  local hint = HINT_OF_KIND[kind]
  if kind == "timeout" and info.last_kind and HINT_OF_KIND[info.last_kind] then
    hint = HINT_OF_KIND[info.last_kind]
  elseif kind == "not_found" and info.step == "registration_status" and info.error_code ~= 404001 then
    hint = "the device has no registration yet: run dps provision first"
  end
  if kind == "throttled" and info.retry_after then
    hint = string.format("%s (Retry-After %g s)", hint, info.retry_after)
  end
  term.err(message .. (hint and ("; " .. hint) or ""))
  local details = {}
  for _, field in ipairs({ "kind", "last_kind", "status", "error_code", "tracking_id", "operation_id",
    "retry_after", "curl_code" }) do
    local value = info[field]
    if type(value) == "number" and value == math.floor(value) and math.abs(value) < 2 ^ 53 then
      value = string.format("%.0f", value)
    end
    if value ~= nil then details[#details + 1] = field .. "=" .. tostring(value) end
  end
  term.say(table.concat(details, " "))
  return EXIT_OF_KIND[kind] or EXIT.error
end

local function encode(value)
  return (json.encode(value):gsub("\\/", "/"))
end

local function required(opts, name)
  if opts[name] == nil then
    usage_error("--" .. name .. " is required")
  end
  return opts[name]
end

local function client_options(opts, source)
  local o = {
    id_scope = required(opts, "id-scope"),
    registration_id = opts["registration-id"],
    endpoint = opts.endpoint, ca_file = opts["ca-file"], ca_path = opts["ca-path"], proxy = opts.proxy,
    api_version = opts["api-version"],
    timeout = positive_number(opts, "timeout"),
  }
  if source.kind ~= "x509" then
    required(opts, "registration-id")
  end
  if source.kind == "symmetric" then
    o.symmetric_key = source.key
  elseif source.kind == "group" then
    o.group_key = source.key
  else
    o.cert_file, o.key_file, o.key_password = source.cert_file, source.key_file, source.key_password
  end
  return o
end

local function describe_source(source)
  if source.kind == "group" then
    return "a device key derived from the group key in " .. source.from
  elseif source.kind == "x509" then
    return source.from
  end
  return "the key in " .. source.from
end

local function decode_payload(text)
  if not text then return nil end
  local ok, value = pcall(json.decode, text)
  if not ok then
    usage_error("--payload is not valid JSON: " .. strip_position(value))
  end
  if type(value) ~= "table" or not text:match("^%s*{") then
    usage_error("--payload must be a JSON object, e.g. '{\"modelId\":\"dtmi:com:example:Thermostat;1\"}'")
  end
  return value
end

local function new_client(opts, source, term, action)
  local o = client_options(opts, source)
  local client = call(source, dps.new, o)
  term.say(string.format("%s %s at %s (ID scope %s) with %s", action,
    o.registration_id or "the device named by the certificate's CN", o.endpoint or "the global endpoint",
    o.id_scope, describe_source(source)))
  return client, o
end

-- Calls a client method, closing the client whatever happens.
local function with_client(client, source, method, ...)
  local results = { pcall(call, source, client[method], client, ...) }
  local stats = results[1] and results[2] and client:stats() or nil
  client:close()
  if not results[1] then
    error(results[2], 0)
  end
  return results[2], results[3], results[4], stats
end

local run = {}

function run.provision(opts, source, term)
  local payload = decode_payload(opts.payload)
  local client, o = new_client(opts, source, term, "provisioning")
  local state, operation, info, stats = with_client(client, source, "provision",
    { payload = payload, timeout = o.timeout })
  if not state then
    return report(term, operation, info)
  end
  term.say(string.format("assigned to %s as device %s (%s), operation %s; %d request%s on %d TLS connection%s",
    tostring(state.assignedHub), tostring(state.deviceId), tostring(state.substatus or state.status),
    tostring(operation.operationId), stats.requests, stats.requests == 1 and "" or "s", stats.connects,
    stats.connects == 1 and "" or "s"))
  term.out(encode(state) .. "\n")
  return EXIT.ok
end

function run.status(opts, source, term)
  local client = new_client(opts, source, term, "looking up")
  local result, meta, info = with_client(client, source, "registration_status")
  if not result then
    return report(term, meta, info)
  end
  if result.status == "failed" or result.status == "disabled" then
    local message = "registration " .. result.status
    if type(result.errorMessage) == "string" and result.errorMessage ~= "" then
      message = message .. ": " .. result.errorMessage
    end
    if tonumber(result.errorCode) then
      message = message .. string.format(" (errorCode %d)", tonumber(result.errorCode))
    end
    return report(term, message, { kind = result.status, status = meta.status })
  end
  term.say(string.format("registration status %s, hub %s, device %s", tostring(result.status),
    tostring(result.assignedHub), tostring(result.deviceId)))
  term.out(encode(result) .. "\n")
  return EXIT.ok
end

function run.token(opts, source, term)
  local id_scope = required(opts, "id-scope")
  local registration_id = required(opts, "registration-id")
  if opts.expiry and opts.ttl then
    usage_error("give --expiry or --ttl, not both")
  end
  local expiry = whole_number(opts, "expiry", "whole seconds since the epoch")
  if not expiry then
    local ttl = whole_number(opts, "ttl", "a whole number of seconds") or 3600
    if ttl <= 0 then usage_error("--ttl must be at least 1 second") end
    expiry = os.time() + ttl
  end
  local key = source.key
  if source.kind == "group" then
    key = call(source, dps.derive_key, key, registration_id)
    term.secrets[#term.secrets + 1] = key
  end
  local token = call(source, dps.registration_token, id_scope, registration_id, key, expiry)
  local ok, when = pcall(os.date, "!%Y-%m-%dT%H:%M:%SZ", expiry)
  term.say(string.format("token for %s/registrations/%s with %s, expires %s", id_scope, registration_id,
    describe_source(source), ok and when or string.format("%.0f", expiry)))
  term.out(token .. "\n")
  return EXIT.ok
end

run["derive-key"] = function(opts, source, term)
  local registration_id = required(opts, "registration-id")
  local key = call(source, dps.derive_key, source.key, registration_id)
  term.secrets[#term.secrets + 1] = key
  term.out(key .. "\n")
  return EXIT.ok
end

local function version_text()
  return string.format("dps (lua-azure-dps) %s, %s\n", dps._VERSION,
    rawget(_G, "jit") and rawget(_G, "jit").version or _VERSION)
end

local function dispatch(argv, env, term)
  local name = argv[1] ~= nil and tostring(argv[1]) or nil
  if name == nil then
    term.raw_err(USAGE)
    return EXIT.usage
  elseif name == "--help" or name == "-h" or (name == "help" and argv[2] == nil) then
    term.out(USAGE)
    return EXIT.ok
  elseif name == "--version" or name == "version" then
    term.out(version_text())
    return EXIT.ok
  elseif name == "help" then
    local command = COMMANDS[tostring(argv[2])]
    if not command then usage_error("no such command; commands: " .. table.concat(ORDER, ", ")) end
    term.out(command.usage)
    return EXIT.ok
  end
  local command = COMMANDS[name]
  if not command then
    if name:sub(1, 1) == "-" then
      usage_error("give a command first: dps COMMAND [OPTIONS]; commands: " .. table.concat(ORDER, ", "))
    end
    local shown = (#name <= 32 and name:match("^[%w%-_]+$")) and ("'" .. name .. "'") or "given"
    usage_error("unknown command " .. shown .. "; commands: " .. table.concat(ORDER, ", ") .. " (see dps --help)")
  end
  command.name = name
  local opts = parse(argv, 2, command)
  if opts.help then
    term.out(command.usage)
    return EXIT.ok
  end
  term.verbose = opts.verbose == true
  for _, flag in ipairs(command.required) do
    required(opts, flag)
  end
  if command.sources.x509 and not (opts.cert or opts["cert-key"]) then
    required(opts, "registration-id")
  end
  local source = credentials(opts, env, command, term)
  return run[name](opts, source, term)
end

--- Runs the `dps` command.
-- @tparam table argv the arguments (`arg` of a script: `argv[1]` is the command)
-- @param[opt] env environment: a function `name -> value` or a table; default `os.getenv`
-- @tparam[opt] table stdio `{ stdout = f, stderr = f }`, objects with a `write` method;
--   default `io.stdout`, `io.stderr`
-- @treturn integer the exit code (see `EXIT`)
function cli.main(argv, env, stdio)
  argv = argv or {}
  local getenv = os.getenv
  if type(env) == "table" then
    getenv = function(name) return env[name] end
  elseif type(env) == "function" then
    getenv = env
  end
  stdio = stdio or {}
  stdio = { stdout = stdio.stdout or io.stdout, stderr = stdio.stderr or io.stderr }
  local term = new_terminal(stdio, {}, false)
  function term.raw_err(text)
    stdio.stderr:write(text)
  end
  local ok, result = pcall(dispatch, argv, getenv, term)
  if ok then
    return result
  end
  if getmetatable(result) == Failure then
    term.err(result.message)
    return result.code
  end
  term.err("internal error: " .. strip_position(result))
  return EXIT.error
end

return cli
