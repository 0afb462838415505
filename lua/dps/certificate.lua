--- Certificates the device earns (internal): DPS certificate issuance by
-- CSR. The device keeps an EC key and the certificate chain the service
-- issued for it in a folder of its own, and asks for a new one (a new key,
-- a new CSR, registering again) when there is none for this device, when the
-- one there is past `renew_at` of its validity, or when it has expired.
--
-- The folder holds `cert.pem` (the chain, leaf first) and `key.pem` (mode
-- 0600), each written with `dps.core.write_atomic`. A new pair is first
-- written whole beside them (`next-cert.pem`, `next-key.pem`), then over
-- them, then the `next-` files go: a crash at any instant leaves either the
-- old pair or the new one, and `usable` finishes an interrupted switch.
--
-- The checks return problems (nil when good); what the service sends that
-- cannot be used is kind `protocol`, never a raise.
-- @module dps.certificate
local core = require "dps.core"
local check = require "dps.check"

local certificate = {}

--- The api-version of a register that carries a CSR (preview).
certificate.API_VERSION = "2025-07-01-preview"
--- The most certificates a chain may hold.
certificate.MAX_CHAIN = 8
certificate.DEFAULT_CURVE, certificate.DEFAULT_RENEW_AT = "P-384", 0.8

--- The `certificate` option's fields and types.
certificate.OPTIONS = { dir = "string", curve = "string", renew_at = "number", api_version = "string",
  renew = "boolean" }

--- The misuse in a `certificate` option, or nil.
function certificate.problem(opts)
  local problem = check.options(opts, certificate.OPTIONS, "certificate") or check.string(opts.dir, "certificate.dir")
  if problem then return problem end
  if opts.curve ~= nil and opts.curve ~= "P-384" and opts.curve ~= "P-256" then
    return "certificate.curve must be \"P-384\" or \"P-256\", got " .. string.format("%q", opts.curve)
  end
  if opts.api_version ~= nil and not opts.api_version:match("^[%w%.%-]+$") then
    return "certificate.api_version must look like " .. certificate.API_VERSION
  end
  local r = opts.renew_at
  if r ~= nil and not (r > 0 and r < 1) then
    return "certificate.renew_at must be a share of the validity between 0 and 1, got " .. tostring(r)
  end
  return nil
end

local function path(dir, name)
  return dir .. "/" .. name
end

local function read(file)
  local f = io.open(file, "rb")
  if not f then return nil end
  local text = f:read(1024 * 1024)
  f:close()
  return text
end

-- The first certificate of a PEM chain, as cert_info reads it.
local function leaf_info(pem)
  return pem and core.cert_info(pem)
end

local function key_fingerprint(key_pem)
  local ok, facts = pcall(core.key_info, key_pem)
  return ok and facts and facts.public_key or nil
end

-- A pair that belongs together: the chain's leaf is for this key and this device.
local function pair_problem(key_pem, cert_pem, registration_id)
  if not key_pem or not cert_pem then
    return "none there"
  end
  local leaf, why = leaf_info(cert_pem)
  if not leaf then
    return "cert.pem cannot be read: " .. tostring(why)
  elseif leaf.public_key ~= key_fingerprint(key_pem) then
    return "cert.pem is not for key.pem"
  elseif leaf.cn ~= registration_id then
    return "the certificate is for " .. string.format("%q", tostring(leaf.cn)) .. ", not this device"
  end
  return nil, leaf
end

-- Finish a switch to a new pair that a crash interrupted (see above).
local function recover(dir, registration_id)
  local next_key, next_cert = read(path(dir, "next-key.pem")), read(path(dir, "next-cert.pem"))
  if next_key and next_cert and not pair_problem(next_key, next_cert, registration_id) then
    if read(path(dir, "key.pem")) ~= next_key then core.write_atomic(path(dir, "key.pem"), next_key) end
    if read(path(dir, "cert.pem")) ~= next_cert then core.write_atomic(path(dir, "cert.pem"), next_cert) end
  end
  os.remove(path(dir, "next-key.pem"))
  os.remove(path(dir, "next-cert.pem"))
end

--- What the folder holds for this device, and whether it is due for a new one.
-- @tparam table opts the `certificate` option (`dir`, `renew_at`; `renew`:
--   a new one now, whatever the one there)
-- @tparam string registration_id
-- @tparam number now wall-clock seconds (with the clock offset)
-- @treturn table `{ cert_file, key_file, not_before, not_after, serial }`
--   when there is a usable pair, else nil
-- @treturn string|nil why a new one is needed: `"none there"`, `"due for
--   renewal"`, `"expired"`, or what is wrong with the pair; nil when none is
function certificate.usable(opts, registration_id, now)
  local dir = opts.dir
  recover(dir, registration_id)
  local problem, leaf = pair_problem(read(path(dir, "key.pem")), read(path(dir, "cert.pem")), registration_id)
  if problem then
    return nil, problem
  end
  local facts = { cert_file = path(dir, "cert.pem"), key_file = path(dir, "key.pem"), not_before = leaf.not_before,
    not_after = leaf.not_after, serial = leaf.serial }
  if now >= leaf.not_after then
    return facts, "expired"
  elseif opts.renew then
    return facts, "renewal asked for"
  end
  local renew_at = opts.renew_at or certificate.DEFAULT_RENEW_AT
  if now >= leaf.not_before + renew_at * (leaf.not_after - leaf.not_before) then
    return facts, "due for renewal"
  end
  return facts, nil
end

--- A new key and its CSR for this device (the key stays in memory until
-- `store` writes it with the chain issued for it).
-- @treturn table `{ key = PEM, csr = base64 DER }`
function certificate.request(opts, registration_id)
  local key = core.ec_key(opts.curve or certificate.DEFAULT_CURVE)
  local csr, message, info = core.csr(key, registration_id)
  if not csr then
    return nil, message, info
  end
  return { key = key, csr = csr }
end

local function protocol(what)
  return nil, "issuedCertificateChain: " .. what, { kind = "protocol", retryable = false, step = "provision" }
end

-- base64 DER as PEM, 64 characters a line.
local function pem_of(b64)
  local lines = { "-----BEGIN CERTIFICATE-----" }
  for i = 1, #b64, 64 do lines[#lines + 1] = b64:sub(i, i + 63) end
  lines[#lines + 1] = "-----END CERTIFICATE-----"
  return table.concat(lines, "\n") .. "\n"
end

--- The chain the service issued, checked and ordered: the leaf found by the
-- device's key (whatever order the service used), then each issuer.
-- @tparam table pending from `request`
-- @param chain the registration state's `issuedCertificateChain`
-- @tparam string registration_id
-- @return the PEM text (leaf first) and the leaf's facts, or nil, message, info (kind `protocol`)
function certificate.chain(pending, chain, registration_id)
  if type(chain) ~= "table" or chain[1] == nil then
    return protocol("missing or empty")
  elseif #chain > certificate.MAX_CHAIN then
    return protocol(string.format("%d certificates; at most %d are taken", #chain, certificate.MAX_CHAIN))
  end
  local mine, certs, leaf = key_fingerprint(pending.key), {}, nil
  for i, b64 in ipairs(chain) do
    if type(b64) ~= "string" or #b64 > 64 * 1024 or b64:find("[^%w%+/=]") then
      return protocol(string.format("certificate %d is not base64 text", i))
    end
    local facts = core.cert_info(b64)
    if not facts then
      return protocol(string.format("certificate %d is not a certificate", i))
    end
    certs[i] = { b64 = b64, facts = facts }
    if facts.public_key == mine then leaf = leaf or certs[i] end
  end
  if not leaf then
    return protocol("no certificate in it is for the device's new key")
  elseif leaf.facts.cn ~= registration_id then
    return protocol(string.format("the certificate is for %q, not %q", tostring(leaf.facts.cn), registration_id))
  end
  local ordered, used, at = { leaf }, { [leaf] = true }, leaf
  while true do -- each issuer after its subject
    local issuer
    for _, c in ipairs(certs) do
      if not used[c] and c.facts.subject == at.facts.issuer then issuer = c break end
    end
    if not issuer then break end
    ordered[#ordered + 1], used[issuer], at = issuer, true, issuer
  end
  for _, c in ipairs(certs) do
    if not used[c] then ordered[#ordered + 1] = c end
  end
  local pem = {}
  for i, c in ipairs(ordered) do pem[i] = pem_of(c.b64) end
  return table.concat(pem), leaf.facts
end

--- Keep a new pair: written whole beside the old one, then over it (see above).
-- @tparam table opts the `certificate` option
-- @tparam table pending from `request`
-- @tparam string cert_pem from `chain`
-- @return true, or nil, message, info (kind `config`: a file could not be written)
function certificate.store(opts, pending, cert_pem)
  local dir = opts.dir
  for _, step in ipairs({ { "next-cert.pem", cert_pem }, { "next-key.pem", pending.key },
    { "key.pem", pending.key }, { "cert.pem", cert_pem } }) do
    local ok, message, info = core.write_atomic(path(dir, step[1]), step[2])
    if not ok then
      return nil, message, info
    end
  end
  os.remove(path(dir, "next-key.pem"))
  os.remove(path(dir, "next-cert.pem"))
  return true
end

--- The chain the service issued, checked, and the new pair kept (`chain`, then `store`).
-- @return `facts` of the new certificate (issued = true), or nil, message, info
function certificate.keep(opts, pending, chain, registration_id)
  local pem, leaf, info = certificate.chain(pending, chain, registration_id)
  if not pem then
    return nil, leaf, info
  end
  local ok, message
  ok, message, info = certificate.store(opts, pending, pem)
  if not ok then
    return nil, message, info
  end
  return certificate.facts({ cert_file = path(opts.dir, "cert.pem"), key_file = path(opts.dir, "key.pem"),
    not_after = leaf.not_after, serial = leaf.serial }, true)
end

--- What provisioning reports of a certificate: `{ cert_file, key_file,
-- not_after, serial, issued }`.
function certificate.facts(held, issued)
  return { cert_file = held.cert_file, key_file = held.key_file, not_after = held.not_after, serial = held.serial,
    issued = issued }
end

--- A registration state without its `issuedCertificateChain` (a copy).
function certificate.without_chain(state)
  local out = {}
  for k, v in pairs(state) do
    if k ~= "issuedCertificateChain" then out[k] = v end
  end
  return out
end

return certificate
