--- The device request builder (internal): everything one device's requests
-- carry — identity, key, SAS tokens, URLs, headers and bodies — for every
-- DPS and IoT Hub route, and no transport. It is the one place that signs.
--
--    local b = request.new{ id_scope = scope, registration_id = "dev-01", key = key,
--                           endpoint = "https://global.azure-devices-provisioning.net" }
--    local req = b:dps_request("register", rt.now(), nil, request.body("dev-01", payload))
--    -- req = { step, method, url, headers, body }: hand it to any transport
--    b:assign("hub-a.azure-devices.net", "dev-01")
--    local msg = b:hub_request({ step = "send", method = "POST", path = "/messages/events",
--                        to = "/messages/events", body = "…" }, rt.now())
--
-- Every request is signed at the wall-clock time the driver passes plus the
-- builder's `clock_offset` (learnt from a 401's `Date`: `dps.clock`); a
-- token is kept until `RENEW_BEFORE` seconds before it expires. Keys and
-- tokens live out of sight (never on the builder's table), so a builder,
-- or a client holding one, can be printed or serialised without showing
-- them; `forget` drops them.
--
-- The option checks return a problem (nil when good); the public functions
-- that use them raise it.
-- @module dps.request
local core = require "dps.core"
local check = require "dps.check"
local json = require("cjson").new()

local request = {}

request.RENEW_BEFORE = 60 -- seconds: a token this close to expiry is renewed
request.DPS_API_VERSION = "2021-06-01"
request.HUB_API_VERSION = "2021-04-12"
request.DEFAULT_TOKEN_TTL = 3600
request.MAX_DPS_BODY = 96 * 1024 -- the service refuses larger requests

--- The attestation options, by name and type (one list for every entry point).
request.ATTESTATION = {
  symmetric_key = "string", group_key = "string",
  cert_file = "string", key_file = "string", key_password = "string", cert = "string", key = "string",
}

-- Checks ----------------------------------------------------------------

--- `https://host[:port]` (a trailing slash dropped), or nil and a problem.
function request.endpoint(endpoint, name)
  local host = type(endpoint) == "string" and endpoint:match("^[Hh][Tt][Tt][Pp][Ss]://([%w%.%-%[%]:]+)/?$")
  if not host then
    return nil, string.format("%s must be https://host[:port], got %q", name or "endpoint", tostring(endpoint))
  end
  return "https://" .. host
end

--- The attestation's problem, or nil: exactly one attestation
-- (`symmetric_key`, `group_key`, or a certificate with its key, by the C
-- core's rule), base64 keys, and an `api_version` safe in a URL (`example`
-- shows one).
-- @treturn nil|string problem
-- @treturn boolean whether a certificate is the attestation
function request.attestation_problem(opts, example)
  local has_cert = opts.cert_file ~= nil or opts.cert ~= nil
  local given = (opts.symmetric_key and 1 or 0) + (opts.group_key and 1 or 0) + (has_cert and 1 or 0)
  if given ~= 1 then
    return "give exactly one attestation: symmetric_key, group_key, or cert_file/cert", has_cert
  end
  local problem = core.credentials_problem(opts)
  if problem then
    return problem, has_cert
  end
  for _, name in ipairs({ "group_key", "symmetric_key" }) do
    problem = opts[name] and core.key_problem(opts[name])
    if problem then
      return string.format("%s is not base64: it %s", name, problem), has_cert
    end
  end
  if opts.api_version ~= nil and not opts.api_version:match("^[%w%.%-]+$") then
    return "api_version must look like " .. example, has_cert
  end
  return check.seconds(opts.token_ttl, "token_ttl", true), has_cert
end

--- The device key of a symmetric-key attestation (checked by
-- `attestation_problem`): `symmetric_key`, or the key derived from
-- `group_key` for `registration_id`; nil with a certificate.
function request.device_key(opts, registration_id)
  if opts.group_key then
    return core.derive_key(opts.group_key, registration_id)
  end
  return opts.symmetric_key
end

--- The JSON body of a register or status lookup: `registrationId`, and
-- `payload` when given (and a register's `csr`: base64 DER of a PKCS#10
-- request, for certificate issuance). Returns the text, or nil and a
-- problem (a payload that is no JSON object, or a request over the
-- service's 96 KB).
function request.body(registration_id, payload, csr)
  local doc = { registrationId = registration_id, csr = csr }
  if payload ~= nil then
    if type(payload) ~= "table" then
      return nil, "payload must be a table (sent as a JSON object), got " .. type(payload)
    end
    for k in pairs(payload) do
      if type(k) ~= "string" then
        return nil, "payload must be a JSON object: every key a string (got a " .. type(k) .. " key)"
      end
    end
    doc.payload = payload
  end
  local ok, body = pcall(json.encode, doc)
  if not ok then
    return nil, "payload cannot be sent as JSON: " .. tostring(body)
  end
  if #body > request.MAX_DPS_BODY then
    return nil, string.format("payload too large: the request would be %d bytes, DPS accepts at most %d",
      #body, request.MAX_DPS_BODY)
  end
  return body
end

-- The builder -------------------------------------------------------------

local Builder = {}
Builder.__index = Builder

-- Keys and tokens, out of sight: builder → { key, credential, tokens = { resource → { token, expires } } }.
local secrets = setmetatable({}, { __mode = "k" })

--- A builder for one device (its options already checked).
-- @tparam table opts `registration_id`; for DPS `id_scope`, `endpoint`,
--   `api_version`; for the hub `hub` (host), `device_id`, `hub_endpoint`
--   (where to connect instead of `https://{hub}`: tokens still name the
--   hub), `hub_api_version`; `key` (the device key, base64; nil with a
--   certificate), `credential` (what an assignment cache matches),
--   `token_ttl`, `clock_offset`
-- @treturn Builder
function request.new(opts)
  local self = setmetatable({
    id_scope = opts.id_scope,
    registration_id = opts.registration_id,
    endpoint = opts.endpoint,
    api_version = opts.api_version or request.DPS_API_VERSION,
    hub_endpoint = opts.hub_endpoint,
    hub_api_version = opts.hub_api_version or request.HUB_API_VERSION,
    token_ttl = opts.token_ttl or request.DEFAULT_TOKEN_TTL,
    clock_offset = opts.clock_offset or 0,
    x509 = opts.key == nil,
  }, Builder)
  secrets[self] = { key = opts.key, credential = opts.credential, tokens = {} }
  if opts.hub then
    self:assign(opts.hub, opts.device_id)
  end
  return self
end

function Builder:__tostring()
  return string.format("dps.request(%s)", tostring(self.registration_id or self.device_id))
end

--- Sign from now on with the local clock plus `offset` seconds; drops the
-- tokens signed with the old clock.
function Builder:set_clock_offset(offset)
  if offset ~= self.clock_offset then
    self.clock_offset = offset
    local s = secrets[self]
    if s then s.tokens = {} end
  end
end

--- Talk to this hub as this device from now on (a new assignment); drops
-- the hub token.
function Builder:assign(host, device_id)
  local s = secrets[self]
  if s and self.hub_resource then s.tokens[self.hub_resource] = nil end
  self.hub, self.device_id = host, device_id
  self.hub_resource = host .. "/devices/" .. device_id
end

--- Whether the builder holds a key (false with a certificate, or once forgotten).
function Builder:has_key()
  local s = secrets[self]
  return s ~= nil and s.key ~= nil
end

--- What an assignment cache must match (`dps.cache`): never a key.
function Builder:identity()
  local s = secrets[self]
  return { id_scope = self.id_scope, registration_id = self.registration_id, endpoint = self.endpoint,
    credential = s and s.credential }
end

-- A token for `resource` at wall-clock `wall` (offset applied), kept until
-- near its expiry; nil with a certificate.
function Builder:_token(resource, key_name, wall)
  local s = secrets[self]
  if not s or not s.key then
    return nil
  end
  local t = s.tokens[resource]
  if not t or t.expires - wall < request.RENEW_BEFORE then
    local expires = math.floor(wall) + math.floor(self.token_ttl)
    t = { expires = expires, token = core.sas_token(resource, s.key, expires, key_name) }
    s.tokens[resource] = t
  end
  return t.token
end

local DPS_ROUTES = {
  register = { "PUT", "/register" },
  operation_status = { "GET", "/operations/" },
  registration_status = { "POST", "" },
}

--- A DPS request, signed at wall-clock `wall` plus the clock offset.
-- @tparam string step `register`, `operation_status` or `registration_status`
-- @tparam number wall the local wall clock (`runtime.now()`), without offset
-- @tparam[opt] string operation_id for `operation_status`
-- @tparam[opt] string body for `register` and `registration_status` (`request.body`)
-- @tparam[opt] string api_version instead of the builder's (a register with a CSR and its polls)
-- @treturn table `{ step, method, url, headers, body }`
function Builder:dps_request(step, wall, operation_id, body, api_version)
  local route = DPS_ROUTES[step]
  local path = route[2] .. (step == "operation_status" and core.url_encode(operation_id) or "")
  local resource = self.id_scope .. "/registrations/" .. self.registration_id
  local headers = {
    ["accept"] = "application/json",
    ["authorization"] = self:_token(resource, "registration", wall + self.clock_offset),
  }
  if body then
    headers["content-type"] = "application/json; charset=utf-8"
  end
  -- every part was checked to hold only characters safe in a URL
  return { step = step, method = route[1], body = body, headers = headers,
    url = string.format("%s/%s/registrations/%s%s?api-version=%s", self.endpoint, self.id_scope,
      self.registration_id, path, api_version or self.api_version) }
end

--- A hub request, signed at wall-clock `wall` plus the clock offset. The
-- device ID is percent-encoded into the path.
-- @tparam table call `{ step, method, path (after `/devices/{id}`), query
--   (extra, e.g. "&reject"), to (the `iothub-to` after the device), headers, body }`
-- @tparam number wall
-- @treturn table `{ step, method, url, headers, body }`
function Builder:hub_request(call, wall)
  local base = "/devices/" .. core.url_encode(self.device_id)
  local headers = {
    ["iothub-to"] = base .. call.to,
    ["authorization"] = self:_token(self.hub_resource, nil, wall + self.clock_offset),
  }
  for k, v in pairs(call.headers or {}) do headers[k] = v end
  return {
    step = call.step, method = call.method, body = call.body, headers = headers,
    url = string.format("%s%s%s?api-version=%s%s", self.hub_endpoint or ("https://" .. self.hub), base, call.path,
      self.hub_api_version, call.query or ""),
  }
end

--- A hub token for another agent, `ttl` seconds from wall-clock `wall`
-- plus the offset (never kept); nil with a certificate.
function Builder:hub_token(wall, ttl)
  local s = secrets[self]
  if not s or not s.key then
    return nil
  end
  local expires = math.floor(wall + self.clock_offset) + math.floor(ttl or self.token_ttl)
  return core.sas_token(self.hub_resource, s.key, expires, nil)
end

--- The device connection string for the assigned hub (it holds the key).
function Builder:connection_string()
  local s = secrets[self]
  local tail = s and s.key and ("SharedAccessKey=" .. s.key) or "x509=true"
  return string.format("HostName=%s;DeviceId=%s;%s", self.hub, self.device_id, tail)
end

--- Drop the key and the tokens (on close); when no builder holds a key
-- any more, the C core's signing context forgets its copy too
-- (`core.forget_keys`). Safe to call more than once.
function Builder:forget()
  local s = secrets[self]
  if s then
    s.key, s.tokens = nil, {}
  end
  secrets[self] = nil
  for _, other in pairs(secrets) do
    if other.key then return end
  end
  core.forget_keys()
end

return request
