-- Attestation checks of the DPS emulator: SAS tokens (symmetric keys,
-- individual and group-derived) and client certificates (X.509).
-- See docs/dps-protocol.md §5.3, §6, §8, §12.1.
--
-- Every check returns a table { ok = bool, auth = "<log word>", ... }. On
-- success it also carries the enrollment that matched.
local hmac = require "openssl.hmac"
local store_mod = require "openssl.x509.store"
local util = require "emu_util"
local config = require "emu_config"

local M = {}

local function hmac_sha256(key, msg)
	return hmac.new(key, "sha256"):final(msg)
end

--- Derived device key of an enrollment group (raw bytes): HMAC-SHA256 keyed
-- with the decoded group key over the registration id.
function M.derive(group_key_raw, registration_id)
	return hmac_sha256(group_key_raw, registration_id)
end

--- Parse "SharedAccessSignature k=v&k=v…" (fields in any order). Values are
-- kept as sent. Returns fields or nil.
function M.parse_sas(header)
	local rest = header:match("^%s*SharedAccessSignature%s+(.-)%s*$")
	if not rest or rest == "" then return nil end
	local fields = {}
	for pair in (rest .. "&"):gmatch("([^&]*)&") do
		local k, v = pair:match("^([^=]+)=(.*)$")
		if not k or fields[k] then return nil end
		fields[k] = v
	end
	return fields
end

local function fail(auth, message)
	return { ok = false, auth = auth, message = message or "Unauthorized" }
end

--- Check an Authorization header for `{scope}/registrations/{registration_id}`.
function M.check_sas(cfg, header, scope, registration_id, now)
	local f = M.parse_sas(header)
	if not f or not f.sr or not f.sig or not f.se then
		return fail("malformed_token")
	end
	if f.skn and f.skn ~= "registration" then
		return fail("bad_skn")
	end
	if not f.se:match("^%d+$") then
		return fail("malformed_token")
	end
	if tonumber(f.se) <= now then
		return fail("expired")
	end
	local resource = scope .. "/registrations/" .. registration_id
	if util.url_decode(f.sr):lower() ~= resource:lower() then
		return fail("wrong_resource")
	end
	local sig = util.url_decode(f.sig)
	local to_sign = f.sr .. "\n" .. f.se
	local function matches(key)
		return util.equal_ct(util.b64encode(hmac_sha256(key, to_sign)), sig)
	end
	local ind = cfg.individual[registration_id:lower()]
	if ind and ind.keys then
		for _, key in ipairs(ind.keys) do
			if matches(key) then
				return { ok = true, auth = "sas", enrollment = ind, se = tonumber(f.se) }
			end
		end
	end
	for _, g in ipairs(cfg.groups) do
		for i, gkey in ipairs(g.keys) do
			-- the device's key is base64(derived); it signs with the raw bytes.
			-- Derived keys are remembered per group key and registration id.
			g.derived = g.derived or {}
			local cache = g.derived[i] or {}
			g.derived[i] = cache
			local derived = cache[registration_id]
			if not derived then
				derived = M.derive(gkey, registration_id)
				cache[registration_id] = derived
			end
			if matches(derived) then
				return { ok = true, auth = "sas", enrollment = g, se = tonumber(f.se) }
			end
		end
	end
	return fail("bad_signature")
end

local function store_of(certs)
	local s = store_mod.new()
	for _, c in ipairs(certs) do s:add(c) end
	return s
end

--- Check the client certificate (leaf x509 + chain sent by the client).
function M.check_x509(cfg, leaf, chain, registration_id)
	local bad = "Invalid certificate."
	local cn = config.cn_of(leaf)
	local der = leaf:tostring("DER")
	-- individual enrollment: exactly the configured certificate
	for _, e in pairs(cfg.individual) do
		if e.der and util.equal_ct(e.der, der) then
			if e.registration_id:lower() ~= registration_id:lower() then
				return fail("registration_id_mismatch", bad)
			end
			return { ok = true, auth = "x509", enrollment = e, cn = cn }
		end
	end
	-- group: chains (with the intermediates the client sent) to the group's CA
	for _, g in ipairs(cfg.x509_groups) do
		g.store = g.store or store_of(g.ca)
		local ok = g.store:verify(leaf, chain)
		if ok then
			if not cn or cn:lower() ~= registration_id:lower() then
				return fail("registration_id_mismatch", bad)
			end
			return { ok = true, auth = "x509", enrollment = g, cn = cn }
		end
	end
	return fail("untrusted_certificate", bad)
end

--- The hub's check of a certificate the emulator issued (certificate
-- issuance): the leaf chains to the issuance root through the issuing CA
-- (both trusted here, so a client that sends the leaf alone passes too), is
-- valid now, and its CN is the device's registration ID. nil when it is no
-- issued certificate (or the emulator issues none), else a result as
-- check_x509's.
function M.check_issued(cfg, leaf, chain, registration_id)
	local issuance = cfg.issuance
	if not issuance then return nil end
	issuance.store = issuance.store or store_of({ issuance.root, issuance.ca })
	if not issuance.store:verify(leaf, chain) then return nil end
	local cn = config.cn_of(leaf)
	if not cn or cn ~= registration_id then
		return fail("registration_id_mismatch", "Invalid certificate.")
	end
	return { ok = true, auth = "x509_issued", cn = cn }
end

--- Facts about a certificate, for registrationState.x509.certificateInfo.
-- "CN=leaf, O=org": RFC 4514 order, as .NET prints distinguished names
local function dn(name)
	local parts = {}
	for k, v in name:each() do table.insert(parts, 1, k .. "=" .. v) end
	return table.concat(parts, ", ")
end

function M.certificate_info(crt)
	local nb, na = crt:getLifetime()
	return {
		subjectName = dn(crt:getSubject()),
		sha1Thumbprint = crt:digest("sha1", "x"):upper(),
		sha256Thumbprint = crt:digest("sha256", "x"):upper(),
		issuerName = dn(crt:getIssuer()),
		notBeforeUtc = nb and util.utc(nb) or nil,
		notAfterUtc = na and util.utc(na) or nil,
		serialNumber = tostring(crt:getSerial()),
		version = crt:getVersion(),
	}
end

return M
