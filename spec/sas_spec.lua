-- Derived keys and SAS tokens: the known-answer vectors, an independent HMAC
-- (the openssl command), and every bad-argument path.
local dps = require "dps"
local core = require "dps.core"
local base64 = require "spec.support.base64"
local vectors = require "spec.support.vectors"
local shell = require "spec.support.shell"

local GROUP_KEY = vectors.derived_keys[1].group_key
local KEY = vectors.dps_tokens[1].key

-- HMAC-SHA256 by the openssl command, base64 out.
local function openssl_hmac(key_b64, message)
  local hexkey = {}
  local key = base64.decode(key_b64)
  for i = 1, #key do
    hexkey[i] = string.format("%02x", key:byte(i))
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

  -- the last valid ID scope is remembered (a gateway signs for one scope)
  it("checks the ID scope on every call, right after a valid one too", function()
    for _, bad in ipairs({ { nil, "id_scope must be a string, got nil" }, { "", "id_scope must not be empty" },
      { "0ne/x", "id_scope must be up to 64 characters" }, { "0ne00000001 ", "id_scope must be up to 64" } }) do
      assert.is_string(dps.registration_token("0ne00000001", "dev", KEY, 1))
      local ok, err = pcall(dps.registration_token, bad[1], "dev", KEY, 1)
      assert.is_false(ok)
      assert.truthy(tostring(err):find(bad[2], 1, true), tostring(err))
    end
  end)

  it("refuses a missing ID scope before any valid one", function()
    local saved = package.loaded["dps.check"]
    package.loaded["dps.check"] = nil
    local fresh = require "dps.check" -- no scope remembered yet
    package.loaded["dps.check"] = saved
    assert.are.equal("id_scope must be a string, got nil", fresh.id_scope(nil))
    assert.are.equal("id_scope must be a string, got boolean", fresh.id_scope(false))
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

  -- percent-encoding by hand, not by the core
  local function pct(s)
    return (s:gsub("[^%w%-%._~]", function(c) return string.format("%%%02X", c:byte()) end))
  end

  -- the C core builds short tokens in a buffer on its stack and long ones in
  -- one sized by the arguments: both sides of that line, up to the limits,
  -- with every byte of the URI and key name tripled by percent-encoding
  for _, case in ipairs({ { 1, nil }, { 280, 1 }, { 300, 256 }, { 320, nil }, { 4096, 256 }, { 4096, nil } }) do
    local uri_len, name_len = case[1], case[2]
    it(("builds the token of a %d-byte URI and a %s key name"):format(uri_len, tostring(name_len)), function()
      local uri = ("/é"):rep(uri_len):sub(1, uri_len)
      local name = name_len and ("/"):rep(name_len) or nil
      local expiry, se = 2 ^ 53 - 1, "9007199254740991" -- the longest expiry
      local sig = core.base64_encode(core.hmac_sha256(base64.decode(KEY), pct(uri) .. "\n" .. se))
      local want = "SharedAccessSignature sr=" .. pct(uri) .. "&sig=" .. pct(sig) .. "&se=" .. se
        .. (name and "&skn=" .. pct(name) or "")
      local got = dps.sas_token(uri, KEY, expiry, name)
      -- not assert.are.equal: the tokens run to 12 KB
      assert.is_true(got == want, ("%d bytes, %d expected"):format(#got, #want))
      -- a key problem names its position whatever the size
      local ok, err = pcall(dps.sas_token, uri, "QUJD RA=", expiry, name)
      assert.is_false(ok)
      assert.matches("key has a space at position 5$", err)
    end)
  end
end)

-- Misuse: each row is { pattern, function, arguments... }; the message must
-- match the pattern and never hold key material.
local BAD_CALLS = {
  -- expiry: fractional, negative, NaN, huge, not a number (C's rule alone)
  { "expiry", dps.registration_token, "0ne00000001", "dev", KEY, 1.5 },
  { "expiry", dps.registration_token, "0ne00000001", "dev", KEY, -1 },
  { "expiry", dps.registration_token, "0ne00000001", "dev", KEY, 0 / 0 },
  { "expiry", dps.registration_token, "0ne00000001", "dev", KEY, math.huge },
  { "expiry", dps.registration_token, "0ne00000001", "dev", KEY, 2 ^ 60 },
  { "expiry", dps.registration_token, "0ne00000001", "dev", KEY, "1700000000" },
  { "expiry", dps.hub_token, "h", "d", KEY, nil },
  { "expiry", dps.sas_token, "u", KEY, {} },
  { "expiry", core.sas_token, "u", KEY, 1.25 },
  { "expiry", core.sas_token, "u", KEY, -5 },
  -- registration IDs and ID scopes: the service's rules, in Lua
  { "registration_id must not be empty", dps.derive_key, GROUP_KEY, "" },
  { "at most 128", dps.derive_key, GROUP_KEY, ("a"):rep(129) },
  { "position 4", dps.derive_key, GROUP_KEY, "dev/1" },
  { "registration_id may only contain", dps.registration_token, "0ne00000001", "dev 1", KEY, 1 },
  { "registration_id may only contain", dps.registration_token, "0ne00000001", "dév", KEY, 1 },
  { "NUL", dps.registration_token, "0ne00000001", "dev\0x", KEY, 1 },
  { "registration_id must be a string", dps.derive_key, GROUP_KEY, 42 },
  { "id_scope", dps.registration_token, "", "dev", KEY, 1 },
  { "id_scope", dps.registration_token, "0ne/x", "dev", KEY, 1 },
  { "id_scope", dps.registration_token, nil, "dev", KEY, 1 },
  { "hub_host must not be empty", dps.hub_token, "", "dev", KEY, 1 },
  { "device_id must not be empty", dps.hub_token, "h", "", KEY, 1 },
  { "device_id must be a string", dps.hub_token, "h", 7, KEY, 1 },
  -- resource URIs and key names: bytes, in C
  { "^[^:]+:%d+: dps%.sas_token: resource_uri must not be empty$", dps.sas_token, "", KEY, 1 },
  { "dps%.sas_token: resource_uri must be a string, got nil", dps.sas_token, nil, KEY, 1 },
  { "dps%.sas_token: resource_uri must not contain NUL bytes", dps.sas_token, "a\0b", KEY, 1 },
  { "dps%.sas_token: resource_uri must be at most 4096 bytes", dps.sas_token, ("u"):rep(4097), KEY, 1 },
  { "dps%.sas_token: key_name must not be empty", dps.sas_token, "u", KEY, 1, "" },
  { "dps%.sas_token: key_name must be a string, got number", dps.sas_token, "u", KEY, 1, 5 },
  { "dps%.sas_token: key_name must not contain NUL bytes", dps.sas_token, "u", KEY, 1, "p\0" },
  -- keys: strict base64, named, never quoted
  { "dps%.registration_token: key must be a base64 string, got nil", dps.registration_token,
    "0ne00000001", "dev", nil, 1 },
  { "dps%.registration_token: key must not be empty", dps.registration_token, "0ne00000001", "dev", "", 1 },
  { "dps%.hub_token: key has a character outside the base64 alphabet", dps.hub_token, "h", "d",
    KEY:sub(1, -5) .. "!!==", 1 },
  { "dps%.hub_token: key has padding before its end", dps.hub_token, "h", "d", "QQ=A", 1 },
  { "not a multiple of 4", dps.hub_token, "h", "d", KEY:sub(2), 1 },
  { "dps%.derive_key: group_key has a space at position 5$", dps.derive_key, "QUJD RA=", "dev" },
  { "dps%.derive_key: group_key must be a base64 string", dps.derive_key, 5, "dev" },
  { "dps%.derive_key: group_key is too long", dps.derive_key, ("A"):rep(2048), "dev" },
  { "dps%.sas_token: key is too long", dps.sas_token, "u", ("A"):rep(1028), 1 },
  -- the core called directly names no public function
  { "^[^:]+:%d+: group_key has a space at position 5$", core.derive_key, "QUJD RA=", "dev" },
  { "^[^:]+:%d+: expiry must be", core.sas_token, "u", KEY, -1 },
}

describe("bad arguments", function()
  local unpack = rawget(table, "unpack") or rawget(_G, "unpack")

  for _, row in ipairs(BAD_CALLS) do
    local n = 0
    for i in pairs(row) do n = math.max(n, i) end
    it(("raises %q"):format(row[1]), function()
      -- called from a Lua function of this file, so positions point here
      local ok, err = pcall(function() local r = row[2](unpack(row, 3, n)); return r end)
      assert.is_false(ok)
      assert.truthy(tostring(err):find(row[1]), "message was: " .. tostring(err))
      assert.is_nil(tostring(err):find(KEY, 1, true))
      assert.is_nil(tostring(err):find(GROUP_KEY, 1, true))
    end)
  end

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
      -- the rules of the client's options, of its key, of provisioning's
      -- options and payload, and of endpoints: each blames this file too
      function() local r = dps.new({ id_scope = "0ne00000001", registration_id = "d", symmetric_key = KEY,
        key_password = "pw" }); return r end,
      function() local r = dps.new({ id_scope = "0ne00000001", registration_id = "d", group_key = "QQ=A" })
        return r end,
      function() local r = dps.new({ id_scope = "0ne00000001", registration_id = "d", symmetric_key = KEY,
        endpoint = "http://x" }); return r end,
      function() local r = dps.provision({ id_scope = "0ne00000001", registration_id = "d", symmetric_key = KEY,
        payload = { true } }); return r end,
      function() local r = dps.provision({ id_scope = "0ne00000001", registration_id = "d", symmetric_key = KEY,
        timeout = -1 }); return r end,
      function()
        local c = dps.new({ id_scope = "0ne00000001", registration_id = "d", symmetric_key = KEY })
        c:close()
        local r = c:provision(); return r end,
    }
    for _, call in ipairs(calls) do
      local ok, err = pcall(call)
      local line = debug.getinfo(call, "S").linedefined
      if tostring(err):find("closed", 1, true) then line = debug.getinfo(call, "S").lastlinedefined end
      assert.is_false(ok)
      assert.are.equal("spec/sas_spec.lua:" .. line .. ":", tostring(err):match("^[^:]+:%d+:"),
        "message was: " .. tostring(err))
    end
  end)
end)

describe("dps.core.key_problem", function()
  local CASES = {
    { KEY, nil },
    { "", "must not be empty" },
    { "QQ=A", "has padding before its end at position 3" },
    { "QUJD RA=", "has a space at position 5" },
    { "QU*D", "has a character outside the base64 alphabet at position 3" },
    { "QR==", "is not canonical (non-zero bits after its last byte)" },
    { KEY:sub(2), "has a length that is not a multiple of 4" },
    { ("A"):rep(1028), "is too long (at most 1024 base64 characters)" },
  }
  for _, case in ipairs(CASES) do
    it(("says %s for a key of %d characters"):format(tostring(case[2]), #case[1]), function()
      assert.are.equal(case[2], core.key_problem(case[1]))
    end)
  end

  it("accepts the longest key sas_token accepts, and raises on a non-string", function()
    local longest = ("A"):rep(1024)
    assert.is_nil(core.key_problem(longest))
    assert.truthy(core.sas_token("u", longest, 1))
    assert.has_error(function() core.key_problem(nil) end)
  end)
end)

-- Issue #10, case 13: key text as operators write it.  A wrapped, quoted or
-- spaced key says what is wrong and where, never the key; a key read whole
-- from a file (one trailing line end) is the key.
describe("key text as operators write it", function()
  local wrapped = KEY:sub(1, 76) .. "\n" .. KEY:sub(77) .. "\n" -- `base64` wraps at 76 columns
  local CASES = {
    { "wrapped at 76 columns", wrapped, "has a line break at position 77" },
    { "wrapped with CR LF", KEY:sub(1, 76) .. "\r\n" .. KEY:sub(77), "has a line break at position 77" },
    { "in double quotes", '"' .. KEY .. '"', "has a quote mark at position 1" },
    { "in single quotes", "'" .. KEY .. "'", "has a quote mark at position 1" },
    { "with a space inside", KEY:sub(1, 10) .. " " .. KEY:sub(11), "has a space at position 11" },
    { "with a leading space", " " .. KEY, "has a space at position 1" },
    { "with a trailing space", KEY .. " ", "has a space at position 89" },
    { "with a tab", KEY:sub(1, 40) .. "\t" .. KEY:sub(41), "has a tab at position 41" },
    { "with two trailing line ends", KEY .. "\n\n", "has a line break at position 89" },
    { "with a stray byte", KEY:sub(1, 3) .. "\195\169" .. KEY:sub(4),
      "has a character outside the base64 alphabet at position 4" },
  }
  for _, case in ipairs(CASES) do
    it("says where a key " .. case[1] .. " breaks, without the key", function()
      assert.are.equal(case[3], core.key_problem(case[2]))
      for _, call in ipairs{
        function() return dps.sas_token("u", case[2], 1) end,
        function() return dps.derive_key(case[2], "dev") end,
        function() return dps.new{ id_scope = "0ne00000001", registration_id = "dev", symmetric_key = case[2] } end,
      } do
        local ok, err = pcall(call)
        assert.is_false(ok)
        err = tostring(err)
        assert.truthy(err:find(case[3], 1, true), err)
        -- not the key, nor any 8 characters of it
        for i = 1, #KEY - 7, 4 do
          assert.is_nil(err:find(KEY:sub(i, i + 7), 1, true), "the key leaked into: " .. err)
        end
      end
    end)
  end

  it("takes a key with one trailing line end as the key", function()
    for _, ending in ipairs{ "\n", "\r\n" } do
      assert.is_nil(core.key_problem(KEY .. ending))
      assert.are.equal(dps.sas_token("u", KEY, 1), dps.sas_token("u", KEY .. ending, 1))
      assert.are.equal(dps.derive_key(GROUP_KEY, "dev"), dps.derive_key(GROUP_KEY .. ending, "dev"))
    end
    assert.is_nil(core.key_problem(("A"):rep(1024) .. "\n"))
    assert.are.equal("is too long (at most 1024 base64 characters)", core.key_problem(("A"):rep(1028) .. "\n"))
  end)

  it("takes a key file read whole, as the command does", function()
    local path = os.tmpname()
    finally(function() os.remove(path) end)
    local f = assert(io.open(path, "wb"))
    f:write(KEY, "\n")
    f:close()
    f = assert(io.open(path, "rb"))
    local text = f:read("*a")
    f:close()
    local client = dps.new{ id_scope = "0ne00000001", registration_id = "dev", symmetric_key = text }
    finally(function() client:close() end)
    assert.are.equal(dps.registration_token("0ne00000001", "dev", KEY, 1700000000),
      dps.registration_token("0ne00000001", "dev", text, 1700000000))
  end)
end)
