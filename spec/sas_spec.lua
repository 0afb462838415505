-- Derived keys and SAS tokens: the known-answer vectors, an independent HMAC
-- (the openssl command), and every bad-argument path.
local dps = require "dps"
local core = require "dps.core"
local vectors = require "spec.support.vectors"
local shell = require "spec.support.shell"

local GROUP_KEY = vectors.derived_keys[1].group_key
local KEY = vectors.dps_tokens[1].key

-- HMAC-SHA256 by the openssl command, base64 out.
local function openssl_hmac(key_b64, message)
  local hexkey = {}
  for i = 1, #core.base64_decode(key_b64) do
    hexkey[i] = string.format("%02x", core.base64_decode(key_b64):byte(i))
  end
  local dir = shell.tmpdir()
  local file = shell.write(dir .. "/msg", message)
  local out, ok = shell.run("openssl dgst -sha256 -mac HMAC -macopt hexkey:" .. table.concat(hexkey) ..
    " -binary " .. shell.quote(file) .. " | base64")
  os.execute("rm -rf " .. shell.quote(dir))
  assert(ok, "openssl dgst failed")
  return (out:gsub("%s+$", ""))
end

-- The signature inside a token, URL-decoded.
local function signature_of(token)
  local sig = assert(token:match("[&% ]sig=([^&]+)"))
  return (sig:gsub("%%(%x%x)", function(h) return string.char(tonumber(h, 16)) end))
end

describe("dps.derive_key", function()
  for _, v in ipairs(vectors.derived_keys) do
    it("matches the vector for " .. v.registration_id:sub(1, 40), function()
      assert.are.equal(v.expected, dps.derive_key(v.group_key, v.registration_id))
    end)
  end

  it("is case-sensitive in the registration ID, as the HMAC is", function()
    assert.are_not.equal(dps.derive_key(GROUP_KEY, "abc"), dps.derive_key(GROUP_KEY, "ABC"))
  end)

  it("agrees with openssl's HMAC for a 128-character ID with : and .", function()
    local id = ("a.b:c_d-e"):rep(15):sub(1, 128)
    assert.are.equal(128, #id)
    assert.are.equal(openssl_hmac(GROUP_KEY, id), dps.derive_key(GROUP_KEY, id))
  end)
end)

describe("dps.registration_token", function()
  for _, v in ipairs(vectors.dps_tokens) do
    it("matches the vector for " .. v.registration_id, function()
      assert.are.equal(v.expected_token, dps.registration_token(v.id_scope, v.registration_id, v.key, v.expiry))
    end)

    it("signs exactly the documented string, checked by openssl", function()
      local token = dps.registration_token(v.id_scope, v.registration_id, v.key, v.expiry)
      assert.are.equal(openssl_hmac(v.key, v.string_to_sign), signature_of(token))
    end)

    it("signs 1700000000.0 as 1700000000", function()
      assert.are.equal(v.expected_token,
        dps.registration_token(v.id_scope, v.registration_id, v.key, v.expiry + 0.0))
    end)
  end

  it("puts the fields in the order sr, sig, se, skn", function()
    local token = dps.registration_token("0ne00000001", "dev-01", KEY, 1700000000)
    assert.truthy(token:match("^SharedAccessSignature sr=[^&]+&sig=[^&]+&se=1700000000&skn=registration$"))
  end)

  it("percent-encodes : in the registration ID and signs that form", function()
    local token = dps.registration_token("0ne00000001", "dev:01", KEY, 1700000000)
    assert.truthy(token:find("sr=0ne00000001%2Fregistrations%2Fdev%3A01&", 1, true))
    assert.are.equal(openssl_hmac(KEY, "0ne00000001%2Fregistrations%2Fdev%3A01\n1700000000"), signature_of(token))
  end)

  it("accepts a 128-character registration ID", function()
    local token = dps.registration_token("0ne00000001", ("x"):rep(128), KEY, 1)
    assert.truthy(token:find(("x"):rep(128), 1, true))
  end)
end)

describe("dps.hub_token", function()
  for _, v in ipairs(vectors.hub_tokens) do
    local host, device = v.resource_uri:match("^(.-)/devices/(.*)$")
    it("matches the documented IoT Hub token", function()
      assert.are.equal(v.expected_token, dps.hub_token(host, device, v.key, v.expiry))
    end)
    it("carries the documented signature and no skn", function()
      local token = dps.hub_token(host, device, v.key, v.expiry)
      assert.are.equal(v.expected_signature, signature_of(token))
      assert.is_nil(token:find("skn=", 1, true))
    end)
  end

  it("keeps the device ID's case and encodes its special characters", function()
    local token = dps.hub_token("h.azure-devices.net", "Dev#1+x", KEY, 10)
    assert.truthy(token:find("sr=h.azure-devices.net%2Fdevices%2FDev%231%2Bx&", 1, true))
  end)
end)

describe("dps.sas_token", function()
  it("adds skn when a key name is given", function()
    local token = dps.sas_token("uri", "cGFzc3dvcmQ=", 12345, "policy")
    assert.are.equal("SharedAccessSignature sr=uri&sig=kcWxXAK2OAaAoq2oCkaGzX2NMqDB8nCyNuq2fPYCDhk%3D"
      .. "&se=12345&skn=policy", token)
  end)
end)

describe("bad arguments", function()
  local function raises(pattern, f, ...)
    local ok, err = pcall(f, ...)
    assert.is_false(ok)
    assert.truthy(tostring(err):find(pattern), "message was: " .. tostring(err))
    -- never key material, whatever went wrong
    assert.is_nil(tostring(err):find(KEY, 1, true))
    assert.is_nil(tostring(err):find(GROUP_KEY, 1, true))
    return err
  end

  it("rejects expiries that are fractional, negative, NaN, huge or not numbers", function()
    raises("expiry", dps.registration_token, "0ne00000001", "dev", KEY, 1.5)
    raises("expiry", dps.registration_token, "0ne00000001", "dev", KEY, -1)
    raises("expiry", dps.registration_token, "0ne00000001", "dev", KEY, 0 / 0)
    raises("expiry", dps.registration_token, "0ne00000001", "dev", KEY, math.huge)
    raises("expiry", dps.registration_token, "0ne00000001", "dev", KEY, 2 ^ 60)
    raises("expiry", dps.registration_token, "0ne00000001", "dev", KEY, "1700000000")
    raises("expiry", dps.hub_token, "h", "d", KEY, nil)
    raises("expiry", dps.sas_token, "u", KEY, {})
  end)

  it("checks the C core's expiry on its own too", function()
    raises("expiry", core.sas_token, "u", KEY, 1.25)
    raises("expiry", core.sas_token, "u", KEY, -5)
  end)

  it("rejects registration IDs outside the service's rules", function()
    raises("registration_id must not be empty", dps.derive_key, GROUP_KEY, "")
    raises("at most 128", dps.derive_key, GROUP_KEY, ("a"):rep(129))
    raises("position 4", dps.derive_key, GROUP_KEY, "dev/1")
    raises("registration_id may only contain", dps.registration_token, "0ne00000001", "dev 1", KEY, 1)
    raises("registration_id may only contain", dps.registration_token, "0ne00000001", "dév", KEY, 1)
    raises("NUL", dps.registration_token, "0ne00000001", "dev\0x", KEY, 1)
    raises("registration_id must be a string", dps.derive_key, GROUP_KEY, 42)
  end)

  it("rejects bad ID scopes, hosts and device IDs", function()
    raises("id_scope", dps.registration_token, "", "dev", KEY, 1)
    raises("id_scope", dps.registration_token, "0ne/x", "dev", KEY, 1)
    raises("id_scope", dps.registration_token, nil, "dev", KEY, 1)
    raises("hub_host must not be empty", dps.hub_token, "", "dev", KEY, 1)
    raises("device_id must not be empty", dps.hub_token, "h", "", KEY, 1)
    raises("device_id must be a string", dps.hub_token, "h", 7, KEY, 1)
    raises("resource_uri", dps.sas_token, "", KEY, 1)
    raises("key_name", dps.sas_token, "u", KEY, 1, "")
  end)

  it("rejects keys that are not strict base64, naming the argument only", function()
    raises("key must be a base64 string, got nil", dps.registration_token, "0ne00000001", "dev", nil, 1)
    raises("key must not be empty", dps.registration_token, "0ne00000001", "dev", "", 1)
    raises("key has a character outside the base64 alphabet", dps.hub_token, "h", "d", KEY:sub(1, -5) .. "!!==", 1)
    raises("key has padding before its end", dps.hub_token, "h", "d", "QQ=A", 1)
    raises("not a multiple of 4", dps.hub_token, "h", "d", KEY:sub(2), 1)
    raises("group_key has a character outside", dps.derive_key, "QUJD RA=", "dev")
    raises("group_key must be a base64 string", dps.derive_key, 5, "dev")
    raises("too long", dps.derive_key, ("A"):rep(2048), "dev")
  end)

  it("blames the caller's own file and line", function()
    -- each public function, called from this file (not as a tail call,
    -- which leaves no caller to blame), raises at this file's line
    local calls = {
      function() local r = dps.hub_token("h", "d", KEY, 0.5); return r end,
      function() local r = dps.registration_token("0ne00000001", "dev", KEY, -1); return r end,
      function() local r = dps.sas_token("sr", "QQ=A", 1); return r end,
      function() local r = dps.derive_key(5, "dev"); return r end,
      function() local r = dps.new({ id_scope = "0ne00000001", bogus = 1 }); return r end,
      function() local r = dps.provision({ id_scope = "0ne00000001", registration_id = "d" }); return r end,
    }
    for _, call in ipairs(calls) do
      local line = debug.getinfo(call, "S").linedefined
      local ok, err = pcall(call)
      assert.is_false(ok)
      assert.are.equal("spec/sas_spec.lua:" .. line .. ":", tostring(err):match("^[^:]+:%d+:"),
        "message was: " .. tostring(err))
    end
  end)
end)
