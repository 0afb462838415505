--- What each command does once its flags and key source are known:
-- `provision`, `status`, `token`, `derive-key`. Each returns the exit code.
-- @module dps.cli.commands
local dps = require "dps"
local args = require "dps.cli.args"
local output = require "dps.cli.output"
local json = require("cjson").new()

local errors = require "dps.errors"

local usage_error, required = output.usage_error, args.required
local EXIT = output.EXIT

local commands = {}

-- Runs a library function; a raise is misuse the library detected (a bad
-- registration ID, an http:// endpoint, …): a usage error in flag names
-- (`names`: how the user gave the options, see output.in_flags).
local function call_named(names, f, ...)
  local results = { pcall(f, ...) }
  if not results[1] then
    usage_error(output.in_flags(results[2], names))
  end
  return results[2], results[3], results[4]
end

local function call(f, ...)
  return call_named(nil, f, ...)
end

-- The registration state as one line of JSON, or nil and why not: the
-- service's answer may hold what JSON cannot say again (a number such as
-- 1e999, decoded as infinity).
local function encode(value)
  local ok, text = pcall(json.encode, value)
  if not ok then
    return nil, output.strip_position(text)
  end
  return (text:gsub("\\/", "/"))
end

-- Prints the state on stdout, or reports kind `protocol` when it cannot be
-- written as JSON (the device is assigned; the message says where).
local function print_state(term, state, step, status)
  local text, problem = encode(state)
  if not text then
    return output.report(term, string.format("%s: the registration state (hub %s, device %s) cannot be printed "
      .. "as JSON: %s", step, errors.safe(state.assignedHub, 253), errors.safe(state.deviceId, 128), problem),
      { kind = "protocol", status = status, retryable = false, step = step })
  end
  term.out(text .. "\n")
  return EXIT.ok
end

local function client_options(opts, source)
  local o = {
    id_scope = required(opts, "id-scope"),
    registration_id = opts["registration-id"],
    endpoint = opts.endpoint, ca_file = opts["ca-file"], ca_path = opts["ca-path"], proxy = opts.proxy,
    api_version = opts["api-version"],
    timeout = args.positive_number(opts, "timeout"),
    request_timeout = args.positive_number(opts, "request-timeout"),
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
    usage_error("--payload is not valid JSON: " .. output.strip_position(value))
  end
  if type(value) ~= "table" or not text:match("^%s*{") then
    usage_error("--payload must be a JSON object, e.g. '{\"modelId\":\"dtmi:com:example:Thermostat;1\"}'")
  end
  return value
end

-- The client, or nil and the exit code of a local file that cannot be used.
local function new_client(opts, source, term, action)
  local o = client_options(opts, source)
  local client, message, info = call_named(source.names, dps.new, o)
  if not client then
    return nil, output.report(term, output.in_flags(message, source.names), info)
  end
  term.say(string.format("%s %s at %s (ID scope %s) with %s", action,
    o.registration_id or "the device named by the certificate's CN", o.endpoint or "the global endpoint",
    o.id_scope, describe_source(source)))
  return client, o
end

-- Calls a client method, closing the client whatever happens.
local function with_client(client, method, ...)
  local results = { pcall(call, client[method], client, ...) }
  local stats = results[1] and results[2] and client:stats() or nil
  client:close()
  if not results[1] then
    error(results[2], 0)
  end
  return results[2], results[3], results[4], stats
end

-- The `certificate` option of --issue-cert DIR [--curve C] [--renew-at R]
-- (`renew`: a new one whatever the one there), or nil.
local function certificate_option(opts, renew)
  if not opts["issue-cert"] then
    if opts.curve or opts["renew-at"] then usage_error("--curve and --renew-at go with --issue-cert DIR") end
    return nil
  end
  local renew_at = opts["renew-at"] and tonumber(opts["renew-at"])
  if opts["renew-at"] and not (renew_at and renew_at > 0 and renew_at < 1) then
    usage_error("--renew-at must be a share of the validity between 0 and 1, e.g. 0.8")
  end
  if opts.curve and opts.curve ~= "P-384" and opts.curve ~= "P-256" then
    usage_error("--curve must be P-384 or P-256")
  end
  local facts = require("dps.core").stat(opts["issue-cert"])
  if not facts or facts.type ~= "directory" then
    output.fail("config", "--issue-cert " .. opts["issue-cert"] .. ": not a directory")
  end
  return { dir = opts["issue-cert"], curve = opts.curve, renew_at = renew_at, renew = renew or nil }
end

-- What provisioning says of the device's certificate, on stderr.
local function say_certificate(term, how)
  local c = how.certificate
  if c then
    local ok, when = pcall(os.date, "!%Y-%m-%dT%H:%M:%SZ", c.not_after)
    term.err(string.format("certificate %s, valid until %s (%s)", tostring(c.serial), ok and when or "?",
      c.issued and "issued now" or "kept"))
  end
end

-- What became of the cache after a registration at the service.
local function cache_outcome(how)
  if how.cache_written then
    return "; cache written"
  elseif how.cache_error then
    return "; cache not written (see the warning)"
  end
  return "; cache unchanged"
end

function commands.provision(opts, source, term, renew)
  local payload = decode_payload(opts.payload)
  if opts.force and not opts.cache then
    usage_error("--force goes with --cache: without a cache every run registers")
  end
  local cert = certificate_option(opts, renew)
  local client, o = new_client(opts, source, term, renew and "renewing the certificate of" or "provisioning")
  if not client then return o end
  local state, how, info, stats = with_client(client, "provision", { payload = payload, timeout = o.timeout,
    cache = opts.cache, force = opts.force or nil, certificate = cert })
  local ignored = (state and how or info or {}).cache_ignored
  if ignored then
    term.say(string.format("ignoring the cache %s: %s", opts.cache, ignored))
  end
  if not state then
    return output.report(term, how, info)
  end
  if how.clock_offset ~= 0 then
    term.err(string.format("note: the local clock is %.0f s %s the server's; signing with the server's time "
      .. "(set the clock: NTP)", math.abs(how.clock_offset), how.clock_offset > 0 and "behind" or "ahead of"))
  end
  if how.cache_error then
    term.err("warning: provisioned, but the cache cannot be written: " .. how.cache_error)
  end
  say_certificate(term, how)
  if how.source == "cache" then
    term.say(string.format("assigned to %s as device %s, from the cache %s (written %s); no request",
      tostring(state.assignedHub), tostring(state.deviceId), opts.cache, tostring(how.written_at)))
  else
    term.say(string.format("assigned to %s as device %s (%s), operation %s; %d request%s on %d TLS connection%s%s",
      tostring(state.assignedHub), tostring(state.deviceId), tostring(state.substatus or state.status),
      tostring(how.result.operationId), stats.requests, stats.requests == 1 and "" or "s", stats.connects,
      stats.connects == 1 and "" or "s", opts.cache and cache_outcome(how) or ""))
  end
  return print_state(term, state, "provision", 200)
end

--- `dps renew --issue-cert DIR`: a new key and CSR now, whatever the
-- certificate in DIR; prints the registration state as `provision` does.
function commands.renew(opts, source, term)
  return commands.provision(opts, source, term, true)
end

function commands.status(opts, source, term)
  local client, code = new_client(opts, source, term, "looking up")
  if not client then return code end
  local result, meta, info = with_client(client, "registration_status")
  if not result then
    return output.report(term, meta, info)
  end
  if result.status == "failed" or result.status == "disabled" then
    local _, message, outcome = errors.outcome(result)
    outcome.status, outcome.step = meta.status, "registration_status"
    return output.report(term, message, outcome)
  end
  term.say(string.format("registration status %s, hub %s, device %s", tostring(result.status),
    tostring(result.assignedHub), tostring(result.deviceId)))
  return print_state(term, result, "registration_status", meta.status)
end

function commands.token(opts, source, term)
  local id_scope = required(opts, "id-scope")
  local registration_id = required(opts, "registration-id")
  if opts.expiry and opts.ttl then
    usage_error("give --expiry or --ttl, not both")
  end
  local expiry = args.whole_number(opts, "expiry", "whole seconds since the epoch")
  if not expiry then
    local n = opts.ttl and tonumber(opts.ttl)
    if n and n <= 0 then
      usage_error("--ttl must be positive: a whole number of seconds, at least 1")
    end
    local ttl = args.whole_number(opts, "ttl", "a whole number of seconds") or 3600
    expiry = os.time() + ttl
  end
  local key = source.key
  if source.kind == "group" then
    key = call(dps.derive_key, key, registration_id)
    term.keep_secret(key)
  end
  local token = call(dps.registration_token, id_scope, registration_id, key, expiry)
  local ok, when = pcall(os.date, "!%Y-%m-%dT%H:%M:%SZ", expiry)
  term.say(string.format("token for %s/registrations/%s with %s, expires %s", id_scope, registration_id,
    describe_source(source), ok and when or string.format("%.0f", expiry)))
  term.out(token .. "\n")
  return EXIT.ok
end

commands["derive-key"] = function(opts, source, term)
  local registration_id = required(opts, "registration-id")
  local key = call(dps.derive_key, source.key, registration_id)
  term.keep_secret(key)
  term.out(key .. "\n")
  return EXIT.ok
end

-- Shared with the hub's commands (dps.cli.hub): the same options, calls and words.
commands.client_options, commands.call_named, commands.describe_source = client_options, call_named,
  describe_source
commands.certificate_option, commands.say_certificate = certificate_option, say_certificate
commands.decode_payload = decode_payload

return commands
