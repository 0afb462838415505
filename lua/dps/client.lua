--- A DPS device client: one HTTPS session (one kept-alive TLS connection)
-- and the three device calls of the service.
--
--    local client = dps.new{ id_scope = "0ne…", registration_id = "dev-01", symmetric_key = key }
--    local state, err, info = client:provision{ payload = { modelId = "dtmi:…;1" } }
--    client:close()
--
-- Each call returns the service's decoded JSON (its own field names) and a
-- table `{ status, retry_after, headers }`, or `nil, message, info`
-- (see `dps.errors`).
-- @classmod dps.client
local core = require "dps.core"
local check = require "dps.check"
local errors = require "dps.errors"
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
local RENEW_BEFORE = 60          -- seconds: a token this close to expiry is renewed

-- Keys live here, not on the client table, so they never show up when a
-- client is printed, dumped or serialised.
local secrets = setmetatable({}, { __mode = "k" })

Client.OPTIONS = OPTIONS

local function check_endpoint(endpoint)
  local host = endpoint:match("^[Hh][Tt][Tt][Pp][Ss]://([%w%.%-%[%]:]+)/?$")
  if not host then
    check.fail("endpoint must be https://host[:port], got " .. string.format("%q", endpoint), 3)
  end
  return "https://" .. host
end

-- X.509: checks the certificate and key, and the registration ID against
-- the certificate's CN (taking the CN when no ID was given).
local function x509_identity(opts)
  if opts.cert_file and opts.cert then
    check.fail("dps.new: give cert_file or cert, not both", 3)
  end
  if (opts.key_file or opts.key) == nil then
    check.fail("dps.new: a certificate needs its private key: give key_file or key", 3)
  end
  if opts.key_file and opts.key then
    check.fail("dps.new: give key_file or key, not both", 3)
  end
  local facts, problem = core.x509_credentials{ cert_file = opts.cert_file, cert = opts.cert,
    key_file = opts.key_file, key = opts.key, key_password = opts.key_password }
  if not facts then
    check.fail("dps.new: credentials: " .. problem, 3)
  end
  if opts.registration_id == nil then
    if facts.cn == "" then
      check.fail("dps.new: credentials: the certificate has no subject CN to use as registration_id", 3)
    end
    check.registration_id(facts.cn, "the certificate's CN", 3)
    return facts.cn
  end
  if facts.cn ~= opts.registration_id then
    check.fail(string.format("dps.new: registration_id %q differs from the certificate's subject CN %q; "
      .. "with X.509 the registration ID is the CN", opts.registration_id, facts.cn), 3)
  end
  return opts.registration_id
end

--- Make a client (`dps.new`).
-- @tparam table opts `id_scope`, `registration_id`, exactly one attestation
-- (`symmetric_key`, `group_key`, or a certificate: `cert_file` / `cert` with
-- `key_file` / `key` and optional `key_password`), and optionally
-- `endpoint`, `api_version`, `ca_file`, `ca_path`, `proxy`, `timeout` (per
-- request, s), `connect_timeout` (s), `user_agent`, `token_ttl` (s),
-- `max_body` (bytes). With a certificate, `registration_id` may be left out:
-- it is the certificate's subject CN.
-- @raise on unknown options, wrong types, bad IDs, not exactly one
-- attestation, or certificate credentials that cannot be used
-- (message starting `dps.new: credentials:`)
function Client.new(opts)
  check.options(opts, OPTIONS, "dps.new", 2)
  check.id_scope(opts.id_scope, 2)
  local has_cert = opts.cert_file ~= nil or opts.cert ~= nil
  local attestations = (opts.symmetric_key and 1 or 0) + (opts.group_key and 1 or 0) + (has_cert and 1 or 0)
  if attestations ~= 1 then
    check.fail("dps.new: give exactly one attestation: symmetric_key, group_key, or cert_file/cert", 2)
  end
  if not has_cert and (opts.key_file or opts.key or opts.key_password) then
    check.fail("dps.new: key_file, key and key_password belong to a certificate (cert_file or cert)", 2)
  end
  local registration_id = has_cert and x509_identity(opts) or opts.registration_id
  check.registration_id(registration_id, nil, 2)
  if opts.api_version ~= nil and not opts.api_version:match("^[%w%.%-]+$") then
    check.fail("dps.new: api_version must look like 2021-06-01", 2)
  end
  for _, name in ipairs({ "timeout", "connect_timeout", "token_ttl" }) do
    if opts[name] ~= nil then check.seconds(opts[name], name, 2) end
  end

  local key
  if opts.group_key then
    check.key(opts.group_key, "group_key", 2)
    local ok, derived = pcall(core.derive_key, opts.group_key, registration_id)
    if not ok then check.fail("dps.new: " .. derived, 2) end
    key = derived
  elseif opts.symmetric_key then
    -- Checked in C, where the decoded bytes are wiped (base64_decode would
    -- leave them in a Lua string); the type was checked with the options.
    local problem = core.key_problem(opts.symmetric_key)
    if problem then
      check.fail("dps.new: symmetric_key is not base64: it " .. problem, 2)
    end
  end

  local self = setmetatable({
    id_scope = opts.id_scope,
    registration_id = registration_id,
    attestation = has_cert and "x509" or "symmetric_key",
    endpoint = check_endpoint(opts.endpoint or DEFAULTS.endpoint),
    api_version = opts.api_version or DEFAULTS.api_version,
    timeout = opts.timeout or DEFAULTS.timeout,
    token_ttl = opts.token_ttl or DEFAULTS.token_ttl,
  }, Client)
  self.session = core.session({
    ca_file = opts.ca_file, ca_path = opts.ca_path, proxy = opts.proxy, user_agent = opts.user_agent,
    timeout = self.timeout, connect_timeout = opts.connect_timeout or DEFAULTS.connect_timeout,
    max_body = opts.max_body,
    cert_file = opts.cert_file, cert = opts.cert, key_file = opts.key_file, key = opts.key,
    key_password = opts.key_password,
  })
  secrets[self] = { key = key or opts.symmetric_key }
  return self
end

function Client:__tostring()
  return string.format("dps.client(%s%s)", self.registration_id, self.session and "" or ", closed")
end

local function open_session(self)
  if not self.session then
    error("dps.client: the client is closed", 3)
  end
  return self.session
end

-- The Authorization header, renewed when near expiry; none with X.509,
-- where the TLS handshake authenticates the device.
local function authorization(self)
  local s = secrets[self]
  if not s.key then
    return nil
  end
  local now = core.now()
  if not s.token or s.expires - now < RENEW_BEFORE then
    s.expires = math.floor(now) + math.floor(self.token_ttl)
    s.token = core.sas_token(self.id_scope .. "/registrations/" .. self.registration_id,
      s.key, s.expires, "registration")
  end
  return s.token
end

local function url(self, path)
  -- every part was checked in new() to hold only characters safe in a URL
  return string.format("%s/%s/registrations/%s%s?api-version=%s", self.endpoint, self.id_scope,
    self.registration_id, path, self.api_version)
end

local function body_for(self, payload)
  local doc = { registrationId = self.registration_id }
  if payload ~= nil then
    if type(payload) ~= "table" then
      check.fail("payload must be a table (sent as a JSON object), got " .. type(payload), 3)
    end
    for k in pairs(payload) do
      if type(k) ~= "string" then
        check.fail("payload must be a JSON object: every key a string (got a " .. type(k) .. " key)", 3)
      end
    end
    doc.payload = payload
  end
  local ok, body = pcall(json.encode, doc)
  if not ok then
    check.fail("payload cannot be sent as JSON: " .. tostring(body), 3)
  end
  if #body > MAX_BODY_BYTES then
    check.fail(string.format("payload too large: the request would be %d bytes, DPS accepts at most %d",
      #body, MAX_BODY_BYTES), 3)
  end
  return body
end

-- One exchange: returns decoded JSON and meta, or nil, message, info.
-- `timeout` (optional) caps this request, for callers with a deadline.
-- The public methods have checked that the client is open.
function Client:_exchange(step, method, path, body, timeout)
  local headers = {
    ["accept"] = "application/json",
    ["authorization"] = authorization(self),
  }
  if body then
    headers["content-type"] = "application/json; charset=utf-8"
  end
  local status, resp_headers, resp_body = self.session:request(method, url(self, path), headers, body,
    timeout and math.min(timeout, self.timeout) or nil)
  if not status then
    return errors.transport(step, resp_headers, resp_body)
  end
  local retry_after = resp_headers["retry-after"] and core.retry_after(resp_headers["retry-after"]) or nil
  local decoded
  if resp_body ~= "" then
    local ok, value = pcall(json.decode, resp_body)
    decoded = ok and value or nil
  end
  if status < 200 or status > 299 then
    return errors.service(step, status, resp_headers, decoded, retry_after)
  end
  if type(decoded) ~= "table" then
    return errors.protocol(step, string.format("HTTP %d with a body that is not a JSON object (%s, %d bytes)",
      status, tostring(resp_headers["content-type"]), #resp_body), status)
  end
  return decoded, { status = status, retry_after = retry_after, headers = resp_headers }
end

--- Register the device (`PUT …/register`).
-- @tparam[opt] table payload custom data, sent as the JSON object `payload`
-- @tparam[opt] number timeout seconds for this request (at most the client's `timeout`)
-- @treturn table RegistrationOperationStatus (`operationId`, `status`, `registrationState`)
-- @treturn table `{ status, retry_after, headers }`
function Client:register(payload, timeout)
  open_session(self)
  return self:_exchange("register", "PUT", "/register", body_for(self, payload), timeout)
end

--- Look up a registration operation (`GET …/operations/{id}`).
-- @tparam string operation_id from `register`
-- @tparam[opt] number timeout seconds for this request (at most the client's `timeout`)
-- @treturn table RegistrationOperationStatus
-- @treturn table `{ status, retry_after, headers }`
function Client:operation_status(operation_id, timeout)
  open_session(self)
  check.nonempty_string(operation_id, "operation_id")
  return self:_exchange("operation_status", "GET", "/operations/" .. core.url_encode(operation_id), nil, timeout)
end

--- Look up the device's registration without registering again
-- (`POST …/registrations/{id}`, Device Registration Status Lookup).
-- @tparam[opt] number timeout seconds for this request (at most the client's `timeout`)
-- @treturn table DeviceRegistrationResult (`assignedHub`, `deviceId`, `status`, …)
-- @treturn table `{ status, retry_after, headers }`
function Client:registration_status(timeout)
  open_session(self)
  return self:_exchange("registration_status", "POST", "", body_for(self, nil), timeout)
end

--- Register and poll until the service decides; see `dps.poll`.
-- @tparam[opt] table opts `payload` (table), `timeout` (overall seconds, default 60)
-- @treturn table the assigned `registrationState` (`assignedHub`, `deviceId`, …)
-- @treturn table the final RegistrationOperationStatus
function Client:provision(opts)
  open_session(self)
  return require("dps.poll").provision(self, opts or {})
end

--- Connection statistics: `{ requests = n, connects = n }`.
function Client:stats()
  return open_session(self):stats()
end

--- Close the HTTPS session. Safe to call more than once.
function Client:close()
  if self.session then
    self.session:close()
    self.session = nil
  end
  local s = secrets[self]
  if s then
    s.key, s.token = nil, nil
  end
  return true
end
Client.__close = Client.close

return Client
