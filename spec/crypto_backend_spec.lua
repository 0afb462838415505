-- The crypto backend (src/dps_crypto.h), whichever was built
-- (make CRYPTO=openssl|mbedtls): the same vectors, the same encodings and
-- the same words about keys on both.  Run with each build's core.so.
local core = require "dps.core"
local base64 = require "spec.support.base64"
local shell = require "spec.support.shell"

local backend = core.version().backend

local function hex(s)
  return (s:gsub(".", function(c) return string.format("%02x", c:byte()) end))
end

local b64 = base64.encode

describe("the crypto backend (" .. tostring(backend) .. ")", function()
  it("names itself", function()
    local v = core.version()
    assert.truthy(backend == "openssl" or backend == "mbedtls", backend)
    assert.truthy(v.crypto:find(backend == "openssl" and "OpenSSL" or "mbed TLS", 1, true), v.crypto)
  end)

  it("computes HMAC-SHA256 as RFC 4231 says", function()
    assert.are.equal("5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843",
      hex(core.hmac_sha256("Jefe", "what do ya want for nothing?")))
    -- test case 6: a key longer than the block is hashed first
    assert.are.equal("60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54",
      hex(core.hmac_sha256(string.rep("\170", 131), "Test Using Larger Than Block-Size Key - Hash Key First")))
  end)

  it("signs with the state's context and one-shot alike, key after key", function()
    local k1, k2 = b64("first key bytes!"), b64("second key")
    for _ = 1, 3 do
      for _, k in ipairs({ k1, k2 }) do
        local raw = k == k1 and "first key bytes!" or "second key"
        assert.are.equal(b64(core.hmac_sha256(raw, "dev-01")), core.derive_key(k, "dev-01"))
      end
    end
  end)

  it("encodes and decodes base64 of every length as plain Lua does", function()
    local bytes = {}
    for n = 1, 70 do
      bytes[n] = string.char((n * 37 + 11) % 256)
      local s = table.concat(bytes)
      local e = core.base64_encode(s)
      assert.are.equal(b64(s), e)
      assert.are.equal(s, base64.decode(e))
    end
  end)

  describe("encrypted keys", function()
    local dir, certs
    setup(function()
      dir = shell.tmpdir()
      local function openssl(args)
        local out, ok = shell.run("cd " .. shell.quote(dir) .. " && openssl " .. args .. " 2>&1")
        assert(ok, out)
      end
      openssl("req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout k.pem -out c.pem"
              .. " -subj /CN=dev-enc -days 2")
      openssl("pkey -in k.pem -aes256 -passout pass:pw -out pkcs8-aes.pem")
      openssl("pkey -in k.pem -des3 -passout pass:pw -out pkcs8-des3.pem")
      openssl("pkey -in k.pem -traditional -aes256 -passout pass:pw -out trad-aes.pem")
      certs = dir .. "/c.pem"
    end)
    teardown(function() shell.run("rm -rf " .. shell.quote(dir)) end)

    local function check(key, password)
      return core.x509_credentials{ cert_file = certs, key_file = dir .. "/" .. key, key_password = password }
    end

    for _, key in ipairs({ "pkcs8-des3.pem", "trad-aes.pem" }) do
      it(key .. " opens with its password, and says so without it or with a wrong one", function()
        local facts, message = check(key, "pw")
        assert.truthy(facts, message)
        assert.are.equal("dev-enc", facts.cn)
        local _, m1, i1 = check(key)
        assert.are.equal("credentials", i1.kind)
        assert.are.equal("key_file is encrypted: give key_password", m1)
        local _, m2, i2 = check(key, "wrong")
        assert.are.equal("credentials", i2.kind)
        assert.are.equal("key_file could not be decrypted or read (wrong key_password?)", m2)
      end)
    end

    it("AES inside PKCS#8 opens, or fails saying why (mbedTLS 2.x)", function()
      local facts, message, info = check("pkcs8-aes.pem", "pw")
      if backend == "openssl" or not core.version().crypto:find("mbed TLS 2.", 1, true) then
        assert.truthy(facts, message)
        return
      end
      assert.is_nil(facts)
      assert.are.equal("credentials", info.kind)
      assert.truthy(message:find("cannot decrypt (AES inside PKCS#8)", 1, true), message)
      assert.truthy(message:find("openssl pkey -traditional", 1, true), message)
      local _, m = check("pkcs8-aes.pem")
      assert.are.equal("key_file is encrypted: give key_password", m)
    end)

    it("reads the same key from memory as from its file", function()
      local f = assert(io.open(dir .. "/trad-aes.pem", "rb"))
      local pem = f:read("*a")
      f:close()
      f = assert(io.open(certs, "rb"))
      local cert = f:read("*a")
      f:close()
      local facts, message = core.x509_credentials{ cert = cert, key = pem, key_password = "pw" }
      assert.truthy(facts, message)
      assert.are.equal(1, facts.certificates)
      assert.truthy(facts.not_after > facts.not_before)
    end)
  end)
end)
