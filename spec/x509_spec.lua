-- X.509 attestation over mutual TLS against the emulator: the certificate
-- authenticates in the handshake, no Authorization header is sent, and the
-- registration ID is the certificate's CN.
local dps = require "dps"
local emulator = require "spec.support.emulator"

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
    local o = { id_scope = emu.id_scope, endpoint = emu.endpoint, ca_file = emu.ca_file, timeout = 15 }
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
