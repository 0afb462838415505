--- What a DPS client (`dps.client`) and a hub client (`dps.hub`) share
-- (internal): the rules of a device's attestation options, its key, the
-- HTTPS session it opens, and the SAS token it signs — kept out of the
-- client's own table, renewed a minute before it expires, and signed on the
-- server's clock when the local one was found off (`dps.clock`).
--
-- `who` names the public function in messages (`dps.new`, `dps.hub`);
-- misuse raises at `level` as `check.fail` counts it in the caller.
-- @module dps.device
local core = require "dps.core"
local check = require "dps.check"
local session = require "dps.session"

local device = {}

device.RENEW_BEFORE = 60 -- seconds: a token this close to expiry is renewed

--- `https://host[:port]` (a trailing slash dropped), else raises.
function device.endpoint(endpoint, who, level)
  local host = endpoint:match("^[Hh][Tt][Tt][Pp][Ss]://([%w%.%-%[%]:]+)/?$")
  if not host then
    check.fail(who .. ": endpoint must be https://host[:port], got " .. string.format("%q", endpoint), level + 1)
  end
  return "https://" .. host
end

--- The attestation and connection options: exactly one attestation
-- (`symmetric_key`, `group_key`, or a certificate with its key, by the C
-- core's one rule), an `api_version` safe in a URL (`example` shows one),
-- and positive seconds. Returns whether a certificate is the attestation.
function device.check(opts, who, level, example)
  level = level + 1
  local has_cert = opts.cert_file ~= nil or opts.cert ~= nil
  local attestations = (opts.symmetric_key and 1 or 0) + (opts.group_key and 1 or 0) + (has_cert and 1 or 0)
  if attestations ~= 1 then
    check.fail(who .. ": give exactly one attestation: symmetric_key, group_key, or cert_file/cert", level)
  end
  local problem = core.credentials_problem(opts)
  if problem then
    check.fail(who .. ": " .. problem, level)
  end
  if opts.api_version ~= nil and not opts.api_version:match("^[%w%.%-]+$") then
    check.fail(who .. ": api_version must look like " .. example, level)
  end
  for _, name in ipairs({ "timeout", "connect_timeout", "token_ttl" }) do
    if opts[name] ~= nil then check.seconds(opts[name], name, level) end
  end
  return has_cert
end

--- The device key of a symmetric-key attestation: `symmetric_key`, or the
-- key derived from `group_key` for `registration_id`; nil with a
-- certificate. The key rules are the C core's (decoded bytes wiped there).
function device.key(opts, registration_id, who, level)
  level = level + 1
  for _, name in ipairs({ "group_key", "symmetric_key" }) do
    local problem = opts[name] and core.key_problem(opts[name])
    if problem then
      check.fail(string.format("%s: %s is not base64: it %s", who, name, problem), level)
    end
  end
  if opts.group_key then
    return core.derive_key(opts.group_key, registration_id)
  end
  return opts.symmetric_key
end

--- The HTTPS session of a client (`dps.session`): one kept-alive TLS
-- connection, with the client certificate when there is one.
function device.session(opts, timeout, connect_timeout)
  return session.new({
    ca_file = opts.ca_file, ca_path = opts.ca_path, proxy = opts.proxy, user_agent = opts.user_agent,
    timeout = timeout, connect_timeout = connect_timeout, max_body = opts.max_body,
    cert_file = opts.cert_file, cert = opts.cert, key_file = opts.key_file, key = opts.key,
    key_password = opts.key_password,
  })
end

--- The owner's open session; raises `closed` (the message) at `level`
-- (default 3: the caller of the method that asks) once it is closed.
function device.open_session(owner, closed, level)
  if not owner.session then
    error(closed, level or 3)
  end
  return owner.session
end

--- Close the owner's session (if open) and drop its key and token.
function device.close(owner)
  if owner.session then
    owner.session:close()
    owner.session = nil
  end
  device.forget(owner)
end

-- Keys and tokens live here, not on the client's table, so they never show
-- up when a client is printed, dumped or serialised.
local secrets = setmetatable({}, { __mode = "k" })

--- Keep `key` (nil with a certificate) and what else must stay out of sight
-- (`extra`: fields such as a credential's fingerprint) for `owner`.
function device.keep(owner, key, extra)
  local s = { key = key }
  for k, v in pairs(extra or {}) do s[k] = v end
  secrets[owner] = s
  return s
end

--- What was kept for `owner` (nil once forgotten).
function device.secrets(owner)
  return secrets[owner]
end

--- The `Authorization` header at wall-clock time `now` (the clock offset
-- applied by the caller): the token `sign(key, expires)` made, renewed
-- within `RENEW_BEFORE` of expiry (`owner.token_ttl` long); nil with a
-- certificate, where the TLS handshake authenticates the device.
function device.authorization(owner, now, sign)
  local s = secrets[owner]
  if not s or not s.key then
    return nil
  end
  if not s.token or s.expires - now < device.RENEW_BEFORE then
    s.expires = math.floor(now) + math.floor(owner.token_ttl)
    s.token = sign(s.key, s.expires)
  end
  return s.token
end

--- Sign from now on with the local clock plus `offset` seconds; drops the
-- token signed with the old clock.
function device.set_clock_offset(owner, offset, who)
  if type(offset) ~= "number" or offset ~= offset or math.abs(offset) == math.huge then
    error(who .. ": set_clock_offset: offset must be a number of seconds", 3)
  end
  if offset ~= owner.clock_offset then
    owner.clock_offset = offset
    local s = secrets[owner]
    if s then s.token = nil end
  end
end

--- Drop what was kept for `owner`: its key and token (on close).
function device.forget(owner)
  local s = secrets[owner]
  if s then
    s.key, s.token = nil, nil
  end
  secrets[owner] = nil
end

return device
