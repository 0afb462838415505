-- Certificate issuance of the DPS emulator (DPS certificate management,
-- shared/docs/dps-cert-issuance.md): reading and checking the `csr` of a
-- register body, issuing a leaf from the emulator's issuing CA, and the
-- issuance faults of the specs. See README.md "Certificate issuance".
--
-- Independent of the project's dps.core on purpose: the request is split
-- by a small DER reader here, its signature checked with luaossl (which has
-- no X509_REQ_verify), and the leaf made with luaossl.
local bignum = require "openssl.bignum"
local digest = require "openssl.digest"
local extension = require "openssl.x509.extension"
local name_mod = require "openssl.x509.name"
local pkey = require "openssl.pkey"
local rand = require "openssl.rand"
local x509 = require "openssl.x509"
local x509_csr = require "openssl.x509.csr"
local util = require "emu_util"

local M = {}

-- The faults a scenario's `issuance` queue may name (one per issuance).
M.FAULTS = {
	no_chain = true,      -- the final state has no issuedCertificateChain
	empty_chain = true,   -- issuedCertificateChain: []
	wrong_key = true,     -- the leaf is issued for another key than the request's
	garbage = true,       -- every element is not base64
	not_der = true,       -- every element is base64 of bytes that are no certificate
	long_chain = true,    -- 100 certificates: leaf, issuing CA, then the root 98 times
	reversed = true,      -- root, issuing CA, leaf (the order one preview middleware documents)
	expired = true,       -- a leaf whose validity ended a day ago
}

-- DER object identifiers (contents octets) this file looks for.
local OID = {
	ec_public_key = "\42\134\72\206\61\2\1",      -- 1.2.840.10045.2.1
	rsa = "\42\134\72\134\247\13\1\1\1",           -- 1.2.840.113549.1.1.1
	p256 = "\42\134\72\206\61\3\1\7",              -- 1.2.840.10045.3.1.7
	p384 = "\43\129\4\0\34",                       -- 1.3.132.0.34
}
local CURVE_OF = { [OID.p256] = "P-256", [OID.p384] = "P-384" }
local DIGEST_OF = {
	["\42\134\72\206\61\4\3\2"] = "sha256", -- ecdsa-with-SHA256
	["\42\134\72\206\61\4\3\3"] = "sha384", -- ecdsa-with-SHA384
	["\42\134\72\206\61\4\3\4"] = "sha512", -- ecdsa-with-SHA512
}

-- One DER TLV at position i of s: tag, first content position, position
-- after the contents; nil when it does not fit (lengths of 1-3 bytes).
local function tlv(s, i)
	local tag, len = s:byte(i, i + 1)
	if not len then return nil end
	local start = i + 2
	if len >= 0x80 then
		local n = len - 0x80
		if n < 1 or n > 3 then return nil end
		len = 0
		for k = 0, n - 1 do
			local b = s:byte(start + k)
			if not b then return nil end
			len = len * 256 + b
		end
		start = start + n
	end
	if start + len - 1 > #s then return nil end
	return tag, start, start + len
end

-- The children of the constructed TLV whose contents are s[from, to):
-- a list of { tag, start, stop, raw } (raw: the whole TLV); nil when broken.
local function children(s, from, to)
	local out, i = {}, from
	while i < to do
		local tag, start, stop = tlv(s, i)
		if not tag or stop > to then return nil end
		out[#out + 1] = { tag = tag, start = start, stop = stop, raw = s:sub(i, stop - 1) }
		i = stop
	end
	return out
end

local function content(s, node)
	return s:sub(node.start, node.stop - 1)
end

local function bad(message)
	return nil, "csr: " .. message
end

--- Read and check the `csr` of a register body for `registration_id`
-- under an enrollment's `policy` ({ curves = {…} }). Returns
-- { public_key = luaossl pkey, curve = "P-384"|"P-256", digest = "sha384"… }
-- or nil and what is wrong (for the 400 answer).
function M.check(text, registration_id, policy)
	if type(text) ~= "string" then return bad("must be a string (base64 of a DER PKCS#10 request)") end
	if text:find("-----BEGIN", 1, true) then return bad("must be base64 of DER, without PEM armour") end
	local der = util.b64decode(text)
	if not der or #der == 0 then return bad("is not base64") end
	-- CertificationRequest ::= SEQUENCE { info, signatureAlgorithm, signature BIT STRING }
	local tag, start, stop = tlv(der, 1)
	local top = tag == 0x30 and stop == #der + 1 and children(der, start, stop)
	if not top or #top ~= 3 or top[1].tag ~= 0x30 or top[2].tag ~= 0x30 or top[3].tag ~= 0x03 then
		return bad("is not a DER PKCS#10 certificate request")
	end
	-- CertificationRequestInfo ::= SEQUENCE { version, subject, subjectPKInfo, attributes }
	local info = children(der, top[1].start, top[1].stop)
	local spki = info and info[3] and info[3].tag == 0x30 and children(der, info[3].start, info[3].stop)
	local key_alg = spki and spki[1] and spki[1].tag == 0x30 and children(der, spki[1].start, spki[1].stop)
	if not key_alg or not key_alg[1] or key_alg[1].tag ~= 0x06 then
		return bad("is not a DER PKCS#10 certificate request")
	end
	local key_oid = content(der, key_alg[1])
	if key_oid == OID.rsa then return bad("has an RSA key: RSA keys are not supported") end
	local curve = key_oid == OID.ec_public_key and key_alg[2] and key_alg[2].tag == 0x06
		and CURVE_OF[content(der, key_alg[2])]
	if not curve then return bad("has a key that is not EC on P-384 or P-256") end
	local alg = children(der, top[2].start, top[2].stop)
	local digest_name = alg and alg[1] and alg[1].tag == 0x06 and DIGEST_OF[content(der, alg[1])]
	if not digest_name then return bad("is not signed with ECDSA (SHA-256, SHA-384 or SHA-512)") end
	local sig = content(der, top[3])
	if sig:byte(1) ~= 0 then return bad("has a malformed signature") end
	sig = sig:sub(2)
	local allowed = false
	for _, c in ipairs(policy.curves) do allowed = allowed or c == curve end
	if not allowed then
		return bad("has a " .. curve .. " key; the enrollment's certificate policy allows "
			.. table.concat(policy.curves, ", "))
	end
	local ok, req = pcall(x509_csr.new, der, "DER")
	if not ok then return bad("is not a DER PKCS#10 certificate request") end
	local public_key = req:getPublicKey()
	local verified, result = pcall(public_key.verify, public_key, sig, digest.new(digest_name):update(top[1].raw))
	if not verified or result ~= true then return bad("signature does not verify") end
	local cn, count = nil, 0
	for k, v in req:getSubject():each() do
		if k == "CN" then cn, count = v, count + 1 end
	end
	if count ~= 1 or cn ~= registration_id then
		return bad("subject CN must be the registration ID '" .. registration_id .. "'")
	end
	return { public_key = public_key, curve = curve, digest = digest_name }
end

local function random_serial()
	local bytes = rand.bytes(16)
	-- positive and never zero: the first byte is 0x01-0x7f
	bytes = string.char(bytes:byte(1) % 127 + 1) .. bytes:sub(2)
	return bignum.fromBinary(bytes)
end

--- Issue a leaf for `registration_id` and the checked request `req`
-- from `issuance` ({ ca = x509, ca_key = pkey, root = x509 }), valid
-- `days` days from `now` (negative `offset` days moves both dates back).
function M.leaf(issuance, registration_id, public_key, days, now, offset)
	local crt = x509.new()
	local start = now + (offset or 0) * 86400
	crt:setVersion(3)
	crt:setSerial(random_serial())
	local subject = name_mod.new()
	subject:add("CN", registration_id)
	crt:setSubject(subject)
	crt:setIssuer(issuance.ca:getSubject())
	crt:setLifetime(math.floor(start), math.floor(start + days * 86400))
	crt:setPublicKey(public_key)
	crt:setBasicConstraints{ CA = false }
	crt:setBasicConstraintsCritical(true)
	crt:addExtension(extension.new("keyUsage", "critical,digitalSignature"))
	crt:addExtension(extension.new("extendedKeyUsage", "clientAuth"))
	crt:addExtension(extension.new("subjectKeyIdentifier", "hash", { subject = crt }))
	crt:addExtension(extension.new("authorityKeyIdentifier", "keyid:always", { issuer = issuance.ca }))
	assert(crt:sign(issuance.ca_key, "sha384"))
	return crt
end

local function b64(crt)
	return util.b64encode(crt:tostring("DER"))
end

--- The issuedCertificateChain of a checked request: leaf, issuing CA, root
-- (base64 DER), shaped by `fault` (M.FAULTS; nil: none). Returns the chain
-- (nil for no_chain) and the leaf as issued (nil when none was).
function M.issue(issuance, registration_id, req, policy, fault, now)
	if fault == "no_chain" then return nil, nil end
	local key = req.public_key
	if fault == "wrong_key" then
		key = pkey.new{ type = "EC", curve = req.curve == "P-256" and "prime256v1" or "secp384r1" }
	end
	local leaf = fault == "expired" and M.leaf(issuance, registration_id, key, 1, now, -2)
		or M.leaf(issuance, registration_id, key, policy.validity_days, now)
	local chain = { b64(leaf), b64(issuance.ca), b64(issuance.root) }
	if fault == "empty_chain" then
		chain = {}
	elseif fault == "garbage" then
		chain = { "!!! not base64 !!!", "%%%", "=" }
	elseif fault == "not_der" then
		chain = { util.b64encode(rand.bytes(300)), util.b64encode("not a certificate") }
	elseif fault == "long_chain" then
		while #chain < 100 do chain[#chain + 1] = chain[3] end
	elseif fault == "reversed" then
		chain = { chain[3], chain[2], chain[1] }
	end
	return chain, leaf
end

return M
