-- Certificates the device earns (DPS certificate issuance by CSR), on the
-- fake runtime with a scripted DPS that signs each CSR with a real CA
-- (openssl), and real files: first issuance, no request while the
-- certificate is good, renewal past renew_at, a new onboarding after
-- expiry, bad chains as kind protocol, a switch a crash interrupted, and
-- the hub over mutual TLS.
local dps = require "dps"
local core = require "dps.core"
local certificate = require "dps.certificate"
local fake_runtime = require "spec.support.fake_runtime"
local keys = require "spec.support.keys"
local shell = require "spec.support.shell"
local base64 = require "spec.support.base64"
local cjson = require "cjson"

local q = shell.quote
local DAY = 86400
local VALIDITY = 30 * DAY

local function sh(command)
  local out, ok = shell.run(command .. " 2>&1")
  assert(ok, command .. ": " .. out)
  return out
end

-- base64 of a PEM file's first certificate (DER)
local function b64_of(pem)
  local body = (pem:match("%-%-%-%-%-BEGIN CERTIFICATE%-%-%-%-%-(.-)%-%-%-%-%-END") or ""):gsub("%s", "")
  return body
end

describe("certificates the device earns", function()
  local dir, ca

  setup(function()
    dir = shell.tmpdir("dps-cert")
    ca = { key = dir .. "/ca.key", cert = dir .. "/ca.pem" }
    sh("openssl ecparam -name secp384r1 -genkey -noout -out " .. q(ca.key))
    sh("openssl req -new -x509 -key " .. q(ca.key) .. " -subj /CN=Spec-Issuing-CA -days 3650 -out " .. q(ca.cert))
  end)

  teardown(function() shell.succeeds("rm -rf " .. q(dir)) end)

  -- The chain for a CSR (base64 DER): leaf (valid VALIDITY from now), CA.
  local serial = 100
  local function issue(csr_b64)
    serial = serial + 1
    local csr_pem = dir .. "/req.pem"
    local f = assert(io.open(csr_pem, "w"))
    f:write("-----BEGIN CERTIFICATE REQUEST-----\n")
    for i = 1, #csr_b64, 64 do f:write(csr_b64:sub(i, i + 63), "\n") end
    f:write("-----END CERTIFICATE REQUEST-----\n")
    f:close()
    sh(string.format("openssl x509 -req -in %s -CA %s -CAkey %s -set_serial %d -days %d -out %s",
      q(csr_pem), q(ca.cert), q(ca.key), serial, VALIDITY / DAY, q(dir .. "/leaf.pem")))
    return { b64_of(shell.read(dir .. "/leaf.pem")), b64_of(shell.read(ca.cert)) }
  end

  -- A fake DPS that assigns at once and issues for a CSR; `bad(chain)` may
  -- spoil the chain. Records each register body.
  local function server(fake, bad)
    local bodies = {}
    fake.answer = function(req)
      if req.url:find("^https://hub%.example/") then return { status = 204 } end
      local body = req.body and cjson.decode(req.body) or {}
      bodies[#bodies + 1] = { method = req.method, body = body, url = req.url }
      local state = { registrationId = body.registrationId, assignedHub = "hub.example",
        deviceId = body.registrationId, status = "assigned" }
      if body.csr then
        state.issuedCertificateChain = issue(body.csr)
        if bad then state.issuedCertificateChain = bad(state.issuedCertificateChain) end
      end
      return { status = 200, headers = { ["content-type"] = "application/json" },
        body = cjson.encode{ operationId = "op-1", status = "assigned", registrationState = state } }
    end
    return bodies
  end

  local function opts(folder, extra)
    local o = { id_scope = "0ne00000001", registration_id = "cert-dev", symmetric_key = keys.KEY,
      endpoint = "https://dps.example.invalid", cache = folder .. "/assignment.json",
      certificate = { dir = folder } }
    for k, v in pairs(extra or {}) do o[k] = v end
    return o
  end

  local function new_folder(name)
    local folder = dir .. "/" .. name
    sh("mkdir -m 700 " .. q(folder))
    return folder
  end

  it("issues first: key 0600, CN the ID, P-384, a chain to the CA, the leaf the key's; then no request", function()
    local folder = new_folder("first")
    local fake = fake_runtime.new{ epoch = os.time() }
    local bodies = server(fake)
    local state, how = dps.provision(opts(folder), fake:with_session())
    assert.truthy(state, how)
    assert.is_true(how.certificate.issued)
    assert.are.equal(folder .. "/cert.pem", how.certificate.cert_file)
    assert.truthy(bodies[1].body.csr)
    assert.truthy(bodies[1].url:find("api-version=" .. certificate.API_VERSION, 1, true), bodies[1].url)
    assert.is_nil(state.issuedCertificateChain) -- kept in the folder, not in the state or the cache
    local key = shell.read(folder .. "/key.pem")
    assert.are.equal(384, core.stat(folder .. "/key.pem").mode % 512) -- 0600
    assert.are.equal("P-384", core.key_info(key).curve)
    local leaf = core.cert_info(shell.read(folder .. "/cert.pem"))
    assert.are.equal("cert-dev", leaf.cn)
    assert.are.equal(core.key_info(key).public_key, leaf.public_key)
    assert.are.equal(leaf.not_after, how.certificate.not_after)
    sh(string.format("openssl verify -CAfile %s %s", q(ca.cert), q(folder .. "/cert.pem")))
    -- the next run: the certificate is good and the cache matches
    local sent = #fake.sent
    state, how = dps.provision(opts(folder), fake:with_session())
    assert.truthy(state, how)
    assert.are.equal(sent, #fake.sent)
    assert.are.equal("cache", how.source)
    assert.is_false(how.certificate.issued)
    assert.are.equal(leaf.serial, how.certificate.serial)
  end)

  it("renews past renew_at (new key, new serial), and after expiry onboards again with its credential", function()
    local folder = new_folder("renew")
    local fake = fake_runtime.new{ epoch = os.time() }
    local bodies = server(fake)
    local _, how = dps.provision(opts(folder), fake:with_session())
    local first_key, first_serial = shell.read(folder .. "/key.pem"), how.certificate.serial
    fake.mono = 0.7 * VALIDITY -- before 80 %: nothing to do
    _, how = dps.provision(opts(folder), fake:with_session())
    assert.are.equal("cache", how.source)
    fake.mono = 0.81 * VALIDITY
    _, how = dps.provision(opts(folder), fake:with_session())
    assert.are.equal("service", how.source)
    assert.is_true(how.certificate.issued)
    assert.are_not.equal(first_serial, how.certificate.serial)
    assert.are_not.equal(first_key, shell.read(folder .. "/key.pem"))
    -- with renew_at 0.5 given, and the clock past the new one's expiry
    fake.mono = fake.mono + VALIDITY + DAY
    local n = #bodies
    _, how = dps.provision(opts(folder, { certificate = { dir = folder, renew_at = 0.5, curve = "P-256" } }),
      fake:with_session())
    assert.is_true(how.certificate.issued)
    assert.are.equal(n + 1, #bodies)
    assert.truthy(fake.sent[#fake.sent].headers.authorization) -- onboarding by its symmetric key
    assert.are.equal("P-256", core.key_info(shell.read(folder .. "/key.pem")).curve)
  end)

  it("a group member with a derived key earns one too; the status lookup never carries a CSR", function()
    local folder = new_folder("group")
    local fake = fake_runtime.new{ epoch = os.time() }
    local bodies = server(fake)
    local o = opts(folder, { symmetric_key = false })
    o.symmetric_key, o.group_key = nil, keys.GROUP_KEY
    local _, how = dps.provision(o, fake:with_session())
    assert.is_true(how.certificate.issued)
    local client = dps.new({ id_scope = "0ne00000001", registration_id = "cert-dev", group_key = keys.GROUP_KEY,
      endpoint = "https://dps.example.invalid" }, fake:with_session())
    client:registration_status()
    client:close()
    assert.are.equal("POST", bodies[#bodies].method)
    assert.is_nil(bodies[#bodies].body.csr)
  end)

  for _, case in ipairs({
    { "no chain", function() return nil end },
    { "an empty chain", function() return {} end },
    { "a chain whose leaf is for another key", function(chain)
      local other = issue(core.csr(core.ec_key("P-384"), "cert-dev"))
      return { other[1], chain[2] }
    end },
    { "garbage base64", function() return { "!!!not base64!!!" } end },
    { "base64 that is no certificate", function() return { base64.encode(string.rep("x", 300)) } end },
    { "a chain of 100", function(chain)
      local long = {}
      for i = 1, 100 do long[i] = chain[2] end
      long[1] = chain[1]
      return long
    end },
  }) do
    it("a bad answer (" .. case[1] .. ") is kind protocol, never a raise; the old pair stays", function()
      local folder = new_folder("bad-" .. case[1]:gsub("%W", "-"))
      local fake = fake_runtime.new{ epoch = os.time() }
      server(fake)
      local _, how = dps.provision(opts(folder), fake:with_session())
      local key, cert = shell.read(folder .. "/key.pem"), shell.read(folder .. "/cert.pem")
      assert.is_true(how.certificate.issued)
      server(fake, case[2])
      fake.mono = 0.9 * VALIDITY
      local ok, state, message, info = pcall(dps.provision, opts(folder), fake:with_session())
      assert.is_true(ok, tostring(state))
      assert.is_nil(state)
      assert.are.equal("protocol", info.kind, message)
      assert.are.equal(key, shell.read(folder .. "/key.pem"))
      assert.are.equal(cert, shell.read(folder .. "/cert.pem"))
    end)
  end

  it("finishes a switch a crash interrupted, or drops a half-written one", function()
    local folder = new_folder("crash")
    local fake = fake_runtime.new{ epoch = os.time() }
    server(fake)
    dps.provision(opts(folder), fake:with_session())
    local old_key, old_cert = shell.read(folder .. "/key.pem"), shell.read(folder .. "/cert.pem")
    -- a new pair written beside, the key already over the old one, the cert not yet
    local new_key = core.ec_key("P-384")
    local chain = issue(core.csr(new_key, "cert-dev"))
    local new_cert = certificate.chain({ key = new_key }, chain, "cert-dev")
    shell.write(folder .. "/next-cert.pem", new_cert, "600")
    shell.write(folder .. "/next-key.pem", new_key, "600")
    shell.write(folder .. "/key.pem", new_key, "600")
    local held, due = certificate.usable({ dir = folder }, "cert-dev", os.time())
    assert.truthy(held, due)
    assert.are.equal(new_cert, shell.read(folder .. "/cert.pem"))
    assert.is_nil(shell.read(folder .. "/next-cert.pem"))
    -- only the next certificate was written: the old pair stays
    shell.write(folder .. "/key.pem", old_key, "600")
    shell.write(folder .. "/cert.pem", old_cert, "600")
    shell.write(folder .. "/next-cert.pem", new_cert, "600")
    held = certificate.usable({ dir = folder }, "cert-dev", os.time())
    assert.truthy(held)
    assert.are.equal(old_cert, shell.read(folder .. "/cert.pem"))
    assert.is_nil(shell.read(folder .. "/next-cert.pem"))
  end)

  it("dps.connect talks to the hub by mutual TLS with the issued certificate: no SAS token", function()
    local folder = new_folder("connect")
    local fake = fake_runtime.new{ epoch = os.time() }
    server(fake)
    local rt = fake:with_session()
    rt.hub_transport = fake:session()
    local hub = assert(dps.connect(opts(folder), rt))
    assert.is_true((hub:send("x")))
    local last = fake.sent[#fake.sent]
    assert.truthy(last.url:find("^https://hub%.example/devices/cert%-dev/messages/events"))
    assert.is_nil(last.headers.authorization)
    assert.are.equal("x509", hub.attestation)
    hub:close()
  end)

  it("refuses a certificate option it cannot use", function()
    local folder = new_folder("misuse")
    assert.has_error(function() dps.provision(opts(folder, { certificate = { dir = folder, curve = "P-521" } })) end,
      'certificate.curve must be "P-384" or "P-256", got "P-521"')
    assert.has_error(function() dps.provision(opts(folder, { certificate = { dir = folder, renew_at = 1.5 } })) end)
    assert.has_error(function() dps.provision(opts(folder, { certificate = { folder = folder } })) end,
      "certificate: unknown option 'folder'")
  end)
end)
