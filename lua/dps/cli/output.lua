--- How the `dps` command speaks: the asked-for value on stdout, one
-- redacted line per message on stderr, and failures by kind: the exit code
-- and the hint of a kind come from `KINDS` below (naming the command line's
-- flags), by `info.kind` (and `info.step`, `info.last_kind`,
-- `info.error_code` for a finer hint), never from a message's text. Whether
-- a kind is worth another try is the library's (`dps.errors.retryable`).
-- @module dps.cli.output
local errors = require "dps.errors"

local output = {}

--- Exit codes of the `dps` command (`dps help` and the README list them).
-- @table EXIT
-- @field ok 0: success
-- @field error 1: the service refused the request (400, 404, 409, 429, 5xx, an answer
--   that breaks the protocol), or an internal error
-- @field usage 2: a mistake on the command line or in an option's value
-- @field credentials 3: a key, certificate, pass phrase or CA file is missing, unreadable or unusable
-- @field auth 4: the service refused the credentials (HTTP 401/403)
-- @field network 5: DNS, connection, proxy, TLS, or no decision within the time limit
-- @field outcome 6: the registration ended `failed` or `disabled`
output.EXIT = { ok = 0, error = 1, usage = 2, credentials = 3, auth = 4, network = 5, outcome = 6 }
local EXIT = output.EXIT

-- output.KINDS[kind] = { exit = n, hint = "…" }: the exit code of each
-- `info.kind` and the hint printed after its message (none for some kinds).
-- `usage` is the command line's own kind: a mistake in its arguments, or
-- misuse the library raised. (A plain comment: LDoc cannot read this table.)
output.KINDS = {
  -- the connection (the C core)
  resolve = { exit = EXIT.network, hint = "check --endpoint and DNS" },
  connect = { exit = EXIT.network, hint = "check --endpoint, the network and --proxy" },
  proxy = { exit = EXIT.network, hint = "check --proxy" },
  tls = { exit = EXIT.network, hint = "check --ca-file / the system CA store and the clock" },
  credentials = { exit = EXIT.credentials, hint = "check --cert-file, --key-file and the key's pass phrase" },
  timeout = { exit = EXIT.network, hint = "check the network, or give more --timeout" },
  network = { exit = EXIT.network, hint = "check the network" },
  protocol = { exit = EXIT.error },
  too_large = { exit = EXIT.error },
  config = { exit = EXIT.credentials },
  oom = { exit = EXIT.error },
  -- the service's answer
  bad_request = { exit = EXIT.error, hint = "check --payload, --registration-id and --api-version" },
  auth = { exit = EXIT.auth,
    hint = "the service refused the credentials: check the key or certificate, the registration ID and the clock" },
  not_found = { exit = EXIT.error, hint = "check --id-scope and --endpoint" },
  conflict = { exit = EXIT.error, hint = "another registration of this device is in progress: try again" },
  throttled = { exit = EXIT.error, hint = "throttled by the service: try again later" },
  service = { exit = EXIT.error, hint = "the service had a problem: try again later" },
  http = { exit = EXIT.error },
  -- the hub's answer: a full quota or device queue (403), a lost message lock (412)
  quota = { exit = EXIT.error,
    hint = "the hub's daily message quota or the device's message queue is full: try again later" },
  lock_lost = { exit = EXIT.error, hint = "the message's lock expired: the hub delivers it again" },
  -- the outcome
  failed = { exit = EXIT.outcome },
  disabled = { exit = EXIT.outcome, hint = "the enrollment or the registration is disabled in DPS" },
  -- the command line's own
  usage = { exit = EXIT.usage },
}
local KINDS = output.KINDS

-- The hub client's steps (`info.step`): there the endpoint is the hub's,
-- given with --hub-endpoint.
local HUB_STEPS = { send = true, send_batch = true, receive = true, complete = true, reject = true, abandon = true,
  upload_start = true, upload_notify = true }
local HUB_HINTS = {
  resolve = "check --hub-endpoint and DNS",
  connect = "check --hub-endpoint, the network and --proxy",
}

-- A failure the command itself detected: thrown as a table, caught in main.
local Failure = {}

--- Stop the command with a failure of `kind` (a key of `KINDS`).
function output.fail(kind, message)
  error(setmetatable({ kind = kind, message = message }, Failure), 0)
end

--- Stop the command with a usage error (exit 2).
function output.usage_error(message)
  output.fail("usage", message)
end

--- Whether a caught error is a `fail`ure.
function output.is_failure(value)
  return getmetatable(value) == Failure
end

--- The exit code of a kind (1 for a kind without its own).
function output.exit_code(kind)
  local entry = KINDS[kind]
  return entry and entry.exit or EXIT.error
end

--- Library misuse raises "file.lua:12: message"; the message alone is what
-- the user needs.
function output.strip_position(message)
  return (tostring(message):gsub("^[^%s]-:%d+: ", ""))
end

-- The library's option names, as the command line spells them.
local FLAG_OF_OPTION = {
  cert_file = "--cert-file", key_file = "--key-file", key_password = "--key-password-file FILE or DPS_KEY_PASSWORD",
  registration_id = "--registration-id", id_scope = "--id-scope", endpoint = "--endpoint",
  ca_file = "--ca-file", ca_path = "--ca-path", proxy = "--proxy", api_version = "--api-version",
  timeout = "--timeout", request_timeout = "--request-timeout", payload = "--payload",
  symmetric_key = "the symmetric key", group_key = "the group key",
}

--- A library message as the command line says it: without the function's
-- name and position, without the C core's `bad argument #1 to 'session'
-- (…)` wrapping, with flags in place of Lua option names: as the user typed
-- them when `names` (option name → flag text, e.g. `key_file = "--cert-key"`)
-- says, else the canonical flag.
-- @tparam string message
-- @tparam[opt] table names
function output.in_flags(message, names)
  message = output.strip_position(message):gsub("^dps%.[%w_.]+: ", "")
  message = message:gsub("^bad argument #%d+ to '[^']*' %((.*)%)$", "%1")
  message = message:gsub("^options? '([%l_]+)'", "%1"):gsub("'([%l_]+)'", function(word)
    return FLAG_OF_OPTION[word] and word or nil
  end)
  return (message:gsub("%f[%w_]([%l_]+)%f[^%w_]", function(word)
    return names and names[word] or FLAG_OF_OPTION[word]
  end))
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

--- The terminal of one run: `out(text)` writes stdout; `err(text)` writes
-- one line `dps: …` on stderr with every secret in `secrets` redacted;
-- `say(text)` the same with `--verbose` only; `raw_err(text)` writes stderr
-- as is (the overview); `keep_secret(s)` adds to `secrets`.
-- @tparam table stdio `{ stdout = f, stderr = f }`
function output.terminal(stdio)
  local t = { secrets = {}, verbose = false }
  function t.out(text)
    stdio.stdout:write(text)
  end
  function t.raw_err(text)
    stdio.stderr:write(text)
  end
  function t.err(text)
    -- secrets first (as they were given, line breaks and all), then the
    -- escapes that keep the message one line of plain text
    stdio.stderr:write(errors.safe("dps: " .. redact(tostring(text), t.secrets), 4096) .. "\n")
  end
  function t.say(text)
    if t.verbose then t.err(text) end
  end
  function t.keep_secret(secret)
    t.secrets[#t.secrets + 1] = secret
  end
  return t
end

-- The plain hint of a kind at a step.
local function hint_of_kind(kind, step)
  if HUB_STEPS[step] and HUB_HINTS[kind] then
    return HUB_HINTS[kind]
  end
  return KINDS[kind] and KINDS[kind].hint
end

--- The hint of a failure: by its kind, refined by its details (the step,
-- what failed last before the deadline, the error code, Retry-After); nil
-- when there is none.
-- @tparam table info the failure's `info`
-- @treturn string|nil
function output.hint(info)
  local kind = info.kind
  local hint = hint_of_kind(kind, info.step)
  if kind == "timeout" and info.last_kind and hint_of_kind(info.last_kind, info.step) then
    hint = hint_of_kind(info.last_kind, info.step)
  elseif kind == "not_found" and info.step == "registration_status" and info.error_code ~= 404001 then
    hint = "the device has no registration yet: run dps provision first"
  end
  if kind == "quota" and info.error_code == "DeviceMaximumActiveFileUploadLimitExceeded" then
    hint = "the device has 10 file uploads in progress: finish or let them expire, then try again"
  end
  if kind == "throttled" and info.retry_after and hint then
    hint = string.format("%s (Retry-After %g s)", hint, info.retry_after)
  end
  return hint
end

--- One line on stderr for an operational failure (`nil, message, info`),
-- the `info` fields with `--verbose`; returns the exit code of `info.kind`.
function output.report(term, message, info)
  local hint = output.hint(info)
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
  return output.exit_code(info.kind)
end

return output
