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
-- @module dps.errors
local errors = {}

-- Transport failures worth another try before the deadline.
local RETRYABLE_KINDS = {
  resolve = true, connect = true, proxy = false, tls = false, credentials = false,
  timeout = true, network = true, protocol = true, too_large = false, config = false, oom = false,
}

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

--- Whether the service asks to send the same request again (429, 5xx).
function errors.retryable_status(status)
  return status == 429 or (status >= 500 and status <= 599)
end

--- A transport failure from the C core, with the step that failed.
-- @treturn nil
-- @treturn string message
-- @treturn table info
function errors.transport(step, message, info)
  info.retryable = RETRYABLE_KINDS[info.kind] == true
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
  local info = {
    kind = errors.kind_of_status(status),
    status = status,
    error_code = error_code,
    tracking_id = type(details.trackingId) == "string" and details.trackingId or nil,
    retry_after = retry_after,
    retryable = errors.retryable_status(status) or status == 409,
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
    registration_state = state, retryable = false, step = "provision",
  }
end

--- The overall deadline passed (or a Retry-After reaches past it).
function errors.deadline(timeout, last_message, last_info)
  local message = string.format("provision: no assignment within %g s", timeout)
  if last_message then
    message = message .. " (last: " .. last_message .. ")"
  end
  local info = { kind = "timeout", retryable = true, step = "provision" }
  if last_info then
    info.status, info.error_code, info.tracking_id = last_info.status, last_info.error_code, last_info.tracking_id
    info.retry_after, info.operation_id, info.last_kind = last_info.retry_after, last_info.operation_id, last_info.kind
  end
  return nil, message, info
end

return errors
