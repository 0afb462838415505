--- The assignment cache: provision once, keep the assignment, and provision
-- again only when there is a reason (a new key, certificate, ID scope,
-- registration ID or endpoint; a cache that cannot be read; `force`).
--
-- The file is one JSON object:
--
--    { "format": 1, "written_at": "2026-11-29T20:41:43Z",
--      "id_scope": "0ne…", "registration_id": "dev-01",
--      "endpoint": "https://global.azure-devices-provisioning.net",
--      "credential": "sas:…" | "x509:…",
--      "state": { "assignedHub": "…", "deviceId": "…", … },
--      "hold": { "refusals": 2, "not_before": 1800000120 } }
--
-- `state` is the service's `registrationState`. `hold` (optional) is the
-- hub refusing this assignment: how many registrations again it refused,
-- and when the next one may go out (`dps.retry.refusal_hold`), so that a
-- command run from cron or a reboot obeys it too. `credential` is a
-- fingerprint: an HMAC-SHA256 of a fixed label keyed with the device key, or
-- of the leaf certificate keyed with the label; never a key, token or
-- password. It is written with `dps.core.write_atomic` (0600, temporary
-- file, fsync, rename, fsync of the folder).
--
-- The functions that decide are pure (`decode`, `encode`, `same`); `load`
-- and `store` are the small blocking wrappers around a file, so an event
-- loop can keep its own I/O and share the rules.
-- @module dps.cache
local core = require "dps.core"
local response = require "dps.response"
local json = require("cjson").new()

local cache = {}

--- The format version this library writes and reads.
cache.FORMAT = 1
--- A cache larger than this (bytes) is ignored.
cache.MAX_BYTES = 64 * 1024

local LABEL = "lua-azure-dps assignment cache fingerprint v1"

-- The fields that must match the device (in the order problems are named).
local IDENTITY = { "id_scope", "registration_id", "endpoint", "credential" }

-- Fields of the registration state that change with every registration
-- without changing the assignment (substatus says how the last one went):
-- not worth a rewrite of the flash.
local VOLATILE = { createdDateTimeUtc = true, lastUpdatedDateTimeUtc = true, etag = true, substatus = true }

--- The fingerprint of a symmetric device key: `"sas:"` and
-- base64(HMAC-SHA256(key, label)), computed in C (the decoded key is wiped).
-- @tparam string key the device key, base64
-- @treturn string
function cache.key_fingerprint(key)
  return "sas:" .. core.derive_key(key, LABEL)
end

--- The fingerprint of a client certificate: `"x509:"` and
-- base64(HMAC-SHA256(label, leaf)), where leaf is the base64 text of the
-- first certificate in the PEM (whitespace removed, so a file written again
-- with other line breaks matches).
-- @tparam string pem the certificate (chain), PEM
-- @treturn string
function cache.cert_fingerprint(pem)
  local body = pem:match("%-%-%-%-%-BEGIN CERTIFICATE%-%-%-%-%-(.-)%-%-%-%-%-END CERTIFICATE%-%-%-%-%-") or pem
  return "x509:" .. core.base64_encode(core.hmac_sha256(LABEL, (body:gsub("%s+", ""))))
end

local function assigned(state)
  return type(state) == "table" and type(state.assignedHub) == "string" and state.assignedHub ~= ""
    and type(state.deviceId) == "string" and state.deviceId ~= ""
end

-- A hold as the file may hold it: two whole numbers, else none.
local function valid_hold(hold)
  if type(hold) == "table" and type(hold.refusals) == "number" and hold.refusals >= 1
    and hold.refusals == math.floor(hold.refusals) and hold.refusals < 2 ^ 31
    and type(hold.not_before) == "number" and hold.not_before == math.floor(hold.not_before)
    and math.abs(hold.not_before) < 2 ^ 53 then
    return { refusals = hold.refusals, not_before = hold.not_before }
  end
  return nil
end

--- Whether a cache's text holds an assignment for this device (pure).
-- @tparam string text the file's contents
-- @tparam table identity `{ id_scope, registration_id, endpoint, credential }`
-- @treturn table the decoded cache (`state` is the registration state)
-- @return or nil, problem: why it cannot be used, in words (`"not JSON
--   (truncated?)"`, `"format 0; this library reads format 1"`, `"for another
--   device: registration_id differs"`, `"for another credential (a new key
--   or certificate)"`, …); never a key
function cache.decode(text, identity)
  if type(text) ~= "string" or text == "" then
    return nil, "empty"
  end
  local ok, doc = pcall(json.decode, text)
  if not ok then
    return nil, "not JSON (truncated?)"
  elseif type(doc) ~= "table" then
    return nil, "not a JSON object"
  end
  if doc.format ~= cache.FORMAT then
    return nil, string.format("format %s; this library reads format %d",
      type(doc.format) == "number" and string.format("%g", doc.format) or "missing", cache.FORMAT)
  end
  for _, field in ipairs(IDENTITY) do
    if doc[field] ~= identity[field] then
      if field == "credential" then
        return nil, "for another credential (a new key or certificate)"
      end
      return nil, "for another device: " .. field .. " differs"
    end
  end
  if not assigned(doc.state) then
    return nil, "no assignment in it (assignedHub and deviceId)"
  end
  -- the checks a DPS answer gets: a cache is no more trusted than the service
  local problem = response.document_problem("registration_status", doc.state)
  if problem then
    return nil, "an assignment a DPS answer could not hold: " .. problem
  end
  if not cache.encode(identity, doc.state, 0) then -- what store could never write is no cache either
    return nil, "an assignment holding a number JSON cannot hold (NaN, infinity)"
  end
  doc.hold = valid_hold(doc.hold) -- a broken hold is no hold; the assignment still counts
  return doc
end

--- The text of a cache (pure).
-- @tparam table identity as in `decode`
-- @tparam table state the registration state (`assignedHub`, `deviceId`, …)
-- @tparam number written_at seconds since the epoch
-- @tparam[opt] table hold `{ refusals, not_before }`
-- @treturn string JSON, or nil and a problem
function cache.encode(identity, state, written_at, hold)
  local doc = { format = cache.FORMAT, state = state, hold = valid_hold(hold),
    written_at = os.date("!%Y-%m-%dT%H:%M:%SZ", math.floor(written_at)) }
  for _, field in ipairs(IDENTITY) do
    doc[field] = identity[field]
  end
  local ok, text = pcall(json.encode, doc)
  if not ok then -- a value JSON cannot hold (NaN, infinity) in the state
    return nil, "the assignment holds a value JSON cannot hold (" .. tostring(text):gsub("^.-: ", "") .. ")"
  end
  return (text:gsub("\\/", "/")) .. "\n"
end

local function equal(a, b, skip)
  if type(a) ~= "table" or type(b) ~= "table" then
    return a == b
  end
  for k, v in pairs(a) do
    if not (skip and skip[k]) and not equal(v, b[k]) then return false end
  end
  for k in pairs(b) do
    if not (skip and skip[k]) and a[k] == nil then return false end
  end
  return true
end

--- Whether two decoded caches hold the same assignment for the same device:
-- everything but `written_at` and the state's timestamps, etag and
-- substatus (pure).
-- @tparam table a
-- @tparam table b
-- @treturn boolean
function cache.same(a, b)
  if not equal(a, b, { written_at = true, state = true }) then
    return false
  end
  return equal(a.state, b.state, VOLATILE)
end

--- Read a cache file (blocking). Only a file this user alone can have
-- written is read (`dps.core.read_private`): a regular file, not a symbolic
-- link, owned by the effective user (another user's is refused even for
-- root), with no permission bits for group or others, at most `MAX_BYTES`.
-- @tparam string path
-- @tparam table identity as in `decode`
-- @treturn table the decoded cache, when it is there and for this device
-- @return or nil, problem (nil problem: there is no file): why it is
--   ignored, e.g. `"a symbolic link"`, `"owned by uid 65534, not this user
--   (0)"`, `"readable or writable by group or others (mode 0644)"`
function cache.load(path, identity)
  local text, problem, info = core.read_private(path, cache.MAX_BYTES)
  if not text then
    if info.missing then
      return nil, nil -- no file (or no folder): nothing to say
    end
    return nil, problem
  end
  return cache.decode(text, identity)
end

--- Write a cache file unless it already holds the same assignment (blocking).
-- @tparam string path
-- @tparam table identity as in `decode`
-- @tparam table state the registration state
-- @tparam number now seconds since the epoch (for `written_at`)
-- @tparam[opt] table old the file's decoded cache, when it had a valid one
-- @tparam[opt] table hold as in `encode`
-- @treturn string `"written"` or `"unchanged"`
-- @return or nil, message, info (`kind` `config`): the file could not be
--   written; (`kind` `too_large`): the assignment, even without its
--   `payload`, is over `MAX_BYTES` (a state with a large `payload` is
--   written without it)
function cache.store(path, identity, state, now, old, hold)
  local text, problem = cache.encode(identity, state, now, hold)
  if not text then
    return nil, problem .. ": not written", { kind = "protocol", retryable = false }
  end
  if #text > cache.MAX_BYTES and state.payload ~= nil then
    -- what load would ignore is never written: the custom allocation's
    -- payload goes first (the assignment is what the cache is for)
    local trimmed = {}
    for k, v in pairs(state) do trimmed[k] = v end
    trimmed.payload = nil
    text = cache.encode(identity, trimmed, now, hold)
  end
  if #text > cache.MAX_BYTES then
    return nil, string.format("the assignment is %d bytes, over the cache's %d: not written", #text,
      cache.MAX_BYTES), { kind = "too_large", retryable = false }
  end
  if old and cache.same(old, json.decode(text)) then
    return "unchanged"
  end
  local ok, message, info = core.write_atomic(path, text)
  if not ok then
    return nil, message, info
  end
  return "written"
end

--- Keep `hold` (nil: none) in the cache at `path`, when it holds a valid
-- assignment for this device (blocking).
-- @return as `store`, or nil when there is no valid cache to keep it in
function cache.store_hold(path, identity, hold, now)
  local old = cache.load(path, identity)
  if not old then
    return nil
  end
  return cache.store(path, identity, old.state, now, old, hold)
end

return cache
