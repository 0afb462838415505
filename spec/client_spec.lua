-- dps.new and dps.provision refuse misuse before anything is sent: unknown
-- options, wrong types, bad IDs, bad endpoints, payloads that are not JSON
-- objects or are too big, and credentials that cannot be used.
local dps = require "dps"
local emulator = require "spec.support.emulator"

local keys = require "spec.support.keys"
local KEY = keys.KEY

local function base(extra)
  local o = { id_scope = "0ne00000001", registration_id = "dev-01", symmetric_key = KEY }
  for k, v in pairs(extra or {}) do o[k] = v end
  return o
end

-- Raises with `pattern` in the message, and never quotes a key it was given
-- (whichever key this case passes, not only the fixed test keys).
local function raises(pattern, f, ...)
  local ok, err = pcall(f, ...)
  assert.is_false(ok, "did not raise")
  err = tostring(err)
  assert.truthy(err:find(pattern, 1, true), "message was: " .. err)
  for i = 1, select("#", ...) do
    local opts = select(i, ...)
    if type(opts) == "table" then
      for _, name in ipairs({ "symmetric_key", "group_key", "key", "key_password" }) do
        local secret = opts[name]
        if type(secret) == "string" and #secret >= 4 then
          assert.is_nil(err:find(secret, 1, true), "the " .. name .. " leaked into: " .. err)
        end
      end
    end
  end
  return err
end

describe("dps.new", function()
  it("refuses unknown options, naming them", function()
    raises("unknown option 'timout'", dps.new, base{ timout = 5 })
    raises("unknown option 'payload'", dps.new, base{ payload = {} })
  end)

  it("refuses wrong option types", function()
    raises("option 'timeout' must be a number, got string", dps.new, base{ timeout = "5" })
    raises("option 'id_scope' must be a string", dps.new, base{ id_scope = 1 })
    raises("expects a table of options", dps.new, "dev-01")
  end)

  it("refuses non-positive or NaN timeouts", function()
    raises("timeout must be a positive number", dps.new, base{ timeout = 0 })
    raises("timeout must be a positive number", dps.new, base{ timeout = -1 })
    raises("connect_timeout must be a positive number", dps.new, base{ connect_timeout = 0 / 0 })
    raises("token_ttl must be a positive number", dps.new, base{ token_ttl = 0 })
  end)

  it("needs exactly one attestation", function()
    local o = base()
    o.symmetric_key = nil
    raises("exactly one attestation", dps.new, o)
    raises("exactly one attestation", dps.new, base{ group_key = KEY })
    raises("exactly one attestation", dps.new, base{ cert_file = "/nonexistent.pem", key_file = "/x.key" })
    raises("need 'cert' or 'cert_file'", dps.new, base{ key_password = "x" })
  end)

  it("checks IDs and keys", function()
    raises("registration_id may only contain", dps.new, base{ registration_id = "dev/01" })
    raises("registration_id must be at most 128", dps.new, base{ registration_id = ("a"):rep(129) })
    raises("registration_id must be a string", dps.new, { id_scope = "0ne00000001", symmetric_key = KEY })
    raises("id_scope", dps.new, base{ id_scope = "" })
    raises("symmetric_key is not base64", dps.new, base{ symmetric_key = "not base64!" })
    raises("group_key is not base64: it has a character outside", dps.new,
      { id_scope = "0ne00000001", registration_id = "d", group_key = "!!!!" })
  end)

  it("accepts only https:// endpoints of the form https://host[:port]", function()
    raises("endpoint must be https://host[:port]", dps.new, base{ endpoint = "http://localhost:8443" })
    raises("endpoint must be https://host[:port]", dps.new, base{ endpoint = "localhost" })
    raises("endpoint must be https://host[:port]", dps.new, base{ endpoint = "https://h/path" })
    raises("endpoint must be https://host[:port]", dps.new, base{ endpoint = "https://user@h" })
    raises("endpoint must be https://host[:port]", dps.new, base{ endpoint = "https://" })
    raises("endpoint must be https://host[:port]", dps.new, base{ endpoint = "https://h\0st" })
    raises("endpoint must be https://host[:port]", dps.new, base{ endpoint = "https://h st" })
    local client = dps.new(base{ endpoint = "https://dps.example.invalid:8443/" })
    assert.are.equal("https://dps.example.invalid:8443", client.endpoint)
    client:close()
    client = dps.new(base{ endpoint = "https://[::1]:8443" })
    assert.are.equal("https://[::1]:8443", client.endpoint)
    client:close()
  end)

  it("refuses option strings the session cannot carry", function()
    raises("api_version must look like", dps.new, base{ api_version = "" })
    raises("api_version must look like", dps.new, base{ api_version = "2021-06-01&x=1" })
    raises("NUL", dps.new, base{ user_agent = "agent\0x" })
    raises("NUL", dps.new, base{ ca_file = "/etc/ssl/x\0y" })
  end)

  it("never shows the key when printed", function()
    local client = dps.new(base())
    local text = tostring(client)
    for _, v in pairs(client) do text = text .. tostring(v) end
    assert.is_nil(text:find(KEY, 1, true))
    client:close()
  end)
end)

describe("payload checks", function()
  local client
  before_each(function() client = dps.new(base{ endpoint = "https://127.0.0.1:9" }) end)
  after_each(function() client:close() end)

  it("refuses payloads that are not JSON objects before sending", function()
    raises("payload must be a table", client.register, client, "text")
    raises("payload must be a JSON object", client.register, client, { 1, 2, 3 })
    raises("payload cannot be sent as JSON", client.register, client, { f = print })
    assert.are.equal(0, client:stats().requests)
  end)

  it("refuses requests over the service's 96 KB limit before sending", function()
    raises("payload too large", client.register, client, { blob = ("x"):rep(97 * 1024) })
    assert.are.equal(0, client:stats().requests)
  end)

  it("refuses bad provision options", function()
    raises("unknown option 'timeoutt'", client.provision, client, { timeoutt = 1 })
    raises("timeout must be a positive number", client.provision, client, { timeout = -5 })
    raises("option 'payload' must be a table", dps.provision, base{ payload = "{}" })
  end)
end)

describe("X.509 credentials", function()
  local certs
  setup(function() certs = emulator.certs() end)

  -- Local files that cannot be used are operational failures, not raises.
  local function fails(pattern, f, ...)
    local ok, client, err, info = pcall(f, ...)
    assert.is_true(ok, "raised: " .. tostring(client))
    assert.is_nil(client)
    assert.are.equal("credentials", info.kind)
    assert.is_false(info.retryable)
    assert.truthy(err:find(pattern, 1, true), "message was: " .. tostring(err))
    assert.is_nil(err:find(KEY, 1, true), "the key leaked into: " .. err)
    return err
  end

  local function x509(extra)
    local o = { id_scope = "0ne00000001", cert_file = certs.x509_device_01_chain, key_file = certs.x509_device_01_key }
    for k, v in pairs(extra or {}) do o[k] = v end
    return o
  end

  it("takes the registration ID from the certificate's CN", function()
    local client = dps.new(x509())
    assert.are.equal("x509-device-01", client.registration_id)
    client:close()
  end)

  it("refuses a registration ID that differs from the CN, before any request", function()
    fails('registration_id "dev-01" differs from the certificate\'s subject CN "x509-device-01"', dps.new,
      x509{ registration_id = "dev-01" })
  end)

  it("refuses a key that does not belong to the certificate", function()
    fails("dps.new: the private key does not belong to the certificate", dps.new,
      x509{ key_file = certs.x509_device_02_key })
  end)

  it("refuses a missing file", function()
    fails("dps.new: cert_file " .. certs.dir .. "/missing.pem: No such file", dps.new,
      x509{ cert_file = certs.dir .. "/missing.pem" })
  end)

  it("needs the password of an encrypted key, and the right one", function()
    fails("dps.new: key_file is encrypted: give key_password", dps.new,
      x509{ key_file = certs.x509_device_01_enc_key })
    fails("dps.new: key_file could not be decrypted", dps.new,
      x509{ key_file = certs.x509_device_01_enc_key, key_password = "wrong" })
    local client = dps.new(x509{ key_file = certs.x509_device_01_enc_key,
                                 key_password = certs.x509_device_01_passphrase })
    client:close()
  end)

  it("accepts certificate and key as PEM strings", function()
    local function slurp(p) local f = assert(io.open(p, "rb")); local s = f:read("*a"); f:close(); return s end
    local client = dps.new{ id_scope = "0ne00000001", cert = slurp(certs.x509_self_01),
                            key = slurp(certs.x509_self_01_key) }
    assert.are.equal("x509-self-01", client.registration_id)
    client:close()
    local err = fails("dps.new: the private key does not belong", dps.new,
      { id_scope = "0ne00000001", cert = slurp(certs.x509_self_01), key = slurp(certs.rogue_key) })
    assert.is_nil(err:find("PRIVATE KEY", 1, true))
  end)

  it("needs a key with the certificate", function()
    raises("give one of the options 'key_file' and 'key'", dps.new,
      { id_scope = "0ne00000001", cert_file = certs.x509_self_01 })
  end)
end)

describe("building requests (the client's dps.request builder, no I/O)", function()
  local client
  before_each(function() client = dps.new(base{ endpoint = "https://dps.example.invalid:8443", token_ttl = 3600 }) end)
  after_each(function() client:close() end)

  local NOW = 1700000000.25

  it("builds the three calls of the service", function()
    local r = client.builder:dps_request("register", NOW, nil, '{"registrationId":"dev-01"}')
    assert.are.equal("PUT", r.method)
    local base_url = "https://dps.example.invalid:8443/0ne00000001/registrations/dev-01"
    assert.are.equal(base_url .. "/register?api-version=2021-06-01", r.url)
    assert.are.equal('{"registrationId":"dev-01"}', r.body)
    assert.are.equal("application/json; charset=utf-8", r.headers["content-type"])
    assert.are.equal("application/json", r.headers.accept)
    r = client.builder:dps_request("operation_status", NOW, "4.a/b c")
    assert.are.equal("GET", r.method)
    assert.are.equal(base_url .. "/operations/4.a%2Fb%20c?api-version=2021-06-01", r.url)
    assert.is_nil(r.body)
    assert.is_nil(r.headers["content-type"])
    r = client.builder:dps_request("registration_status", NOW, nil, "{}")
    assert.are.equal("POST", r.method)
    assert.are.equal(base_url .. "?api-version=2021-06-01", r.url)
  end)

  it("signs with a registration SAS token and renews it only within 60 s of expiry", function()
    local first = client.builder:dps_request("register", NOW).headers.authorization
    assert.truthy(first:find("^SharedAccessSignature sr=0ne00000001%%2[fF]registrations%%2[fF]dev%-01&"), first)
    assert.truthy(first:find("&skn=registration", 1, true), first)
    assert.are.equal("1700003600", first:match("se=(%d+)"))
    assert.are.equal(first, client.builder:dps_request("register", NOW + 3539).headers.authorization) -- 60.75 s left
    local renewed = client.builder:dps_request("register", NOW + 3541).headers.authorization -- 58.75 s left
    assert.are.equal(tostring(1700000000 + 3541 + 3600), renewed:match("se=(%d+)"))
    assert.are.equal(renewed, client.builder:dps_request("register", NOW + 3542).headers.authorization)
  end)

  it("sends no Authorization header with X.509 (the TLS handshake authenticates)", function()
    local certs = emulator.certs()
    local x509 = dps.new{ id_scope = "0ne00000001", cert_file = certs.x509_self_01, key_file = certs.x509_self_01_key }
    local r = x509.builder:dps_request("register", NOW, nil, "{}")
    x509:close()
    assert.is_nil(r.headers.authorization)
    assert.are.equal("application/json", r.headers.accept)
  end)
end)

describe("dps.new with a key where a file name goes", function()
  it("returns a failure that names the option but never the value", function()
    local opts = {
      { id_scope = "0ne00000001", registration_id = "d", cert = "-----BEGIN CERTIFICATE-----\n", key_file = KEY },
      { id_scope = "0ne00000001", registration_id = "d", cert = "-----BEGIN CERTIFICATE-----\n",
        key_file = "-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg\n" },
    }
    for _, o in ipairs(opts) do
      local client, err, info = dps.new(o)
      assert.is_nil(client)
      assert.are.equal("credentials", info.kind, err)
      assert.truthy(err:find("it looks like a key", 1, true), err)
      assert.is_nil(err:find(KEY, 1, true), err)
      assert.is_nil(err:find("BEGIN", 1, true), err)
    end
  end)
end)
