-- Keys and certificates a device earns (issue 24): core.ec_key, core.csr,
-- core.key_info and core.cert_info on the build's crypto backend, judged by
-- the openssl command.  Run it on the mbedTLS build too:
--   make CRYPTO=mbedtls core OUT=build/mbed
--   busted --lua=lua5.4 --cpath='./build/mbed/?.so' spec/csr_spec.lua
-- When that build is there, the last block also compares the two backends'
-- answers for the same key and certificate (a child Lua on the other build).
local core = require "dps.core"
local base64 = require "spec.support.base64"
local shell = require "spec.support.shell"

local backend = core.version().backend
local q = shell.quote

local dir

-- openssl ARGS in the spec's folder; its output (stderr too), raising when it fails.
local function openssl(args)
  local out, ok = shell.run("cd " .. q(dir) .. " && openssl " .. args .. " 2>&1")
  assert(ok, "openssl " .. args .. ": " .. tostring(out))
  return out
end

local function write(name, text)
  return shell.write(dir .. "/" .. name, text)
end

local function read(name)
  return assert(shell.read(dir .. "/" .. name), name)
end

-- A CSR as core.csr gives it (base64 of DER) made PEM, written to NAME.
local function write_csr(name, b64)
  local lines = {}
  for i = 1, #b64, 64 do lines[#lines + 1] = b64:sub(i, i + 63) end
  return write(name, "-----BEGIN CERTIFICATE REQUEST-----\n" .. table.concat(lines, "\n")
    .. "\n-----END CERTIFICATE REQUEST-----\n")
end

-- Seconds since 1970 of an openssl date ("Dec 31 23:59:59 2099 GMT"), by date(1).
local function epoch_of(text)
  local out, ok = shell.run("date -u -d " .. q(text) .. " +%s")
  assert(ok, out)
  return tonumber(out)
end

-- base64(SHA-256(SubjectPublicKeyInfo DER)) of a PEM key or certificate, by openssl.
local function spki_fingerprint(file, is_cert)
  local extract = is_cert and "x509 -in " .. q(file) .. " -noout -pubkey | openssl pkey -pubin"
    or "pkey -in " .. q(file) .. " -pubout"
  return (openssl(extract .. " -outform DER | openssl dgst -sha256 -binary | openssl base64 -A"):gsub("%s+$", ""))
end

-- A failure as the C core returns it: nil, a message, { kind = KIND }.
local function assert_failure(kind, ok, message, info)
  assert.is_nil(ok)
  assert.are.equal("string", type(message))
  assert.are.equal("table", type(info))
  assert.are.equal(kind, info.kind, message)
  return message
end

describe("keys and certificate requests (" .. backend .. ")", function()
  setup(function()
    dir = shell.tmpdir("dps-csr")
  end)
  teardown(function()
    shell.run("rm -rf " .. q(dir))
  end)

  describe("core.ec_key", function()
    it("makes a P-384 key by default, SEC1 PEM, that openssl reads", function()
      local pem = assert(core.ec_key())
      assert.truthy(pem:find("^%-%-%-%-%-BEGIN EC PRIVATE KEY%-%-%-%-%-\n"), pem:sub(1, 40))
      assert.truthy(pem:find("\n%-%-%-%-%-END EC PRIVATE KEY%-%-%-%-%-\n$"))
      write("k384.pem", pem)
      local text = openssl("ec -in k384.pem -noout -text")
      assert.truthy(text:find("ASN1 OID: secp384r1", 1, true), text)
      assert.are_not.equal(pem, core.ec_key("P-384"))
    end)

    it("makes a P-256 key", function()
      write("k256.pem", assert(core.ec_key("P-256")))
      local text = openssl("ec -in k256.pem -noout -text")
      assert.truthy(text:find("ASN1 OID: prime256v1", 1, true), text)
    end)

    it("raises on any other curve", function()
      for _, curve in ipairs({ "P-521", "p-384", "secp384r1", "", 384, true, {} }) do
        local ok, err = pcall(core.ec_key, curve)
        assert.is_false(ok)
        assert.truthy(tostring(err):find('dps.core.ec_key: curve must be "P-384" or "P-256"', 1, true), err)
      end
    end)
  end)

  describe("core.csr", function()
    local k384, k256
    setup(function()
      k384 = assert(core.ec_key("P-384"))
      k256 = assert(core.ec_key("P-256"))
      write("csr384.key", k384)
    end)

    it("signs a P-384 request with SHA-384 that openssl verifies, subject CN exactly the ID", function()
      local csr = assert(core.csr(k384, "dev-01"))
      assert.truthy(csr:find("^[%w+/]+=*$"), "plain base64, no armour, no line breaks")
      write_csr("r384.pem", csr)
      local verify = openssl("req -in r384.pem -verify -noout")
      assert.truthy(verify:find("verify OK", 1, true), verify)
      local text = openssl("req -in r384.pem -noout -text")
      assert.truthy(text:find("ecdsa-with-SHA384", 1, true), text)
      assert.truthy(text:find("NIST CURVE: P-384", 1, true), text)
      assert.are.equal("subject=CN=dev-01\n", openssl("req -in r384.pem -noout -subject -nameopt RFC2253"))
      -- the request carries the key's public key
      assert.are.equal(openssl("pkey -in csr384.key -pubout"), openssl("req -in r384.pem -noout -pubkey"))
    end)

    it("signs a P-256 request with SHA-256", function()
      write_csr("r256.pem", assert(core.csr(k256, "dev-02")))
      assert.truthy(openssl("req -in r256.pem -verify -noout"):find("verify OK", 1, true))
      local text = openssl("req -in r256.pem -noout -text")
      assert.truthy(text:find("ecdsa-with-SHA256", 1, true), text)
      assert.is_nil(text:find("SHA384", 1, true))
      assert.truthy(text:find("NIST CURVE: P-256", 1, true), text)
    end)

    it("takes every registration ID as it is, up to 128 characters, as a UTF8String", function()
      for _, id in ipairs({ "a", "Dev.01:x_y-Z", string.rep("d", 128) }) do
        write_csr("rid.pem", assert(core.csr(k256, id)))
        assert.are.equal("subject=CN=" .. id .. "\n", openssl("req -in rid.pem -noout -subject -nameopt RFC2253"))
        local parsed = openssl("req -in rid.pem -outform DER | openssl asn1parse -inform DER")
        assert.truthy(parsed:find("UTF8STRING%s*:" .. id:gsub("%p", "%%%0")), parsed)
      end
    end)

    it("reads PKCS#8 keys and encrypted ones with their password", function()
      openssl("pkey -in csr384.key -out pkcs8.key")
      assert.truthy(read("pkcs8.key"):find("BEGIN PRIVATE KEY", 1, true))
      write_csr("r8.pem", assert(core.csr(read("pkcs8.key"), "dev-8")))
      assert.truthy(openssl("req -in r8.pem -verify -noout"):find("verify OK", 1, true))
      openssl("pkey -in csr384.key -traditional -aes256 -passout pass:pw -out enc.key")
      local enc = read("enc.key")
      write_csr("renc.pem", assert(core.csr(enc, "dev-enc", "pw")))
      assert.truthy(openssl("req -in renc.pem -verify -noout"):find("verify OK", 1, true))
      assert.are.equal("key is encrypted: give key_password", assert_failure("credentials", core.csr(enc, "dev-enc")))
      assert.are.equal("key could not be decrypted or read (wrong key_password?)",
        assert_failure("credentials", core.csr(enc, "dev-enc", "wrong")))
    end)

    it("fails with kind credentials on a key it cannot use, never quoting it", function()
      openssl("genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:1024 -out rsa.key")
      openssl("genpkey -algorithm EC -pkeyopt ec_paramgen_curve:secp256k1 -out k1.key")
      local cases = {
        { "", "key holds no PEM private key" },
        { "junk", "key holds no PEM private key" },
        { k384:sub(1, 100), "key holds no PEM private key" },
        { read("rsa.key"), "key is not an EC key on P-256 or P-384" },
        { read("k1.key"), "key is not an EC key on P-256 or P-384" },
        { string.rep("x", 1024 * 1024 + 1), "key is longer than 1 MiB" },
      }
      for _, c in ipairs(cases) do
        assert.are.equal(c[2], assert_failure("credentials", core.csr(c[1], "dev-01")))
        assert.are.equal(c[2], assert_failure("credentials", core.key_info(c[1])))
      end
    end)

    it("raises on misuse", function()
      local bad = {
        { k384, "" }, { k384, "dev 01" }, { k384, "dev,O=x" }, { k384, "dév" }, { k384, "dev\0x" },
        { k384, string.rep("d", 129) }, { k384, 42 }, { k384, nil }, { nil, "dev-01" }, { 42, "dev-01" },
        { k384, "dev-01", 42 }, { k384, "dev-01", {} },
      }
      for i, b in ipairs(bad) do
        local ok, err = pcall(core.csr, b[1], b[2], b[3])
        assert.is_false(ok, "case " .. i)
        assert.truthy(tostring(err):find("dps.core.csr: ", 1, true), err)
      end
      assert.has_error(function() core.key_info(nil) end)
      assert.has_error(function() core.key_info(k384, 1) end)
    end)
  end)

  describe("core.key_info and core.cert_info", function()
    local key, other, cert_pem, der_b64, expect

    setup(function()
      key = assert(core.ec_key("P-384"))
      other = assert(core.ec_key("P-384"))
      write("leaf.key", key)
      openssl("req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key -out ca.pem"
        .. " -subj '/CN=Spec Issuing CA/O=Contoso' -days 30")
      openssl("req -new -key leaf.key -subj '/CN=dev-cert/O=Contoso/OU=Routers' -out leaf.csr")
      -- a serial whose top bit is set (DER adds a zero byte), valid until after 2038 (GeneralizedTime)
      openssl("x509 -req -in leaf.csr -CA ca.pem -CAkey ca.key -set_serial 0xC0FFEE0011223344 -days 30000"
        .. " -sha384 -out leaf.pem")
      cert_pem = read("leaf.pem")
      der_b64 = (openssl("x509 -in leaf.pem -outform DER | openssl base64 -A"):gsub("%s+$", ""))
      expect = {
        not_before = epoch_of(openssl("x509 -in leaf.pem -noout -startdate"):match("=(.-)%s*$")),
        not_after = epoch_of(openssl("x509 -in leaf.pem -noout -enddate"):match("=(.-)%s*$")),
        serial = openssl("x509 -in leaf.pem -noout -serial"):match("=(%x+)"),
        public_key = spki_fingerprint(dir .. "/leaf.pem", true),
        cn = "dev-cert",
        subject = "CN=dev-cert, O=Contoso, OU=Routers",
        issuer = "CN=Spec Issuing CA, O=Contoso",
      }
    end)

    it("key_info gives the curve and the fingerprint of the public key", function()
      local info = assert(core.key_info(key))
      assert.are.equal("P-384", info.curve)
      assert.are.equal(spki_fingerprint(dir .. "/leaf.key"), info.public_key)
      assert.are.equal("P-256", assert(core.key_info(core.ec_key("P-256"))).curve)
    end)

    it("cert_info reads a known certificate: dates past 2038, serial, names, public key", function()
      assert.are.equal("C0FFEE0011223344", expect.serial)
      assert.truthy(expect.not_after > 2 ^ 31, "the certificate ends after 2038")
      local info = assert(core.cert_info(cert_pem))
      for k, v in pairs(expect) do
        assert.are.equal(v, info[k], k)
      end
      local math_type = rawget(math, "type")
      if math_type then -- Lua 5.3+: whole seconds as integers
        assert.are.equal("integer", math_type(info.not_after))
      end
      -- (%.0f: Lua 5.1's %d is a C long, 32 bits on 32-bit CPUs)
      assert.are.equal(string.format("%.0f", expect.not_after), string.format("%.0f", info.not_after))
    end)

    it("cert_info writes every serial as openssl does: zero, a top bit set, negative", function()
      for _, s in ipairs({ "0", "1", "0x80", "0x00FF", "-0x0100", "-1" }) do
        openssl("req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout s.key -out s.pem"
          .. " -subj /CN=serial -days 2 -set_serial " .. s)
        local serial = openssl("x509 -in s.pem -noout -serial"):match("=(%-?%x+)")
        assert.are.equal(serial, assert(core.cert_info(read("s.pem"))).serial, s)
      end
    end)

    it("cert_info reads base64 DER, a chain (its first certificate) and CRLF lines alike", function()
      local from_der = assert(core.cert_info(der_b64))
      local from_chain = assert(core.cert_info(cert_pem .. read("ca.pem")))
      local from_crlf = assert(core.cert_info((cert_pem:gsub("\n", "\r\n"))))
      for k, v in pairs(expect) do
        assert.are.equal(v, from_der[k], k)
        assert.are.equal(v, from_chain[k], k)
        assert.are.equal(v, from_crlf[k], k)
      end
      local ca = assert(core.cert_info(read("ca.pem")))
      assert.are.equal(ca.subject, from_der.issuer)
      assert.are.equal(ca.subject, ca.issuer)
    end)

    it("the fingerprints say whether a certificate belongs to a key", function()
      local cert = assert(core.cert_info(der_b64))
      assert.are.equal(assert(core.key_info(key)).public_key, cert.public_key)
      assert.are_not.equal(assert(core.key_info(other)).public_key, cert.public_key)
      assert.are.equal(spki_fingerprint(dir .. "/ca.pem", true), assert(core.cert_info(read("ca.pem"))).public_key)
    end)

    it("cert_info fails with kind protocol on anything else, never raising", function()
      local der = base64.decode(der_b64)
      local random = {}
      for i = 1, 200 do random[i] = string.char((i * 73 + 41) % 256) end
      local junk = {
        "",
        table.concat(random),
        base64.encode(table.concat(random)),
        base64.encode(der:sub(1, #der - 10)), -- truncated
        base64.encode(der .. "\0"), -- a byte after the certificate
        base64.encode(der:sub(1, 4) .. string.rep("\0", #der - 4)), -- the right frame, no certificate
        der, -- raw DER
        der_b64:sub(1, 64) .. "\n" .. der_b64:sub(65), -- a line break in base64
        cert_pem:gsub("%-%-%-%-%-END CERTIFICATE%-%-%-%-%-", ""), -- no END line
        cert_pem:gsub("MII", "M!I"), -- not base64 inside
        "-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n",
        string.rep("A", 1024 * 1024), -- 1 MiB: base64 of zeros
        string.rep("\255", 1024 * 1024),
        string.rep("A", 1024 * 1024 + 4),
        read("leaf.key"),
      }
      for i, text in ipairs(junk) do
        local ok, a, b, c = pcall(core.cert_info, text)
        assert.is_true(ok, "case " .. i .. " raised: " .. tostring(a))
        local message = assert_failure("protocol", a, b, c)
        assert.is_nil(message:find("MII", 1, true), "the message quotes the input: " .. message)
      end
      for _, v in ipairs({ 42, nil, {}, true }) do
        local ok, err = pcall(core.cert_info, v)
        assert.is_false(ok)
        assert.truthy(tostring(err):find("dps.core.cert_info: cert must be a string", 1, true), err)
      end
    end)

    -- The other crypto backend's answers for the same key and certificate:
    -- a child Lua on build/mbed (OpenSSL here) or build/5.4 (mbedTLS here).
    local other_build = backend == "openssl" and "build/mbed/dps/core.so" or "build/5.4/dps/core.so"
    local child_lua = "lua5.4"
    if not shell.read(other_build) or not shell.succeeds("command -v " .. child_lua .. " >/dev/null") then
      pending("the other backend's build (" .. other_build .. ") to compare with")
      return
    end

    it("the other backend gives the same facts, and its requests verify too", function()
      write("child.lua", [[
        package.cpath = arg[1] .. "/?.so;" .. package.cpath
        local core = require "dps.core"
        local function rd(n) local f = assert(io.open(n, "rb")) local s = f:read("*a") f:close() return s end
        local k, c = assert(core.key_info(rd("leaf.key"))), assert(core.cert_info(rd("leaf.pem")))
        io.write(core.version().backend, "\n", k.curve, "\n", k.public_key, "\n")
        for _, f in ipairs({ "not_before", "not_after", "serial", "public_key", "cn", "subject", "issuer" }) do
          io.write(string.format(type(c[f]) == "number" and "%.0f" or "%s", c[f]), "\n")
        end
        io.write(assert(core.csr(core.ec_key(), "dev-other")), "\n")
      ]])
      local build = shell.run("pwd"):gsub("%s+$", "") .. "/" .. other_build:gsub("/dps/core%.so$", "")
      local out, ok = shell.run("cd " .. q(dir) .. " && " .. child_lua .. " child.lua " .. q(build) .. " 2>&1")
      assert.is_true(ok, out)
      local lines = {}
      for line in out:gmatch("[^\n]+") do lines[#lines + 1] = line end
      assert.are_not.equal(backend, lines[1])
      local k, c = assert(core.key_info(key)), assert(core.cert_info(cert_pem))
      assert.are.same({ k.curve, k.public_key }, { lines[2], lines[3] })
      assert.are.same({ string.format("%.0f", c.not_before), string.format("%.0f", c.not_after), c.serial,
        c.public_key, c.cn, c.subject, c.issuer }, { lines[4], lines[5], lines[6], lines[7], lines[8], lines[9],
        lines[10] })
      write_csr("rother.pem", lines[11])
      assert.truthy(openssl("req -in rother.pem -verify -noout"):find("verify OK", 1, true))
      assert.are.equal("subject=CN=dev-other\n", openssl("req -in rother.pem -noout -subject -nameopt RFC2253"))
    end)
  end)
end)
