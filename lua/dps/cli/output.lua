--- How the `dps` command speaks: the asked-for value on stdout, one
-- redacted line per message on stderr, and failures by kind: the exit code
-- and the hint of a kind come from `dps.errors.KINDS`, never from a
-- message's text.
-- @module dps.cli.output
local errors = require "dps.errors"

local output = {}

-- A failure the command itself detected: thrown as a table, caught in main.
local Failure = {}

--- Stop the command with a failure of `kind` (a key of `dps.errors.KINDS`).
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
  local entry = errors.KINDS[kind]
  return entry and entry.exit or errors.EXIT.error
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
  timeout = "--timeout", payload = "--payload", symmetric_key = "the symmetric key", group_key = "the group key",
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

-- The hint of a failure: by its kind, refined by its details.
local function hint_of(info)
  local kinds = errors.KINDS
  local kind = info.kind
  local hint = kinds[kind] and kinds[kind].hint
  if kind == "timeout" and info.last_kind and kinds[info.last_kind] and kinds[info.last_kind].hint then
    hint = kinds[info.last_kind].hint
  elseif kind == "not_found" and info.step == "registration_status" and info.error_code ~= 404001 then
    hint = "the device has no registration yet: run dps provision first"
  end
  if kind == "throttled" and info.retry_after and hint then
    hint = string.format("%s (Retry-After %g s)", hint, info.retry_after)
  end
  return hint
end

--- One line on stderr for an operational failure (`nil, message, info`),
-- the `info` fields with `--verbose`; returns the exit code of `info.kind`.
function output.report(term, message, info)
  local hint = hint_of(info)
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
