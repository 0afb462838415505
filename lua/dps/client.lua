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
-- (see `dps.errors`). The calls that talk to the service (`provision`,
-- `register`, `operation_status`, `registration_status`) block until they
-- end: at most their `timeout` (default the client's, 60 s); the others
-- make no request and return at once. Readable fields: `id_scope`,
-- `registration_id` (with X.509: the certificate's CN), `endpoint`.
-- @classmod dps.client
local core = require "dps.core"
local check = require "dps.check"
local errors = require "dps.errors"
local poll = require "dps.poll"
local request = require "dps.request"
local response = require "dps.response"
local retry = require "dps.retry"
local runtime = require "dps.runtime"
local cache = require "dps.cache"
local certificate = require "dps.certificate"

local Client = {}
Client.__index = Client

local DEFAULT_ENDPOINT = "https://global.azure-devices-provisioning.net"
--- Default `timeout` of a call (seconds, overall: provisioning's register
-- and polls, or a single call and its one wrong-clock retry).
Client.DEFAULT_TIMEOUT = poll.DEFAULT_TIMEOUT

--- Option names and types of `dps.new`.
-- @local
Client.OPTIONS = check.extend(check.extend(request.ATTESTATION, runtime.TRANSPORT), {
  id_scope = "string", registration_id = "string", endpoint = "string", api_version = "string",
  timeout = "number", token_ttl = "number",
})

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
    if facts.cn == "" or check.registration_id(facts.cn) then
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


--- The misuse in `dps.new`'s options, or nil; `who` names the public function.
-- @local
function Client.options_problem(opts, who)
  local problem = check.options(opts, Client.OPTIONS, who) or check.id_scope(opts.id_scope)
  if problem then return problem end
  local attestation, has_cert = request.attestation_problem(opts, request.DPS_API_VERSION)
  if attestation then return who .. ": " .. attestation end
  if opts.registration_id ~= nil or not has_cert then
    problem = check.registration_id(opts.registration_id)
  end
  for _, name in ipairs({ "cert_file", "key_file" }) do
    problem = problem or (opts[name] ~= nil and check.string(opts[name], name))
  end
  problem = problem or runtime.options_problem(opts) or check.seconds(opts.timeout, "timeout", true)
  if problem then return problem end
  local _, bad = request.endpoint(opts.endpoint or DEFAULT_ENDPOINT)
  return bad and (who .. ": " .. bad)
end

-- The credential's fingerprint for the assignment cache (dps.cache): of the
-- device key, or of the leaf certificate (read again: x509_identity has
-- checked that the file can be used).
local function fingerprint(key, opts)
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

--- A client from checked options (`options_problem`), on the runtime `rt`
-- (`dps.runtime`; the real one when nil).
-- @return the client, or nil, message, info for local files that cannot be used
-- @local
function Client.create(opts, rt)
  local unusable = (opts.ca_file and local_file_problem("ca_file", opts.ca_file, "file"))
    or (opts.ca_path and local_file_problem("ca_path", opts.ca_path, "directory"))
  if unusable then
    return failure("config", unusable)
  end
  local registration_id = opts.registration_id
  local x509 = opts.cert_file ~= nil or opts.cert ~= nil
  if x509 then
    local message, info
    registration_id, message, info = x509_identity(opts)
    if not registration_id then
      return nil, message, info
    end
  end
  local key = request.device_key(opts, registration_id)
  local self = setmetatable({
    id_scope = opts.id_scope,
    registration_id = registration_id,
    attestation = x509 and "x509" or "symmetric_key",
    endpoint = request.endpoint(opts.endpoint or DEFAULT_ENDPOINT),
    timeout = opts.timeout,
    request_timeout = opts.request_timeout or runtime.DEFAULT_REQUEST_TIMEOUT,
    rt = runtime.new(rt),
  }, Client)
  self.builder = request.new{ id_scope = self.id_scope, registration_id = registration_id,
    endpoint = self.endpoint, api_version = opts.api_version, token_ttl = opts.token_ttl,
    key = key, credential = fingerprint(key, opts) }
  self.rt.transport = self.rt.transport or runtime.session(opts)
  return self
end

--- Make a client (`dps.new`).
-- @tparam table opts `id_scope`, `registration_id`, exactly one attestation
-- (`symmetric_key`, `group_key`, or a certificate: `cert_file` / `cert` with
-- `key_file` / `key` and optional `key_password`), and optionally
-- `endpoint`, `api_version`, `timeout` (seconds, overall, of each call:
-- `provision` with all its requests, or a single call; default 60),
-- `request_timeout` (seconds for one request, default 30),
-- `connect_timeout` (s, default 10), `ca_file`, `ca_path`, `proxy`,
-- `user_agent`, `token_ttl` (s), `max_body` (bytes). With a certificate,
-- `registration_id` may be left out: it is the certificate's subject CN.
-- @tparam[opt] table rt a runtime for specs and event loops (`dps.runtime`)
-- @treturn dps.client the client
-- @return or nil, message, info: local files that cannot be used, like
-- `io.open`'s failures: `info.kind` is `credentials` (a certificate or key
-- that is missing, unreadable, encrypted without the right `key_password`,
-- not a pair, or whose CN is not the `registration_id`) or `config` (a
-- missing `ca_file` or `ca_path`)
-- @raise on unknown options, wrong types, bad IDs, a bad endpoint, or not
-- exactly one attestation
function Client.new(opts, rt)
  local problem = Client.options_problem(opts, "dps.new")
  if problem then error(problem, 2) end
  return Client.create(opts, rt)
end

--- What an assignment cache must match to answer for this client
-- (`dps.cache`): never a key.
-- @treturn table `{ id_scope, registration_id, endpoint, credential }`
function Client:identity()
  return self.builder:identity()
end

--- The clock offset the client signs with (seconds added to the local
-- clock; learnt from a 401's `Date`).
-- @treturn number
function Client:clock_offset()
  return self.builder.clock_offset
end

local function offset_problem(offset)
  if type(offset) ~= "number" or offset ~= offset or math.abs(offset) == math.huge then
    return "set_clock_offset: offset must be a number of seconds"
  end
end

--- Sign from now on with the local clock plus `offset` seconds (the server's
-- time, learnt from a 401's `Date`); drops the token signed with the old
-- clock. `dps.client:provision` and the single calls do this themselves.
-- @tparam number offset seconds
function Client:set_clock_offset(offset)
  local problem = offset_problem(offset)
  if problem then error("dps.client: " .. problem, 2) end
  self.builder:set_clock_offset(offset)
end

function Client:__tostring()
  return string.format("dps.client(%s%s)", self.registration_id, self.rt.transport and "" or ", closed")
end

local function closed_problem(self)
  return not self.rt.transport and "dps.client: the client is closed" or nil
end

-- One request of a machine's `send`: signed at the act's clock offset,
-- limited to the time the act leaves and to request_timeout.
function Client:_send(act, step, operation_id, body, api_version)
  self.builder:set_clock_offset(act.clock_offset)
  local req = self.builder:dps_request(step, self.rt.now(), operation_id, body, api_version)
  return runtime.exchange(self.rt, req, math.min(act.timeout, self.request_timeout), response.interpret)
end

-- A single call: one request, and once more signed with the server's time
-- when a 401 shows the clock wrong (dps.retry).
function Client:_call(step, operation_id, body, timeout)
  local rt = self.rt
  local machine = retry.call{ step = step, timeout = timeout or self.timeout or Client.DEFAULT_TIMEOUT,
    now = rt.monotime(), jitter = rt.jitter, clock_offset = self.builder.clock_offset, retries = false }
  local act = runtime.drive(rt, machine, function(a) return self:_send(a, step, operation_id, body) end)
  if act.action == "done" then
    return act.result, act.meta
  end
  return nil, act.message, act.info
end

local function call_problem(self, timeout)
  return closed_problem(self) or check.seconds(timeout, "timeout", true)
end

--- Register the device (`PUT …/register`).
-- @tparam[opt] table payload custom data, sent as the JSON object `payload`
-- @tparam[opt] number timeout seconds for this call (default the client's `timeout`)
-- @treturn table RegistrationOperationStatus (`operationId`, `status`, `registrationState`)
-- @treturn table `{ status, retry_after, headers }`
function Client:register(payload, timeout)
  local body, problem = request.body(self.registration_id, payload)
  problem = call_problem(self, timeout) or problem
  if problem then error(problem, 2) end
  return self:_call("register", nil, body, timeout)
end

--- Look up a registration operation (`GET …/operations/{id}`).
-- @tparam string operation_id from `register`
-- @tparam[opt] number timeout seconds for this call
-- @treturn table RegistrationOperationStatus
-- @treturn table `{ status, retry_after, headers }`
function Client:operation_status(operation_id, timeout)
  local problem = call_problem(self, timeout) or check.string(operation_id, "operation_id")
  if problem then error(problem, 2) end
  return self:_call("operation_status", operation_id, nil, timeout)
end

--- Look up the device's registration without registering again
-- (`POST …/registrations/{id}`, Device Registration Status Lookup).
-- @tparam[opt] number timeout seconds for this call
-- @treturn table DeviceRegistrationResult (`assignedHub`, `deviceId`, `status`, …)
-- @treturn table `{ status, retry_after, headers }`
function Client:registration_status(timeout)
  local problem = call_problem(self, timeout)
  if problem then error(problem, 2) end
  return self:_call("registration_status", nil, request.body(self.registration_id), timeout)
end

--- Option names and types of `client:provision`.
-- @local
Client.PROVISION_OPTIONS = { payload = "table", timeout = "number", cache = "string", force = "boolean",
  certificate = "table" }

--- The misuse in `client:provision`'s options, or nil.
-- @local
function Client.provision_problem(opts)
  local problem = check.options(opts, Client.PROVISION_OPTIONS, "provision")
    or check.seconds(opts.timeout, "timeout", true)
    or (opts.cache ~= nil and check.string(opts.cache, "cache"))
    or (opts.certificate ~= nil and certificate.problem(opts.certificate))
  if problem then return problem end
  local _, bad = request.body("x", opts.payload)
  return bad
end

-- Register and poll until the service decides (the dps.poll machine).
function Client:_provision_at_service(body, timeout, api_version)
  local rt = self.rt
  local machine = poll.new{ timeout = timeout, now = rt.monotime(), jitter = rt.jitter,
    clock_offset = self.builder.clock_offset }
  local act = runtime.drive(rt, machine, function(a)
    return self:_send(a, a.step, a.operation_id, a.step == "register" and body or nil, api_version)
  end)
  if act.action == "done" then
    self.builder:set_clock_offset(act.clock_offset)
    return act
  end
  return nil, act.message, act.info
end

--- Provision the device from checked options (`provision_problem`); see
-- `provision`.
-- @local
function Client:run_provision(opts)
  local timeout = opts.timeout or self.timeout or Client.DEFAULT_TIMEOUT
  local cert_opts = opts.certificate
  -- with certificate issuance: what the folder holds, and whether it is due
  local held, due
  if cert_opts then
    held, due = certificate.usable(cert_opts, self.registration_id, self.rt.now() + self.builder.clock_offset)
  end
  local identity = self:identity()
  local old, ignored
  if opts.cache then
    old, ignored = cache.load(opts.cache, identity)
    if old and not opts.force and not due then
      return old.state, { source = "cache", cache = opts.cache, written_at = old.written_at,
        clock_offset = self.builder.clock_offset, cache_written = false, hold = old.hold,
        certificate = held and certificate.facts(held, false) }
    end
  end
  local pending, message, info
  if due then
    pending, message, info = certificate.request(cert_opts, self.registration_id)
    if not pending then return nil, message, info end
  end
  local body = request.body(self.registration_id, opts.payload, pending and pending.csr)
  local act
  act, message, info = self:_provision_at_service(body, timeout,
    pending and (cert_opts.api_version or certificate.API_VERSION))
  if not act then
    info.cache_ignored = ignored
    return nil, message, info
  end
  local state, offset = act.state, self.builder.clock_offset
  local result = { source = "service", result = act.result, clock_offset = offset,
    cache = opts.cache, cache_ignored = ignored, cache_written = false,
    certificate = held and certificate.facts(held, false) }
  if pending then
    local facts
    facts, message, info = certificate.keep(cert_opts, pending, state.issuedCertificateChain, self.registration_id)
    if not facts then return nil, message, info end
    result.certificate = facts
    state = certificate.without_chain(state) -- the chain is in the folder, not in the cache
  end
  if opts.cache then
    local status, problem = cache.store(opts.cache, identity, state, self.rt.now() + offset, old,
      old and old.hold)
    result.cache_written = status == "written"
    result.cache_error = problem
  end
  return state, result
end

--- Provision the device, blocking: from the assignment cache when one is
-- given and matches this device (no request at all), else register and
-- poll until the service decides (the `dps.poll` machine on this client's
-- runtime), and keep the assignment in the cache.
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
-- With `certificate = { dir = DIR, curve = "P-384", renew_at = 0.8 }`
-- (DPS certificate issuance, a preview feature of the service): when DIR
-- holds no usable certificate for this device, or the one there is past
-- `renew_at` of its validity, or expired, a new EC key and its CSR go with
-- the registration (api-version `2025-07-01-preview`), and the chain the
-- service issues is kept in `DIR/cert.pem` with the key in `DIR/key.pem`
-- (`dps.certificate`); with a valid certificate and a matching cache,
-- nothing is sent.
-- @tparam[opt] table opts `payload` (table), `timeout` (overall seconds,
--   default the client's `timeout`, else 60), `cache` (path of the
--   assignment cache), `force` (boolean: do not answer from the cache;
--   register, and write the cache unless it already holds the same
--   assignment), `certificate` (see above)
-- @treturn table the assigned `registrationState` (`assignedHub`, `deviceId`, …)
-- @treturn table where it came from: `{ source = "cache" | "service",
--   result = the final RegistrationOperationStatus (service), written_at =
--   the cache's ISO time (cache), clock_offset = seconds (0 unless a 401
--   showed the clock wrong), cache = path, cache_ignored = why a cache file
--   there was not used, cache_written = boolean, cache_error = message,
--   certificate = { cert_file, key_file, not_after, serial, issued } }`
-- @return or nil, message, info (`info.kind` `timeout` when the deadline
--   passed; `info.cache_ignored` as above; `info.clock_offset` when not 0)
function Client:provision(opts)
  opts = opts or {}
  local problem = closed_problem(self) or Client.provision_problem(opts)
  if problem then error(problem, 2) end
  return self:run_provision(opts)
end

--- Connection statistics: `{ requests = n, connects = n }`.
function Client:stats()
  local problem = closed_problem(self)
  if problem then error(problem, 2) end
  return self.rt.transport:stats()
end

--- Close the HTTPS session and drop the key and tokens. Safe to call more
-- than once.
function Client:close()
  runtime.close(self.rt)
  self.builder:forget()
  return true
end
Client.__close = Client.close

return Client
