--- How failures are described: every operational failure is
-- `nil, message, info`, where `info.kind` says what went wrong and, when
-- known, `status`, `error_code`, `tracking_id`, `operation_id`,
-- `retry_after` and `retryable` say more.
--
-- Kinds from the connection (the C core): `resolve`, `connect`, `proxy`,
-- `tls`, `credentials`, `timeout`, `network`, `protocol`, `too_large`,
-- `config`, `oom`. Kinds from the service's answer: `bad_request` (400),
-- `auth` (401, 403), `not_found` (404), `conflict` (409), `throttled` (429),
-- `service` (5xx), `http` (any other unexpected status). Kinds of the
-- outcome: `failed` and `disabled` (the service's final registration state),
-- `timeout` (the overall deadline).
--
-- `errors.KINDS[kind]` is `{ retryable = bool, exit = n, hint = "…" }`: whether
-- a failure of that kind is worth another try, the exit code of the `dps`
-- command, and the hint it prints (none for some kinds).
-- @module dps.errors
local errors = {}

--- Exit codes of the `dps` command (`dps help` and the README list them).
-- @table EXIT
-- @field ok 0: success
-- @field error 1: the service refused the request (400, 404, 409, 429, 5xx, an answer
--   that breaks the protocol), or an internal error
-- @field usage 2: a mistake on the command line or in an option's value
-- @field credentials 3: a key, certificate or pass phrase is missing, unreadable or unusable
-- @field auth 4: the service refused the credentials (HTTP 401/403)
-- @field network 5: DNS, connection, proxy, TLS, or no decision within the time limit
-- @field outcome 6: the registration ended `failed` or `disabled`
errors.EXIT = { ok = 0, error = 1, usage = 2, credentials = 3, auth = 4, network = 5, outcome = 6 }
local EXIT = errors.EXIT

-- errors.KINDS: everything known about each `info.kind`, in one place: whether the
-- failure is worth another try before the deadline (`retryable`), the exit
-- code of the `dps` command (`exit`), and the hint it prints (`hint`, naming
-- command-line flags). `usage` is the command line's own kind: a mistake in
-- its arguments, or misuse the library raised. (A plain comment: LDoc
-- cannot read this table.)
errors.KINDS = {
  -- the connection (the C core)
  resolve = { retryable = true, exit = EXIT.network, hint = "check --endpoint and DNS" },
  connect = { retryable = true, exit = EXIT.network, hint = "check --endpoint, the network and --proxy" },
  proxy = { retryable = false, exit = EXIT.network, hint = "check --proxy" },
  tls = { retryable = false, exit = EXIT.network, hint = "check --ca-file / the system CA store and the clock" },
  credentials = { retryable = false, exit = EXIT.credentials,
    hint = "check --cert-file, --key-file and the key's pass phrase" },
  timeout = { retryable = true, exit = EXIT.network, hint = "check the network, or give more --timeout" },
  network = { retryable = true, exit = EXIT.network, hint = "check the network" },
  -- broken HTTP is worth another try; errors.protocol marks an answer that
  -- breaks the DPS protocol as not retryable
  protocol = { retryable = true, exit = EXIT.error },
  too_large = { retryable = false, exit = EXIT.error },
  config = { retryable = false, exit = EXIT.credentials },
  oom = { retryable = false, exit = EXIT.error },
  -- the service's answer
  bad_request = { retryable = false, exit = EXIT.error,
    hint = "check --payload, --registration-id and --api-version" },
  auth = { retryable = false, exit = EXIT.auth,
    hint = "the service refused the credentials: check the key or certificate, the registration ID and the clock" },
  not_found = { retryable = false, exit = EXIT.error, hint = "check --id-scope and --endpoint" },
  conflict = { retryable = true, exit = EXIT.error,
    hint = "another registration of this device is in progress: try again" },
  throttled = { retryable = true, exit = EXIT.error, hint = "throttled by the service: try again later" },
  service = { retryable = true, exit = EXIT.error, hint = "the service had a problem: try again later" },
  http = { retryable = false, exit = EXIT.error },
  -- the outcome
  failed = { retryable = false, exit = EXIT.outcome },
  disabled = { retryable = false, exit = EXIT.outcome, hint = "the enrollment or the registration is disabled in DPS" },
  -- the command line's own
  usage = { retryable = false, exit = EXIT.usage },
}
local KINDS = errors.KINDS

--- Whether a failure of this kind is worth another try (false for a kind
-- not in `KINDS`).
function errors.retryable(kind)
  local entry = KINDS[kind]
  return entry ~= nil and entry.retryable == true
end

local KIND_OF_STATUS = {
  [400] = "bad_request", [401] = "auth", [403] = "auth", [404] = "not_found",
  [409] = "conflict", [429] = "throttled",
}

--- The kind of an HTTP status that is not a success.
function errors.kind_of_status(status)
  if KIND_OF_STATUS[status] then
    return KIND_OF_STATUS[status]
  elseif status >= 500 and status <= 599 then
    return "service"
  end
  return "http"
end

--- Whether an HTTP status that is not a success is worth another try:
-- 409, 429 and 5xx, by the kind it maps to.
function errors.retryable_status(status)
  return errors.retryable(errors.kind_of_status(status))
end

--- A transport failure from the C core, with the step that failed.
-- @treturn nil
-- @treturn string message
-- @treturn table info
function errors.transport(step, message, info)
  info.retryable = errors.retryable(info.kind)
  info.step = step
  return nil, step .. ": " .. message, info
end

--- A service error answer (status >= 300) with its DPS error body, if any.
-- @tparam string step `register`, `operation_status` or `registration_status`
-- @tparam number status HTTP status
-- @tparam table headers response headers (lower-case names)
-- @param body decoded JSON body (a table) or nil
-- @tparam[opt] number retry_after seconds, when the response said
function errors.service(step, status, headers, body, retry_after)
  local details = type(body) == "table" and body or {}
  local error_code = tonumber(details.errorCode) or tonumber(headers["x-ms-error-code"])
  local kind = errors.kind_of_status(status)
  local info = {
    kind = kind,
    status = status,
    error_code = error_code,
    tracking_id = type(details.trackingId) == "string" and details.trackingId or nil,
    retry_after = retry_after,
    retryable = errors.retryable(kind),
    step = step,
  }
  local parts = { string.format("%s: HTTP %d", step, status) }
  if type(details.message) == "string" and details.message ~= "" then
    parts[#parts + 1] = " " .. details.message
  end
  if error_code then
    parts[#parts + 1] = string.format(" (errorCode %d", error_code)
    parts[#parts + 1] = info.tracking_id and (", trackingId " .. info.tracking_id .. ")") or ")"
  end
  return nil, table.concat(parts), info
end

--- A response that does not follow the protocol.
function errors.protocol(step, what, status)
  return nil, step .. ": " .. what, { kind = "protocol", status = status, retryable = false, step = step }
end

--- The service's final word on a registration: `failed` or `disabled`.
function errors.outcome(state, operation_id)
  local kind = state.status == "disabled" and "disabled" or "failed"
  local code = tonumber(state.errorCode)
  local message = "registration " .. kind
  if type(state.errorMessage) == "string" and state.errorMessage ~= "" then
    message = message .. ": " .. state.errorMessage
  end
  if code then
    message = message .. string.format(" (errorCode %d)", code)
  end
  return nil, message, {
    kind = kind, status = 200, error_code = code, operation_id = operation_id,
    registration_state = state, retryable = errors.retryable(kind), step = "provision",
  }
end

--- The overall deadline passed (or a Retry-After reaches past it).
function errors.deadline(timeout, last_message, last_info)
  local message = string.format("provision: no assignment within %g s", timeout)
  if last_message then
    message = message .. " (last: " .. last_message .. ")"
  end
  local info = { kind = "timeout", retryable = errors.retryable("timeout"), step = "provision" }
  if last_info then
    info.status, info.error_code, info.tracking_id = last_info.status, last_info.error_code, last_info.tracking_id
    info.retry_after, info.operation_id, info.last_kind = last_info.retry_after, last_info.operation_id, last_info.kind
  end
  return nil, message, info
end

return errors
