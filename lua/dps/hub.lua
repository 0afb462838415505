--- A device's client of its IoT Hub over HTTPS: telemetry (device to
-- cloud) and cloud-to-device messages, on one HTTPS session (one kept-alive
-- TLS connection), with the same failures as the DPS client.
--
--    local hub = dps.connect{ id_scope = "0ne…", registration_id = "dev-01", symmetric_key = key,
--                             cache = "/etc/dps/assignment.json" }
--    hub:send('{"t":21.5}', { properties = { kind = "reading" }, content_type = "application/json" })
--    local msg = hub:receive()          -- nil when nothing waits
--    if msg then hub:complete(msg) end
--    hub:close()
--
-- The wire is IoT Hub's device API over HTTPS (api-version 2021-04-12):
-- `POST /devices/{id}/messages/events` (one message, or a batch as
-- `application/vnd.microsoft.iothub.json`), `GET …/messages/devicebound`
-- (204: nothing waits; the lock token in `ETag`), `DELETE
-- …/devicebound/{lockToken}` (complete; `&reject` rejects), `POST
-- …/devicebound/{lockToken}/abandon`. Device IDs and lock tokens are
-- percent-encoded in paths. A symmetric key signs hub tokens (`sr =
-- {hub}/devices/{id}`, no `skn`), renewed a minute before expiry; X.509 is
-- mutual TLS with no `Authorization` header.
--
-- Every call returns its result, or `nil, message, info` (`info.kind`,
-- `status`, `error_code` (the hub's name, e.g. `"DeviceNotFound"`),
-- `tracking_id`, `retryable`, `step`; see `dps.errors` and
-- `dps.hub_response`). 429, 5xx and connection failures worth another try
-- are sent again after Retry-After or `dps.poll.backoff`, within the call's
-- `timeout`. A 401 whose `Date` shows the signing clock off by more than a
-- minute is signed again with the server's time, once (`dps.clock`).
--
-- Provisioning again: a hub client made by `dps.connect` provisions once
-- more (cache ignored, cache updated) when the hub refuses the device — 401
-- with a correct clock, 403 (not a full quota or queue), or 404 (the device
-- was deleted, disabled or moved) — and sends the call again on the new
-- assignment: at most once per call.
-- @classmod dps.hub
local core = require "dps.core"
local check = require "dps.check"
local device = require "dps.device"
local errors = require "dps.errors"
local poll = require "dps.poll"
local clock = require "dps.clock"
local response = require "dps.response"
local hub_response = require "dps.hub_response"
local hub_message = require "dps.hub_message"

local Hub = {}
Hub.__index = Hub

--- The hub API version sent (`?api-version=`).
Hub.API_VERSION = "2021-04-12"
--- Seconds between receives that the service documents for HTTPS devices
-- (less often than every 25 minutes): the default pace of anything in this
-- library that receives repeatedly.
Hub.RECEIVE_INTERVAL = 25 * 60
--- The largest message (or batch) the hub takes, bytes.
Hub.MAX_MESSAGE_BYTES = hub_message.MAX_BYTES
--- Default `timeout` of one call (seconds, retries included).
Hub.DEFAULT_TIMEOUT = 30


--- Option names and types of `dps.hub`.
Hub.OPTIONS = {
  state = "table", hub = "string", device_id = "string", registration_id = "string",
  symmetric_key = "string", group_key = "string",
  cert_file = "string", key_file = "string", key_password = "string", cert = "string", key = "string",
  endpoint = "string", api_version = "string",
  ca_file = "string", ca_path = "string", proxy = "string", user_agent = "string",
  timeout = "number", connect_timeout = "number", token_ttl = "number", max_body = "number",
  clock_offset = "number",
}

-- The assignment a hub client talks to: host and device ID, checked.
local function assignment(opts, level)
  local state = opts.state or {}
  local host = opts.hub or state.assignedHub
  local device_id = opts.device_id or state.deviceId
  local problem = response.host_problem(host)
  if problem then
    check.fail("dps.hub: the hub (state.assignedHub or hub) " .. problem, level + 1)
  end
  problem = response.device_id_problem(device_id)
  if problem then
    check.fail("dps.hub: the device ID (state.deviceId or device_id) " .. problem, level + 1)
  end
  return host, device_id
end

-- The default runtime: the real clocks, sleep and jitter. Specs and event
-- loops pass their own (see `Hub.new`).
local function runtime_of(rt)
  rt = rt or {}
  return {
    now = rt.now or core.now, monotime = rt.monotime or core.monotime,
    sleep = rt.sleep or core.sleep, jitter = rt.jitter or core.jitter,
  }, rt.session
end

-- dps.hub itself; `level` as check.fail counts it (3: the caller of the
-- public function that called this one).
local function new(opts, level, rt)
  check.options(opts, Hub.OPTIONS, "dps.hub", level)
  local host, device_id = assignment(opts, level)
  local has_cert = device.check(opts, "dps.hub", level, Hub.API_VERSION)
  local offset = opts.clock_offset or 0
  if offset ~= offset or math.abs(offset) == math.huge then
    check.fail("dps.hub: clock_offset must be a number of seconds", level)
  end
  local registration_id
  if opts.group_key then
    registration_id = opts.registration_id or (opts.state and opts.state.registrationId)
    check.registration_id(registration_id, "registration_id (or state.registrationId, for group_key)", level)
  end
  local key = device.key(opts, registration_id, "dps.hub", level)
  local fixed = opts.endpoint and device.endpoint(opts.endpoint, "dps.hub", level)
  local runtime, session = runtime_of(rt)
  local self = setmetatable({
    host = host,
    device_id = device_id,
    attestation = has_cert and "x509" or "symmetric_key",
    endpoint = fixed or ("https://" .. host),
    fixed_endpoint = fixed, -- the caller's endpoint stays across a new assignment
    api_version = opts.api_version or Hub.API_VERSION,
    timeout = opts.timeout or Hub.DEFAULT_TIMEOUT,
    token_ttl = opts.token_ttl or 3600,
    clock_offset = offset,
    reprovisions = 0,
    runtime = runtime,
  }, Hub)
  self.session = session or device.session(opts, self.timeout, opts.connect_timeout)
  device.keep(self, key)
  return self
end

--- Make a hub client for an assignment you already have (`dps.hub`).
-- @tparam table opts `state` (a registration state: `assignedHub`,
--   `deviceId`, and `registrationId` for `group_key`) or `hub` and
--   `device_id`; exactly one attestation (`symmetric_key` (the device key),
--   `group_key` (with `registration_id` or `state.registrationId`), or
--   `cert_file`/`cert` with `key_file`/`key` and `key_password`); and
--   optionally `endpoint` (where to connect instead of `https://{hub}`:
--   an emulator, a proxy, a test; tokens still name the hub), `api_version`,
--   `ca_file`, `ca_path`, `proxy`, `user_agent`, `timeout` (seconds per call,
--   retries included; default 30), `connect_timeout`, `token_ttl` (default
--   3600), `max_body`, `clock_offset` (seconds added to the local clock when
--   signing, e.g. the `clock_offset` that provisioning learnt)
-- @tparam[opt] table runtime for specs and event loops: `session` (an object
--   with `request`, `stats` and `close` like `dps.session`'s), `now`,
--   `monotime`, `sleep`, `jitter` (as in `dps.core`)
-- @treturn dps.hub
-- @raise on unknown options, wrong types, a state without a usable
--   `assignedHub`/`deviceId`, not exactly one attestation, a bad key
function Hub.new(opts, runtime)
  local hub = new(opts, 3, runtime) -- not a tail call: blames this function's caller
  return hub
end

Hub._new = new

function Hub:__tostring()
  return string.format("dps.hub(%s, %s%s)", self.host, self.device_id, self.session and "" or ", closed")
end

local CLOSED = "dps.hub: the hub client is closed"

--- Sign from now on with the local clock plus `offset` seconds; drops the
-- token signed with the old clock.
-- @tparam number offset seconds
function Hub:set_clock_offset(offset)
  device.set_clock_offset(self, offset, "dps.hub")
end

local function sign(self, key, expires)
  return core.sas_token(self.host .. "/devices/" .. self.device_id, key, expires, nil)
end

-- The Authorization header at wall-clock time `now` (offset applied;
-- dps.device): none with X.509.
local function authorization(self, now)
  return device.authorization(self, now, function(key, expires) return sign(self, key, expires) end)
end

--- The request of one call, without sending it (internal: for the blocking
-- calls and an event loop alike). The device ID (and lock token) are
-- percent-encoded into the path.
-- @tparam table call `{ step, method, path (after `/devices/{id}`), query (extra, e.g. "&reject"),
--   headers, body, to }`
-- @tparam number now wall-clock seconds with the offset applied
-- @treturn table `{ step, method, url, headers, body }`
function Hub:_request(call, now)
  local base = "/devices/" .. core.url_encode(self.device_id)
  local headers = {
    ["iothub-to"] = "/devices/" .. core.url_encode(self.device_id) .. call.to,
    ["authorization"] = authorization(self, now),
  }
  for k, v in pairs(call.headers or {}) do headers[k] = v end
  return {
    step = call.step, method = call.method, body = call.body, headers = headers,
    url = string.format("%s%s%s?api-version=%s%s", self.endpoint, base, call.path, self.api_version,
      call.query or ""),
  }
end

--- Whether a failure is the hub refusing this device (the rule for
-- provisioning again): 401 (with a correct clock), 403 that is not a full
-- quota or queue (kind `auth`), or 404 (`DeviceNotFound`, or no code).
-- @tparam table info
-- @treturn boolean
function Hub.refuses(info)
  if type(info) ~= "table" then return false end
  if info.kind == "auth" and (info.status == 401 or info.status == 403) then
    return true
  end
  return info.kind == "not_found" and info.status == 404
    and (info.error_code == nil or info.error_code == "DeviceNotFound")
end

-- Take a new assignment (after provisioning again): host, device ID, and
-- where to connect unless the caller fixed it; drops the token.
function Hub:_assign(state, result)
  self.host, self.device_id = assignment({ state = state }, 3)
  self.endpoint = self.fixed_endpoint or ("https://" .. self.host)
  if result and type(result.clock_offset) == "number" then
    self.clock_offset = result.clock_offset
  end
  local s = device.secrets(self)
  if s then s.token = nil end -- it named the old assignment
  self.provisioned = result
end

-- One exchange on the session: the decoded result and meta, or nil,
-- message, info.
function Hub:_exchange(call, timeout)
  local rt = self.runtime
  local req = self:_request(call, rt.now() + self.clock_offset)
  local status, headers, body = self.session:request(req.method, req.url, req.headers, req.body, timeout)
  if not status then
    if body.kind == "tls" then
      headers = headers .. clock.tls_note(rt.now())
    end
    return errors.transport(call.step, headers, body)
  end
  return hub_response.interpret(call.step, status, headers, body, rt.now())
end

-- One call with its rules: retries of 429/5xx/connection failures within
-- the deadline, the wrong-clock retry, and provisioning again (once).
function Hub:_call(call)
  local rt = self.runtime
  local deadline = rt.monotime() + self.timeout
  local attempts, clock_retried, reprovisioned = 0, false, false
  while true do
    local left = deadline - rt.monotime()
    if left <= 0 then
      return nil, string.format("%s: no answer within %g s", call.step, self.timeout),
        { kind = "timeout", retryable = errors.retryable("timeout"), step = call.step }
    end
    local result, meta, info = self:_exchange(call, left)
    if result ~= nil then
      return result, meta
    end
    local message = meta
    local corrected = not clock_retried and clock.correction(info, self.clock_offset)
    if corrected then
      clock_retried = true
      self:set_clock_offset(corrected)
    elseif self.reprovision and not reprovisioned and Hub.refuses(info) then
      reprovisioned = true
      self.reprovisions = self.reprovisions + 1
      local state, result2, info2 = self.reprovision()
      if not state then
        info2.hub_refusal = info
        return nil, errors.safe(message .. "; provisioning again: " .. tostring(result2), 2048), info2
      end
      self:_assign(state, result2)
      clock_retried = false
      deadline = rt.monotime() + self.timeout -- the call starts again on the new assignment
    elseif info.retryable then
      attempts = attempts + 1
      local wait = info.retry_after or poll.backoff(rt.jitter, attempts)
      if rt.monotime() + wait >= deadline then
        info.attempts = attempts
        return nil, message, info
      end
      rt.sleep(wait)
    else
      if self.clock_offset ~= 0 then info.clock_offset = self.clock_offset end
      return nil, message, info
    end
  end
end

--- Send one message (device to cloud): `POST …/messages/events`.
-- @tparam string body the message, as is (at most 256 KB)
-- @tparam[opt] table opts `properties` (application properties: name →
--   string/number/boolean, sent as `iothub-app-{name}`), `message_id`,
--   `correlation_id`, `content_type`, `content_encoding`
-- @treturn boolean true
-- @treturn table meta `{ status, headers }`
-- @return or nil, message, info
-- @raise on a closed client, a body that is not a string or too large, bad options
function Hub:send(body, opts)
  device.open_session(self, CLOSED)
  hub_message.body(body, "send", 2)
  hub_message.check_size(#body, "send", 2)
  local headers = hub_message.headers(opts or {}, "send", 2)
  return self:_call({ step = "send", method = "POST", path = "/messages/events", to = "/messages/events",
    headers = headers, body = body })
end

--- The JSON body of a batch (pure); see `dps.hub_message.encode_batch`.
-- @function encode_batch
Hub.encode_batch = hub_message.encode_batch

--- Send several messages in one request (`application/vnd.microsoft.iothub.json`).
-- @tparam table messages `{ { body = "…", properties = {…}, message_id = …, content_type = …, … }, … }`
-- @treturn boolean true
-- @treturn table meta
-- @return or nil, message, info
-- @raise on a closed client, an empty list, a bad message, more than 256 KB in all
function Hub:send_batch(messages)
  device.open_session(self, CLOSED)
  local body = hub_message.encode_batch(messages, 2)
  hub_message.check_size(#body, "send_batch", 2)
  return self:_call({ step = "send_batch", method = "POST", path = "/messages/events", to = "/messages/events",
    headers = { ["content-type"] = hub_message.BATCH_TYPE }, body = body })
end

--- Take the next cloud-to-device message, locked for this device until it
-- is settled (`complete`, `reject`, `abandon`) or the lock times out.
-- Polling: the service documents less than once every 25 minutes
-- (`Hub.RECEIVE_INTERVAL`) for HTTPS devices.
-- @treturn table|nil the message `{ body, properties, lock_token,
--   message_id, correlation_id, sequence_number, enqueued_time, expiry,
--   delivery_count, to, ack, user_id, content_type, content_encoding }`,
--   or nil (and no message) when nothing waits
-- @treturn table meta
-- @return or nil, message, info
function Hub:receive()
  device.open_session(self, CLOSED)
  local msg, meta, info = self:_call({ step = "receive", method = "GET", path = "/messages/devicebound",
    to = "/messages/devicebound" })
  if msg == false then
    return nil
  end
  return msg, meta, info
end

local function lock_of(msg, what)
  local token = type(msg) == "table" and msg.lock_token or msg
  if type(token) ~= "string" or hub_response.lock_token_problem(token) then
    error("dps.hub: " .. what .. " needs a message from receive (or its lock_token)", 3)
  end
  return token
end

local function settle(self, step, msg)
  device.open_session(self, CLOSED, 4)
  local token = lock_of(msg, step)
  local path = "/messages/devicebound/" .. core.url_encode(token)
  local call = { step = step, to = "/messages/devicebound", headers = { ["if-match"] = '"' .. token .. '"' } }
  if step == "abandon" then
    call.method, call.path, call.body = "POST", path .. "/abandon", ""
  else
    call.method, call.path = "DELETE", path
    call.query = step == "reject" and "&reject" or nil
  end
  return self:_call(call)
end

--- Complete a message: it is done (`DELETE …/devicebound/{lockToken}`).
-- @tparam table|string msg from `receive`, or its lock token
-- @treturn boolean true, or nil, message, info (kind `lock_lost` when the lock expired)
function Hub:complete(msg)
  return settle(self, "complete", msg)
end

--- Reject a message: it goes to the dead-letter queue, never again to the device.
-- @tparam table|string msg
function Hub:reject(msg)
  return settle(self, "reject", msg)
end

--- Abandon a message: it goes back to the queue and is delivered again.
-- @tparam table|string msg
function Hub:abandon(msg)
  return settle(self, "abandon", msg)
end

--- A hub SAS token for this device (`sr = {hub}/devices/{id}`, no `skn`),
-- signed with the clock offset, for another agent.
-- @tparam[opt] number ttl seconds (default the client's `token_ttl`)
-- @treturn string
-- @raise with X.509 (there is no token), on a bad ttl or a closed client
function Hub:token(ttl)
  local s = device.secrets(self)
  if not s or not s.key then
    error("dps.hub: token: " .. (s and "an X.509 device has no SAS token" or "the hub client is closed"), 2)
  end
  if ttl ~= nil then check.seconds(ttl, "ttl", 2) end
  local expires = math.floor(self.runtime.now() + self.clock_offset) + math.floor(ttl or self.token_ttl)
  return sign(self, s.key, expires)
end

--- A device connection string for another agent:
-- `HostName={hub};DeviceId={id};SharedAccessKey={key}` (symmetric keys; it
-- holds the key: keep it as secret as the key), or
-- `HostName={hub};DeviceId={id};x509=true`.
-- @treturn string
-- @raise on a closed client
function Hub:connection_string()
  local s = device.secrets(self)
  if not s then
    error("dps.hub: connection_string: the hub client is closed", 2)
  end
  local tail = s.key and ("SharedAccessKey=" .. s.key) or "x509=true"
  return string.format("HostName=%s;DeviceId=%s;%s", self.host, self.device_id, tail)
end

--- Connection statistics: `{ requests, connects, reprovisions, dps =
-- { requests, connects } }` (`dps` only from `dps.connect`: the
-- provisioning client's session).
function Hub:stats()
  local st = device.open_session(self, CLOSED):stats()
  st.reprovisions = self.reprovisions
  if self.dps and self.dps.session then
    st.dps = self.dps:stats()
  end
  return st
end

--- Close the HTTPS session (and the provisioning client of `dps.connect`).
-- Safe to call more than once.
function Hub:close()
  device.close(self)
  if self.dps then
    self.dps:close()
  end
  self.reprovision = nil
  return true
end
Hub.__close = Hub.close

return Hub
