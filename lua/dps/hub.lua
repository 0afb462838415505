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
-- are sent again after Retry-After or the back-off, within the call's
-- `timeout`; a 401 whose `Date` shows the signing clock off by more than a
-- minute is signed again with the server's time, once per call: the rules of
-- `dps.retry`, whose call machine each call drives. Every call blocks until
-- it ends: at most its `timeout` (default 30 s).
--
-- Provisioning again: a hub client made by `dps.connect` provisions once
-- more (cache ignored, cache updated) when the hub refuses the device — 401
-- with a correct clock, 403 (not a full quota or queue), or 404 (the device
-- was deleted, disabled or moved) — and sends the call again on the new
-- assignment: at most once per call, within the call's `timeout`. When the
-- hub still refuses after that, the next registration waits 60 s, doubling
-- with each refusal up to 6 h (`dps.retry.refusal_hold`; kept in the
-- assignment cache, so later runs obey it); meanwhile a refusal is returned
-- as it is, with `info.reprovision_held_until` (seconds since the epoch).
-- A successful call ends the hold.
-- @classmod dps.hub
local check = require "dps.check"
local request = require "dps.request"
local response = require "dps.response"
local retry = require "dps.retry"
local runtime = require "dps.runtime"
local hub_response = require "dps.hub_response"
local hub_message = require "dps.hub_message"

local Hub = {}
Hub.__index = Hub

--- The hub API version sent (`?api-version=`).
Hub.API_VERSION = request.HUB_API_VERSION
--- Seconds between receives that the service documents for HTTPS devices
-- (less often than every 25 minutes): the default pace of anything in this
-- library that receives repeatedly.
Hub.RECEIVE_INTERVAL = 25 * 60
--- The largest message (or batch) the hub takes, bytes.
Hub.MAX_MESSAGE_BYTES = hub_message.MAX_BYTES
--- Default `timeout` of one call (seconds, overall: retries and provisioning
-- again included).
Hub.DEFAULT_TIMEOUT = 30

--- Option names and types of `dps.hub`.
-- @local
Hub.OPTIONS = check.extend(check.extend(request.ATTESTATION, runtime.TRANSPORT), {
  state = "table", hub = "string", device_id = "string", registration_id = "string",
  endpoint = "string", api_version = "string", timeout = "number", token_ttl = "number", clock_offset = "number",
})

-- The assignment a hub client talks to: host and device ID, or nil and a problem.
local function assignment(opts)
  local state = opts.state or {}
  local host = opts.hub or state.assignedHub
  local device_id = opts.device_id or state.deviceId
  local problem = response.host_problem(host)
  if problem then
    return nil, nil, "dps.hub: the hub (state.assignedHub or hub) " .. problem
  end
  problem = response.device_id_problem(device_id)
  if problem then
    return nil, nil, "dps.hub: the device ID (state.deviceId or device_id) " .. problem
  end
  return host, device_id
end

-- The registration ID a group key derives the device key from.
local function registration_id_of(opts)
  return opts.registration_id or (opts.state and opts.state.registrationId)
end

--- The misuse in `dps.hub`'s options, or nil.
-- @local
function Hub.options_problem(opts)
  local problem = check.options(opts, Hub.OPTIONS, "dps.hub")
  if problem then return problem end
  local _, _, bad = assignment(opts)
  if bad then return bad end
  local attestation = request.attestation_problem(opts, Hub.API_VERSION)
  if attestation then return "dps.hub: " .. attestation end
  local offset = opts.clock_offset
  if offset ~= nil and (offset ~= offset or math.abs(offset) == math.huge) then
    return "dps.hub: clock_offset must be a number of seconds"
  end
  if opts.group_key then
    problem = check.registration_id(registration_id_of(opts),
      "registration_id (or state.registrationId, for group_key)")
  end
  if opts.endpoint ~= nil then
    local _, why = request.endpoint(opts.endpoint)
    problem = problem or (why and "dps.hub: " .. why)
  end
  return problem or runtime.options_problem(opts) or check.seconds(opts.timeout, "timeout", true)
end

--- A hub client from checked options (`options_problem`), on the runtime
-- `rt` (`dps.runtime`), with `link` when it can provision again (`dps.connect`):
-- `{ client = the DPS client, provisioned = how it was provisioned,
-- provision = function(timeout) → state, result or nil, message, info }`.
-- @local
function Hub.create(opts, rt, link)
  local host, device_id = assignment(opts)
  local self = setmetatable({
    host = host,
    device_id = device_id,
    attestation = (opts.cert_file or opts.cert) and "x509" or "symmetric_key",
    timeout = opts.timeout or Hub.DEFAULT_TIMEOUT,
    request_timeout = opts.request_timeout or runtime.DEFAULT_REQUEST_TIMEOUT,
    reprovisions = 0,
    provisioned = link and link.provisioned,
    rt = runtime.new(rt),
    link = link,
  }, Hub)
  self.builder = request.new{ registration_id = registration_id_of(opts), hub = host, device_id = device_id,
    hub_endpoint = opts.endpoint and request.endpoint(opts.endpoint), hub_api_version = opts.api_version,
    token_ttl = opts.token_ttl, clock_offset = opts.clock_offset,
    key = request.device_key(opts, registration_id_of(opts)) }
  self.rt.transport = self.rt.transport or runtime.session(opts)
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
--   `timeout` (seconds, overall, of each call: retries included; default 30),
--   `request_timeout` (seconds for one request, default 30),
--   `connect_timeout`, `ca_file`, `ca_path`, `proxy`, `user_agent`,
--   `token_ttl` (default 3600), `max_body`, `clock_offset` (seconds added
--   to the local clock when signing, e.g. the `clock_offset` that
--   provisioning learnt)
-- @tparam[opt] table rt a runtime for specs and event loops (`dps.runtime`:
--   `transport`, `now`, `monotime`, `sleep`, `jitter`)
-- @treturn dps.hub with the fields `host` (the hub it talks to),
--   `device_id`, `attestation` (`"symmetric_key"` or `"x509"`) and, from
--   `dps.connect`, `provisioned` (how it was provisioned: the second result
--   of `client:provision`); after provisioning again, `host`, `device_id`
--   and `provisioned` are the new assignment's. `dps.hub` makes no request.
-- @raise on unknown options, wrong types, a state without a usable
--   `assignedHub`/`deviceId`, not exactly one attestation, a bad key
function Hub.new(opts, rt)
  local problem = Hub.options_problem(opts)
  if problem then error(problem, 2) end
  return Hub.create(opts, rt)
end

function Hub:__tostring()
  return string.format("dps.hub(%s, %s%s)", self.host, self.device_id, self.rt.transport and "" or ", closed")
end

local function closed_problem(self)
  return not self.rt.transport and "dps.hub: the hub client is closed" or nil
end

--- Sign from now on with the local clock plus `offset` seconds; drops the
-- token signed with the old clock.
-- @tparam number offset seconds
function Hub:set_clock_offset(offset)
  if type(offset) ~= "number" or offset ~= offset or math.abs(offset) == math.huge then
    error("dps.hub: set_clock_offset: offset must be a number of seconds", 2)
  end
  self.builder:set_clock_offset(offset)
end

--- The clock offset the hub client signs with (seconds).
function Hub:clock_offset()
  return self.builder.clock_offset
end

-- Take a new assignment (after provisioning again): host, device ID and the
-- clock offset provisioning learnt.
function Hub:_assign(state, result)
  self.host, self.device_id = state.assignedHub, state.deviceId
  self.builder:assign(self.host, self.device_id)
  if result and type(result.clock_offset) == "number" then
    self.builder:set_clock_offset(result.clock_offset)
  end
  self.provisioned = result
end

-- One call, blocking, with its rules (dps.retry's call machine): retries
-- within the call's timeout, the wrong-clock retry, and provisioning again
-- once when the hub refuses the device (dps.connect's hubs). `call.timeout`
-- (default the client's) and `call.interpret` (default
-- `dps.hub_response.interpret`) serve calls with answers of their own
-- (`dps.upload`).
function Hub:_call(call)
  local rt, builder, link = self.rt, self.builder, self.link
  local machine = retry.call{ step = call.step, timeout = call.timeout or self.timeout, now = rt.monotime(),
    jitter = rt.jitter, clock_offset = builder.clock_offset,
    reprovision = link ~= nil and link.may_reprovision(rt.now()) }
  local interpret = call.interpret or hub_response.interpret
  local function send(act)
    builder:set_clock_offset(act.clock_offset)
    return runtime.exchange(rt, builder:hub_request(call, rt.now()), math.min(act.timeout, self.request_timeout),
      interpret)
  end
  local act = runtime.drive(rt, machine, send)
  local reprovisioned = act.action == "reprovision"
  if reprovisioned then
    self.reprovisions = self.reprovisions + 1
    local state, result, info = link.provision(act.timeout)
    if state then
      self:_assign(state, result)
      act = machine:reprovisioned(rt.monotime(), true, builder.clock_offset)
    else
      act = machine:reprovisioned(rt.monotime(), false, result, info)
    end
    act = runtime.drive(rt, machine, send, act)
  end
  if link then
    link.after_call(rt.now(), act.action == "done", reprovisioned, act.info)
  end
  if act.action == "done" then
    return act.result, act.meta
  end
  return nil, act.message, act.info
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
  local headers, problem = hub_message.headers(opts or {}, "send")
  problem = closed_problem(self) or hub_message.body_problem(body, "send") or problem
  if problem then error(problem, 2) end
  return self:_call(hub_message.call("send", headers, body))
end

--- Send several messages in one request (`application/vnd.microsoft.iothub.json`).
-- @tparam table messages `{ { body = "…", properties = {…}, message_id = …, content_type = …, … }, … }`
-- @treturn boolean true
-- @treturn table meta
-- @return or nil, message, info
-- @raise on a closed client, an empty list, a bad message, more than 256 KB in all
function Hub:send_batch(messages)
  local body, problem = hub_message.encode_batch(messages)
  problem = closed_problem(self) or problem
  if problem then error(problem, 2) end
  return self:_call(hub_message.call("send_batch", nil, body))
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
  local problem = closed_problem(self)
  if problem then error(problem, 2) end
  local msg, meta, info = self:_call(hub_message.call("receive"))
  if msg == false then
    return nil
  end
  return msg, meta, info
end

local function lock_of(msg, what)
  return hub_message.lock_token(msg, "dps.hub", what)
end

local function settle(self, step, token)
  return self:_call(hub_message.call(step, token))
end

--- Complete a message: it is done (`DELETE …/devicebound/{lockToken}`).
-- @tparam table|string msg from `receive`, or its lock token
-- @treturn boolean true, or nil, message, info (kind `lock_lost` when the lock expired)
function Hub:complete(msg)
  local token, problem = lock_of(msg, "complete")
  problem = closed_problem(self) or problem
  if problem then error(problem, 2) end
  return settle(self, "complete", token)
end

--- Reject a message: it goes to the dead-letter queue, never again to the device.
-- @tparam table|string msg
function Hub:reject(msg)
  local token, problem = lock_of(msg, "reject")
  problem = closed_problem(self) or problem
  if problem then error(problem, 2) end
  return settle(self, "reject", token)
end

--- Abandon a message: it goes back to the queue and is delivered again.
-- @tparam table|string msg
function Hub:abandon(msg)
  local token, problem = lock_of(msg, "abandon")
  problem = closed_problem(self) or problem
  if problem then error(problem, 2) end
  return settle(self, "abandon", token)
end

--- A hub SAS token for this device (`sr = {hub}/devices/{id}`, no `skn`),
-- signed with the clock offset, for another agent.
-- @tparam[opt] number ttl seconds (default the client's `token_ttl`)
-- @treturn string
-- @raise with X.509 (there is no token), on a bad ttl or a closed client
function Hub:token(ttl)
  local problem = closed_problem(self) or (not self.builder:has_key() and "dps.hub: token: an X.509 device has "
    .. "no SAS token") or check.seconds(ttl, "ttl", true)
  if problem then error(problem, 2) end
  return self.builder:hub_token(self.rt.now(), ttl)
end

--- A device connection string for another agent:
-- `HostName={hub};DeviceId={id};SharedAccessKey={key}` (symmetric keys; it
-- holds the key: keep it as secret as the key), or
-- `HostName={hub};DeviceId={id};x509=true`.
-- @treturn string
-- @raise on a closed client
function Hub:connection_string()
  local problem = closed_problem(self)
  if problem then error(problem, 2) end
  return self.builder:connection_string()
end

--- Connection statistics: `{ requests, connects, reprovisions, dps =
-- { requests, connects } }` (`dps` only from `dps.connect`: the
-- provisioning client's session).
function Hub:stats()
  local problem = closed_problem(self)
  if problem then error(problem, 2) end
  local st = self.rt.transport:stats()
  st.reprovisions = self.reprovisions
  if self.link then
    st.dps = self.link.client:stats()
  end
  return st
end

--- Close the HTTPS session (and the provisioning client of `dps.connect`).
-- Safe to call more than once.
function Hub:close()
  runtime.close(self.rt)
  self.builder:forget()
  if self.link then
    self.link.client:close()
  end
  return true
end
Hub.__close = Hub.close

--- Upload a file to the hub's storage (`dps.upload`): the hub names the
-- place and a SAS for it, the bytes go to storage, the hub is told how it
-- went (also after a failure). Small uploads go in one request, larger ones
-- in blocks and a block list; a block that fails with a retryable answer is
-- sent again (Retry-After, back-off) without starting over.
-- @tparam table opts `name` (the blob's name under the device's folder,
--   e.g. `"logs/boot.txt"`), and `data` (a string) or `file` (a path: read
--   a block at a time, never whole); optionally `block_size` (bytes, default
--   4 MiB, at most 100 MiB: larger uploads go in blocks of this size),
--   `on_progress` (`function(sent, total)`, after each block),
--   `content_type` (default `application/octet-stream`), `timeout`
--   (seconds for the whole upload; each step may also take the client's
--   `timeout`)
-- @treturn table `{ blob_name (as the hub named it: the device ID in
--   front), size, correlation_id, blocks (0: one request) }`
-- @return or nil, message, info (`info.kind`; `config` for a file that
--   cannot be read; after the hub gave a place, `correlation_id` and
--   `notified` (whether the hub was told of the failure))
-- @raise on a closed client or bad options
function Hub:upload(opts)
  local upload = require "dps.upload"
  local problem = closed_problem(self) or upload.options_problem(opts)
  if problem then error(problem:find("^dps%.") and problem or ("dps.hub: " .. problem), 2) end
  return upload.run({ rt = self.rt, timeout = self.timeout, request_timeout = self.request_timeout,
    call = function(call) return self:_call(call) end }, opts)
end

return Hub
