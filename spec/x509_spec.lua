-- X.509 attestation over mutual TLS against the emulator: the certificate
-- authenticates in the handshake, no Authorization header is sent, and the
-- registration ID is the certificate's CN.
local dps = require "dps"
local emulator = require "spec.support.emulator"
local timing = require "spec.support.timing"

describe("X.509 provisioning", function()
  local emu, certs

  setup(function()
    certs = emulator.certs()
    emu = emulator.start{
      enrollments = {
        { type = "group", group_id = "x509-group", attestation = "x509" },
        { type = "individual", registration_id = "x509-self-01", attestation = "x509",
          certificate = certs.x509_self_01 },
      },
    }
  end)

  teardown(function()
    if emu then emu:stop() end
  end)

  local function provision(extra)
    -- (a limit that only stops a spec that would wait for ever: stretched
    -- under valgrind and on a busy machine, where TLS handshakes are slow)
    local o = { id_scope = emu.id_scope, endpoint = emu.endpoint, ca_file = emu.ca_file,
      timeout = timing.margin(15) }
    for k, v in pairs(extra) do o[k] = v end
    return dps.provision(o)
  end

  it("provisions a device of a CA-signed group, presenting its chain", function()
    local state, err = provision{ cert_file = certs.x509_device_01_chain, key_file = certs.x509_device_01_key }
    assert.truthy(state, err)
    assert.are.equal("x509-device-01", state.registrationId)
    assert.are.equal("x509-device-01", state.deviceId)
    assert.are.equal("table", type(state.x509))
    for _, r in ipairs(emu:requests("x509-device-01")) do
      assert.are.equal("x509", r.auth)
    end
  end)

  it("provisions an individual enrollment with a self-signed certificate", function()
    local state, err = provision{ registration_id = "x509-self-01", cert_file = certs.x509_self_01,
                                  key_file = certs.x509_self_01_key }
    assert.truthy(state, err)
    assert.are.equal("x509-self-01", state.deviceId)
  end)

  it("works with an encrypted key and its password", function()
    local state, err = provision{ cert_file = certs.x509_device_01_chain, key_file = certs.x509_device_01_enc_key,
                                  key_password = certs.x509_device_01_passphrase }
    assert.truthy(state, err)
  end)

  it("works with certificate and key held in memory", function()
    local function slurp(p) local f = assert(io.open(p, "rb")); local s = f:read("*a"); f:close(); return s end
    local state, err = provision{ cert = slurp(certs.x509_device_02_chain), key = slurp(certs.x509_device_02_key) }
    assert.truthy(state, err)
    assert.are.equal("x509-device-02", state.deviceId)
  end)

  it("refuses a rogue self-signed certificate with a real device's CN as auth, with the service's code", function()
    local state, err, info = provision{ cert_file = certs.rogue, key_file = certs.rogue_key }
    assert.is_nil(state)
    assert.are.equal("auth", info.kind)
    assert.are.equal(401, info.status)
    assert.are.equal(401002, info.error_code)
    assert.is_false(info.retryable)
    assert.truthy(err:find("401002", 1, true))
  end)

  it("looks up the registration by certificate too", function()
    local client = dps.new{ id_scope = emu.id_scope, endpoint = emu.endpoint, ca_file = emu.ca_file,
                            cert_file = certs.x509_device_01_chain, key_file = certs.x509_device_01_key }
    local reg, meta = client:registration_status()
    client:close()
    assert.truthy(reg, meta)
    assert.are.equal("x509-device-01", reg.deviceId)
  end)
end)

-- Local files that cannot be used are operational failures, like io.open's:
-- nil, message, info with a kind; only misuse raises. Nothing is sent.
describe("X.509 local files", function()
  local certs, dir
  setup(function()
    certs = emulator.certs()
    dir = certs.dir
  end)

  local function opts(extra)
    local o = { id_scope = "0ne00000001", endpoint = "https://127.0.0.1:1", timeout = 1,
                cert_file = certs.x509_device_01_chain, key_file = certs.x509_device_01_key }
    for k, v in pairs(extra) do o[k] = v end
    return o
  end

  local function returns(kind, pattern, f, o)
    local ok, result, message, info = pcall(f, o)
    assert.is_true(ok, "raised: " .. tostring(result))
    assert.is_nil(result)
    assert.are.equal("string", type(message))
    assert.are.equal(kind, info.kind)
    assert.is_false(info.retryable)
    assert.truthy(message:find(pattern, 1, true), message)
    assert.is_nil(message:find("PRIVATE KEY", 1, true), message)
    return message
  end

  for _, f in ipairs({ { "dps.new", function(o) return dps.new(o) end },
                       { "dps.provision", function(o) return dps.provision(o) end } }) do
    it(f[1] .. " returns credentials failures for certificate and key files", function()
      returns("credentials", "cert_file " .. dir .. "/missing.pem: No such file or directory", f[2],
        opts{ cert_file = dir .. "/missing.pem" })
      returns("credentials", "key_file " .. dir .. "/missing.key: No such file or directory", f[2],
        opts{ key_file = dir .. "/missing.key" })
      returns("credentials", "key_file " .. dir .. ": is not a file", f[2], opts{ key_file = dir })
      returns("credentials", "key_file is encrypted: give key_password", f[2],
        opts{ key_file = certs.x509_device_01_enc_key })
      returns("credentials", "wrong key_password", f[2],
        opts{ key_file = certs.x509_device_01_enc_key, key_password = "not-it" })
      returns("credentials", "does not belong to the certificate", f[2], opts{ key_file = certs.x509_device_02_key })
      returns("credentials", "differs from the certificate's subject CN", f[2], opts{ registration_id = "dev-01" })
    end)

    it(f[1] .. " returns a config failure for a missing CA file or directory", function()
      returns("config", "ca_file " .. dir .. "/missing-ca.pem: No such file or directory", f[2],
        opts{ ca_file = dir .. "/missing-ca.pem" })
      returns("config", "ca_path " .. certs.ca .. ": is not a directory", f[2], opts{ ca_path = certs.ca })
    end)

    it(f[1] .. " still raises for misuse, even when a file is missing too", function()
      local missing = dir .. "/missing.pem"
      for _, case in ipairs({
        { opts{ cert_file = missing, registration_id = "bad id!" }, "registration_id" },
        { opts{ cert_file = missing, timeout = -1 }, "timeout" },
        { opts{ cert_file = missing, endpoint = "http://x" }, "endpoint" },
        { opts{ cert_file = missing, key_file = false }, "key_file" },
        { opts{ cert_file = missing, cert = "PEM" }, "exclude each other" },
        { opts{ cert_file = "a\0b" }, "NUL" },
        { opts{ ca_file = missing, tiemout = 1 }, "unknown option" },
      }) do
        local ok, err = pcall(f[2], case[1])
        assert.is_false(ok, case[2])
        assert.truthy(tostring(err):find(case[2], 1, true), tostring(err))
      end
    end)
  end
end)

-- core.x509_credentials reads the five client-certificate options and no
-- others: an option of core.engine's (timeout, proxy) means nothing to a
-- certificate check and is misuse, named in the message.
describe("core.x509_credentials options", function()
  local core = require "dps.core"
  local certs
  setup(function()
    certs = emulator.certs()
  end)

  local function pair(extra)
    local o = { cert_file = certs.x509_device_01_chain, key_file = certs.x509_device_01_key }
    for k, v in pairs(extra or {}) do o[k] = v end
    return o
  end

  it("takes cert_file, cert, key_file, key and key_password", function()
    local function slurp(p) local f = assert(io.open(p, "rb")); local s = f:read("*a"); f:close(); return s end
    local facts, err = core.x509_credentials(pair())
    assert.truthy(facts, err)
    assert.are.equal("x509-device-01", facts.cn)
    facts, err = core.x509_credentials{ cert = slurp(certs.x509_device_01_chain),
                                        key_file = certs.x509_device_01_enc_key,
                                        key_password = certs.x509_device_01_passphrase }
    assert.truthy(facts, err)
    facts, err = core.x509_credentials{ cert_file = certs.x509_device_02_chain, key = slurp(certs.x509_device_02_key) }
    assert.truthy(facts, err)
  end)

  it("raises on any other option, naming it", function()
    for _, extra in ipairs({ { timeout = 5 }, { proxy = "http://127.0.0.1:3128" }, { ca_file = certs.ca },
                             { user_agent = "x" }, { max_body = 1 }, { registration_id = "x509-device-01" } }) do
      local name = next(extra)
      assert.error_matches(function() local r = core.x509_credentials(pair(extra)); return r end,
        "unknown option '" .. name .. "'", 1, true)
    end
    assert.error_matches(function() local r = core.x509_credentials{ cert = "PEM", timeout = 5 }; return r end,
      "unknown option 'timeout'", 1, true)
    assert.error_matches(function() local r = core.x509_credentials(pair{ [1] = "x" }); return r end,
      "option names must be strings", 1, true)
  end)
end)
