--- A DPS device client: one HTTPS session (one kept-alive TLS connection)
-- and the three device calls of the service.
--
--    local client = dps.new{ id_scope = "0ne…", registration_id = "dev-01", symmetric_key = key }
--    local state, err, info = client:provision{ payload = { modelId = "dtmi:…;1" },
--                                               cache = "/etc/dps/assignment.json" }
--    client:close()
--
-- Each call returns the service's decoded JSON (its own field names) and a
-- table `{ status, retry_after, headers }`, or `nil, message, info`
-- (see `dps.errors`).
-- @classmod dps.client
local core = require "dps.core"
local check = require "dps.check"
local device = require "dps.device"
local errors = require "dps.errors"
local poll = require "dps.poll"
local response = require "dps.response"
local cache = require "dps.cache"
local clock = require "dps.clock"
local json = require("cjson").new()

local Client = {}
Client.__index = Client

local DEFAULTS = {
  endpoint = "https://global.azure-devices-provisioning.net",
  api_version = "2021-06-01",
  timeout = 30,
  connect_timeout = 10,
  token_ttl = 3600,
}

-- Option names and types of dps.new.
local OPTIONS = {
  id_scope = "string", registration_id = "string",
  symmetric_key = "string", group_key = "string",
  cert_file = "string", key_file = "string", key_password = "string", cert = "string", key = "string",
  endpoint = "string", api_version = "string",
  ca_file = "string", ca_path = "string", proxy = "string", user_agent = "string",
  timeout = "number", connect_timeout = "number", token_ttl = "number", max_body = "number",
}

local MAX_BODY_BYTES = 96 * 1024 -- the service refuses larger messages

Client.OPTIONS = OPTIONS

-- A local file the client needs: nil when it is there and of the right
-- type, else a message naming the option, the path and the system's reason.
local function local_file_problem(name, path, want)
  local facts, problem = core.stat(path)
  local reason = facts and ("is not a " .. want) or tostring(problem):sub(#path + 3)
  if facts and facts.type == want then
    return nil
  elseif not facts and name == "key_file" and errors.may_be_secret(path) then
    -- no such file, and perhaps the key itself, given where its file's name goes
    return string.format("dps.new: %s: the value given is no %s that can be used (%s); it looks like a key or "
      .. "pass phrase, so it is not shown: give the name of a file", name, want, reason)
  end
  return string.format("dps.new: %s %s: %s", name, path, reason)
end

local function failure(kind, message)
  return nil, message, { kind = kind, retryable = errors.retryable(kind), step = "new" }
end

-- X.509: reads and checks the certificate and key, and the registration ID
-- against the certificate's CN (taking the CN when no ID was given).
-- Returns the registration ID, or nil, message, info{kind = "credentials"}.
local function x509_identity(opts)
  for _, name in ipairs({ "cert_file", "key_file" }) do
    local problem = opts[name] and local_file_problem(name, opts[name], "file")
    if problem then return failure("credentials", problem) end
  end
  local facts, problem = core.x509_credentials{ cert_file = opts.cert_file, cert = opts.cert,
    key_file = opts.key_file, key = opts.key, key_password = opts.key_password }
  if not facts then
    return failure("credentials", "dps.new: " .. problem)
  end
  if opts.registration_id == nil then
    local ok = facts.cn ~= "" and pcall(check.registration_id, facts.cn, "the certificate's CN")
    if not ok then
      return failure("credentials", string.format("dps.new: the certificate's subject CN %q is no registration "
        .. "ID (1-128 characters of A-Z a-z 0-9 - . _ :)", facts.cn))
    end
    return facts.cn
  end
  if facts.cn ~= opts.registration_id then
    return failure("credentials", string.format("dps.new: registration_id %q differs from the certificate's "
      .. "subject CN %q; with X.509 the registration ID is the CN", opts.registration_id, facts.cn))
  end
  return opts.registration_id
end

-- dps.new itself; `level` is what check.fail takes to blame the caller of
-- the public function (dps.new or dps.provision) that called this one.
local function new(opts, level)
  check.options(opts, OPTIONS, "dps.new", level)
  check.id_scope(opts.id_scope, level)
  local has_cert = device.check(opts, "dps.new", level, DEFAULTS.api_version)
  if opts.registration_id ~= nil or not has_cert then
    check.registration_id(opts.registration_id, nil, level)
  end
  for _, name in ipairs({ "ca_file", "ca_path", "cert_file", "key_file" }) do
    if opts[name] ~= nil then check.nonempty_string(opts[name], name, level) end
  end
  local endpoint = device.endpoint(opts.endpoint or DEFAULTS.endpoint, "dps.new", level)

  -- Local files: operational failures from here on, no raise.
  local unusable = (opts.ca_file and local_file_problem("ca_file", opts.ca_file, "file"))
    or (opts.ca_path and local_file_problem("ca_path", opts.ca_path, "directory"))
  if unusable then
    return failure("config", unusable)
  end
  local registration_id = opts.registration_id
  if has_cert then
    local message, info
    registration_id, message, info = x509_identity(opts)
    if not registration_id then
      return nil, message, info
    end
  end

  local key = device.key(opts, registration_id, "dps.new", level)

  local self = setmetatable({
    id_scope = opts.id_scope,
    registration_id = registration_id,
    attestation = has_cert and "x509" or "symmetric_key",
    endpoint = endpoint,
    api_version = opts.api_version or DEFAULTS.api_version,
    timeout = opts.timeout or DEFAULTS.timeout,
    token_ttl = opts.token_ttl or DEFAULTS.token_ttl,
    clock_offset = 0, -- seconds added to the local clock when signing (dps.clock)
  }, Client)
  self.session = device.session(opts, self.timeout, opts.connect_timeout or DEFAULTS.connect_timeout)
  device.keep(self, key, { credential = Client._fingerprint(key, opts) })
  return self
end

--- Make a client (`dps.new`).
-- @tparam table opts `id_scope`, `registration_id`, exactly one attestation
-- (`symmetric_key`, `group_key`, or a certificate: `cert_file` / `cert` with
-- `key_file` / `key` and optional `key_password`), and optionally
-- `endpoint`, `api_version`, `ca_file`, `ca_path`, `proxy`, `timeout` (per
-- request, s), `connect_timeout` (s), `user_agent`, `token_ttl` (s),
-- `max_body` (bytes). With a certificate, `registration_id` may be left out:
-- it is the certificate's subject CN.
-- @treturn dps.client the client
-- @return or nil, message, info: local files that cannot be used, like
-- `io.open`'s failures: `info.kind` is `credentials` (a certificate or key
-- that is missing, unreadable, encrypted without the right `key_password`,
-- not a pair, or whose CN is not the `registration_id`) or `config` (a
-- missing `ca_file` or `ca_path`)
-- @raise on unknown options, wrong types, bad IDs, a bad endpoint, or not
-- exactly one attestation
function Client.new(opts)
  local client, message, info = new(opts, 3) -- not a tail call: new blames this function's caller
  return client, message, info
end

-- dps.new for dps.provision, which passes its own level (internal).
Client._new = new

-- The credential's fingerprint for the assignment cache (dps.cache): of the
-- device key, or of the leaf certificate (read again: x509_identity has
-- checked that the file can be used).
function Client._fingerprint(key, opts)
  if key then
    return cache.key_fingerprint(key)
  end
  local pem = opts.cert
  if not pem then
    local f = io.open(opts.cert_file, "rb")
    pem = f and f:read("*a") or opts.cert_file
    if f then f:close() end
  end
  return cache.cert_fingerprint(pem)
end

--- What an assignment cache must match to answer for this client
-- (`dps.cache`): never a key.
-- @treturn table `{ id_scope, registration_id, endpoint, credential }`
function Client:identity()
  local s = device.secrets(self)
  return { id_scope = self.id_scope, registration_id = self.registration_id, endpoint = self.endpoint,
    credential = s and s.credential }
end

--- Sign from now on with the local clock plus `offset` seconds (the server's
-- time, learnt from a 401's `Date`); drops the token signed with the old
-- clock. `dps.client:provision` and the single calls do this themselves.
-- @tparam number offset seconds
function Client:set_clock_offset(offset)
  device.set_clock_offset(self, offset, "dps.client")
end

function Client:__tostring()
  return string.format("dps.client(%s%s)", self.registration_id, self.session and "" or ", closed")
end

local CLOSED = "dps.client: the client is closed"

-- The Authorization header at wall-clock time `now` (dps.device): none with
-- X.509, where the TLS handshake authenticates the device.
local function authorization(self, now)
  return device.authorization(self, now, function(key, expires)
    return core.sas_token(self.id_scope .. "/registrations/" .. self.registration_id, key, expires, "registration")
  end)
end

local function url(self, path)
  -- every part was checked in new() to hold only characters safe in a URL
  return string.format("%s/%s/registrations/%s%s?api-version=%s", self.endpoint, self.id_scope,
    self.registration_id, path, self.api_version)
end

-- The JSON body of register and registration_status. Misuse raises at
-- `level` as check.fail counts it from the function that calls this one
-- (default 2: that function's caller).
local function body_for(self, payload, level)
  level = (level or 2) + 1
  local doc = { registrationId = self.registration_id }
  if payload ~= nil then
    if type(payload) ~= "table" then
      check.fail("payload must be a table (sent as a JSON object), got " .. type(payload), level)
    end
    for k in pairs(payload) do
      if type(k) ~= "string" then
        check.fail("payload must be a JSON object: every key a string (got a " .. type(k) .. " key)", level)
      end
    end
    doc.payload = payload
  end
  local ok, body = pcall(json.encode, doc)
  if not ok then
    check.fail("payload cannot be sent as JSON: " .. tostring(body), level)
  end
  if #body > MAX_BODY_BYTES then
    check.fail(string.format("payload too large: the request would be %d bytes, DPS accepts at most %d",
      #body, MAX_BODY_BYTES), level)
  end
  return body
end

--- The JSON body of `register` (with `payload`) and `registration_status`
-- (without), for a driver that sends requests itself (internal).
-- @function Client:_body
-- @tparam[opt] table payload
-- @treturn string
-- @raise at the caller of the function that calls it, on a payload that is
-- not a JSON object or is over the service's 96 KB limit
Client._body = body_for

local METHODS = { register = "PUT", operation_status = "GET", registration_status = "POST" }

--- Build one request, without sending it (internal: for the blocking calls
-- and an event loop alike). Renews the SAS token when it is within 60 s of
-- expiry at `now`.
-- @tparam string step `register`, `operation_status` or `registration_status`
-- @tparam number now wall-clock seconds since the epoch (`dps.core.now()`)
-- @tparam[opt] string operation_id for `operation_status`
-- @tparam[opt] string body for `register` and `registration_status`: the
--   JSON text (`Client:register` makes it from the payload)
-- @treturn table `{ step, method, url, headers, body }`
function Client:_request(step, now, operation_id, body)
  local path
  if step == "register" then
    path = "/register"
  elseif step == "operation_status" then
    path = "/operations/" .. core.url_encode(operation_id)
  elseif step == "registration_status" then
    path = ""
  else
    error("dps.client: _request: unknown step " .. tostring(step), 2)
  end
  local headers = {
    ["accept"] = "application/json",
    ["authorization"] = authorization(self, now),
  }
  if body then
    headers["content-type"] = "application/json; charset=utf-8"
  end
  return { step = step, method = METHODS[step], url = url(self, path), headers = headers, body = body }
end

-- One exchange: builds the request, sends it on the session (blocking) and
-- interprets the answer: returns decoded JSON and meta, or nil, message,
-- info. `timeout` (optional) caps this request, for callers with a deadline.
-- The public methods have checked that the client is open.
-- Signs with the local clock plus the session's clock offset.
function Client:_exchange(step, operation_id, body, timeout)
  local req = self:_request(step, core.now() + self.clock_offset, operation_id, body)
  local status, resp_headers, resp_body = self.session:request(req.method, req.url, req.headers, req.body,
    timeout and math.min(timeout, self.timeout) or nil)
  if not status then
    local here = core.now()
    if resp_body.kind == "tls" then
      resp_headers = resp_headers .. clock.tls_note(here)
      resp_body.local_time = here
    end
    return errors.transport(step, resp_headers, resp_body)
  end
  return response.interpret(step, status, resp_headers, resp_body, core.now())
end

-- One exchange of the single calls, with dps.clock's rule: a 401 that a
-- wrong clock explains is sent once more, signed with the server's time.
function Client:_call(step, operation_id, body, timeout)
  local result, meta, info = self:_exchange(step, operation_id, body, timeout)
  local corrected = not result and clock.correction(info, self.clock_offset)
  if corrected then
    self:set_clock_offset(corrected)
    result, meta, info = self:_exchange(step, operation_id, body, timeout)
  end
  if not result and self.clock_offset ~= 0 then
    info.clock_offset = self.clock_offset
  end
  return result, meta, info
end

--- Register the device (`PUT …/register`).
-- @tparam[opt] table payload custom data, sent as the JSON object `payload`
-- @tparam[opt] number timeout seconds for this request (at most the client's `timeout`)
-- @treturn table RegistrationOperationStatus (`operationId`, `status`, `registrationState`)
-- @treturn table `{ status, retry_after, headers }`
function Client:register(payload, timeout)
  device.open_session(self, CLOSED)
  return self:_call("register", nil, body_for(self, payload), timeout)
end

--- Look up a registration operation (`GET …/operations/{id}`).
-- @tparam string operation_id from `register`
-- @tparam[opt] number timeout seconds for this request (at most the client's `timeout`)
-- @treturn table RegistrationOperationStatus
-- @treturn table `{ status, retry_after, headers }`
function Client:operation_status(operation_id, timeout)
  device.open_session(self, CLOSED)
  check.nonempty_string(operation_id, "operation_id")
  return self:_call("operation_status", operation_id, nil, timeout)
end

--- Look up the device's registration without registering again
-- (`POST …/registrations/{id}`, Device Registration Status Lookup).
-- @tparam[opt] number timeout seconds for this request (at most the client's `timeout`)
-- @treturn table DeviceRegistrationResult (`assignedHub`, `deviceId`, `status`, …)
-- @treturn table `{ status, retry_after, headers }`
function Client:registration_status(timeout)
  device.open_session(self, CLOSED)
  return self:_call("registration_status", nil, body_for(self, nil), timeout)
end

local PROVISION_OPTIONS = { payload = "table", timeout = "number", cache = "string", force = "boolean" }

-- Register and poll until the service decides (the dps.poll machine, on the
-- monotonic clock and this client's session).
local function provision_at_service(self, body, timeout)
  local machine = poll.new{ timeout = timeout, now = core.monotime(), clock_offset = self.clock_offset }
  local act = machine:tick(core.monotime())
  while true do
    if act.action == "wait" then
      local delay = act.at - core.monotime()
      if delay > 0 then
        core.sleep(delay)
      end
      act = machine:tick(core.monotime())
    elseif act.action == "send" then
      self:set_clock_offset(act.clock_offset)
      local result, meta, info = self:_exchange(act.step, act.operation_id,
        act.step == "register" and body or nil, act.timeout)
      act = machine:answer(core.monotime(), result, meta, info)
    elseif act.action == "done" then
      return act
    else
      return nil, act.message, act.info
    end
  end
end

-- client:provision itself, blaming `level` as check.fail counts it.
local function provision(self, opts, level)
  device.open_session(self, CLOSED, level + 1)
  opts = opts or {}
  check.options(opts, PROVISION_OPTIONS, "provision", level)
  local timeout = opts.timeout or poll.DEFAULT_TIMEOUT
  check.seconds(timeout, "timeout", level)
  if opts.cache ~= nil then
    check.nonempty_string(opts.cache, "cache", level)
  end
  local body = body_for(self, opts.payload, level) -- checked once, before anything is sent
  local identity = self:identity()
  local old, ignored
  if opts.cache then
    old, ignored = cache.load(opts.cache, identity)
    if old and not opts.force then
      return old.state, { source = "cache", cache = opts.cache, written_at = old.written_at,
        clock_offset = self.clock_offset, cache_written = false }
    end
  end
  local act, message, info = provision_at_service(self, body, timeout)
  if not act then
    info.cache_ignored = ignored
    return nil, message, info
  end
  local result = { source = "service", result = act.result, clock_offset = self.clock_offset,
    cache = opts.cache, cache_ignored = ignored, cache_written = false }
  if opts.cache then
    local status, problem = cache.store(opts.cache, identity, act.state, core.now() + self.clock_offset, old)
    result.cache_written = status == "written"
    result.cache_error = problem
  end
  return act.state, result
end

--- Provision the device, blocking: from the assignment cache when one is
-- given and matches this device (no request at all), else register and
-- poll until the service decides (the `dps.poll` machine with the monotonic
-- clock and this client's session), and keep the assignment in the cache.
--
-- A cache answers when it is a complete file of this library's format for
-- the same ID scope, registration ID, endpoint and credential (a fingerprint
-- of the key or certificate, so a rotated key or a new certificate provisions
-- again). Any other cache (truncated, not JSON, another format, another
-- device) is ignored, never an error: `info.cache_ignored` says why. The
-- file is written atomically (`dps.core.write_atomic`, mode 0600), and only
-- when the assignment changed. A cache that cannot be written does not fail
-- the provisioning: `info.cache_error` says why.
--
-- When the service answers 401 and its `Date` shows the local clock off by
-- more than a minute, the request is signed again with the server's time
-- (once); the client keeps that offset (`dps.clock`).
-- @tparam[opt] table opts `payload` (table), `timeout` (overall seconds,
--   default 60), `cache` (path of the assignment cache), `force` (boolean:
--   do not answer from the cache; register, and write the cache unless it
--   already holds the same assignment)
-- @treturn table the assigned `registrationState` (`assignedHub`, `deviceId`, …)
-- @treturn table where it came from: `{ source = "cache" | "service",
--   result = the final RegistrationOperationStatus (service), written_at =
--   the cache's ISO time (cache), clock_offset = seconds (0 unless a 401
--   showed the clock wrong), cache = path, cache_ignored = why a cache file
--   there was not used, cache_written = boolean, cache_error = message }`
-- @return or nil, message, info (`info.kind` `timeout` when the deadline
--   passed; `info.cache_ignored` as above; `info.clock_offset` when not 0)
function Client:provision(opts)
  local state, result, info = provision(self, opts, 3) -- not a tail call: blames this function's caller
  return state, result, info
end

-- client:provision for dps.provision, which passes its own level (internal).
Client._provision = provision

--- Connection statistics: `{ requests = n, connects = n }`.
function Client:stats()
  return device.open_session(self, CLOSED):stats()
end

--- Close the HTTPS session. Safe to call more than once.
function Client:close()
  device.close(self)
  return true
end
Client.__close = Client.close

return Client
