-- Certificates the device earns, end to end against the emulator (which
-- checks each CSR and issues from its own CA) over real HTTPS: a group
-- member onboards by its derived key, earns a P-384 certificate and sends to
-- the hub by mutual TLS with it; the next run makes no request; the command
-- line (provision, renew, send); the service's bad answers; and renewals
-- killed at random instants never leave a certificate without its key.
local dps = require "dps"
local core = require "dps.core"
local cli = require "dps.cli"
local certificate = require "dps.certificate"
local emulator = require "spec.support.emulator"
local keys = require "spec.support.keys"
local shell = require "spec.support.shell"

local q = shell.quote
local POLICY = { validity_days = 30, curves = { "P-384", "P-256" } }

local function sink()
  local t = { text = "" }
  function t:write(s) self.text = self.text .. s end
  return t
end

describe("certificates the device earns, against the emulator", function()
  local emu, dir

  setup(function()
    dir = shell.tmpdir("dps-cert-emu")
    emu = emulator.start{ retry_after = "0", enrollments = {
      { type = "group", group_id = "cert-group", symmetric_key = keys.GROUP_KEY, certificate_policy = POLICY },
    }, scenarios = {
      ["ce-bad"] = { issuance = { "no_chain", "wrong_key", "garbage", "long_chain" } },
      ["ce-reversed"] = { issuance = { "reversed" } },
    } }
  end)

  teardown(function()
    if emu then emu:stop() end
    if dir then shell.succeeds("rm -rf " .. q(dir)) end
  end)

  local function folder(name)
    local f = dir .. "/" .. name
    shell.succeeds("mkdir -p -m 700 " .. q(f))
    return f
  end

  -- dps.provision's options (`hub`: dps.connect's, with the emulator's hub)
  local function opts(id, hub)
    local f = folder(id)
    local o = { id_scope = emu.id_scope, registration_id = id, group_key = keys.GROUP_KEY, endpoint = emu.endpoint,
      ca_file = emu.ca_file, cache = f .. "/assignment.json", certificate = { dir = f } }
    if hub then o.hub_endpoint = emu.endpoint end
    return o, f
  end

  local function kinds(id)
    local out = {}
    for _, e in ipairs(emu:requests(id)) do out[#out + 1] = e.kind .. ":" .. tostring(e.auth) end
    return out
  end

  it("a group member earns a certificate, sends over mutual TLS with it, and next time asks nothing", function()
    local o, f = opts("ce-group-1", true)
    local hub = assert(dps.connect(o))
    local how = hub.provisioned
    assert.is_true(how.certificate.issued)
    assert.is_true((hub:send("hello")))
    hub:close()
    local log = kinds("ce-group-1")
    assert.are.equal("x509_issued", log[#log]:match(":(.*)$")) -- the hub took the issued certificate
    assert.are.equal("P-384", core.key_info(shell.read(f .. "/key.pem")).curve)
    local out, ok = shell.run(string.format("openssl verify -CAfile %s -untrusted %s %s 2>&1",
      q(emu.certs.issuance_root_ca), q(f .. "/cert.pem"), q(f .. "/cert.pem")))
    assert.is_true(ok, out)
    -- the next run: nothing to DPS, the hub by the same certificate
    local before = #emu:requests("ce-group-1")
    hub = assert(dps.connect(o))
    assert.are.equal("cache", hub.provisioned.source)
    assert.is_false(hub.provisioned.certificate.issued)
    assert.is_true((hub:send("again")))
    hub:close()
    log = kinds("ce-group-1")
    assert.are.equal(before + 1, #log)
    assert.truthy(log[#log]:find("x509_issued", 1, true))
  end)

  it("finds the leaf by its key when the service sends the chain root first", function()
    local o, f = opts("ce-reversed")
    local state, how = dps.provision(o)
    assert.truthy(state, how)
    assert.are.equal("ce-reversed", core.cert_info(shell.read(f .. "/cert.pem")).cn)
  end)

  it("bad answers (no chain, another key's, garbage, 100 certificates) are kind protocol, never a raise", function()
    for _ = 1, 4 do
      local o, f = opts("ce-bad")
      local ok, state, message, info = pcall(dps.provision, o)
      assert.is_true(ok, tostring(state))
      assert.is_nil(state)
      assert.are.equal("protocol", info.kind, message)
      assert.is_nil(shell.read(f .. "/key.pem"))
    end
  end)

  it("the command line: provision --issue-cert, renew (a new key, a new serial), send over it", function()
    local _, f = opts("ce-cli")
    local base = { "--id-scope", emu.id_scope, "--registration-id", "ce-cli", "--endpoint", emu.endpoint,
      "--ca-file", emu.ca_file, "--issue-cert", f, "--cache", f .. "/assignment.json" }
    local env = { DPS_GROUP_KEY = keys.GROUP_KEY }
    local function run(command, ...)
      local argv = { command }
      for _, a in ipairs(base) do argv[#argv + 1] = a end
      for _, a in ipairs({ ... }) do argv[#argv + 1] = a end
      local out, err = sink(), sink()
      local code = cli.main(argv, env, { stdout = out, stderr = err, stdin = { read = function() return nil end } })
      return code, out.text, err.text
    end
    local code, _, err = run("provision")
    assert.are.equal(0, code, err)
    local serial = err:match("certificate (%x+), valid until")
    assert.truthy(serial, err)
    assert.truthy(err:find("issued now", 1, true), err)
    local key = shell.read(f .. "/key.pem")
    code, _, err = run("renew")
    assert.are.equal(0, code, err)
    assert.are_not.equal(serial, err:match("certificate (%x+), valid until"))
    assert.are_not.equal(key, shell.read(f .. "/key.pem"))
    code, _, err = run("send", "--hub-endpoint", emu.endpoint, "a message")
    assert.are.equal(0, code, err)
    assert.truthy(kinds("ce-cli")[#kinds("ce-cli")]:find("x509_issued", 1, true))
    assert.is_nil(err:find(keys.GROUP_KEY, 1, true))
  end)

  it("with the clock moved past 80 % of the validity (faketime), a run renews: a new key and serial", function()
    local lua, cpath = shell.plain()
    local probe = shell.run("faketime -f +25d " .. lua .. " -e 'print(os.time())' 2>/dev/null")
    if (tonumber(probe) or 0) <= os.time() + 86400 then
      pending("faketime cannot move this interpreter's clock (not glibc, or under emulation)")
      return
    end
    local o, f = opts("ce-faketime")
    local _, how = assert(dps.provision(o))
    local serial, key = how.certificate.serial, shell.read(f .. "/key.pem")
    o.cache = nil -- provision_once takes dps.provision's options as JSON
    local file = shell.write(dir .. "/faketime.json", require("cjson").encode(o), "600")
    local out, ok = shell.run(string.format("LUA_PATH=%s LUA_CPATH=%s faketime -f +25d %s %s %s 2>&1",
      q(package.path), q(cpath), lua, q(emulator.root .. "/spec/support/provision_once.lua"), q(file)))
    assert.is_true(ok, out)
    local r = require("cjson").decode(out)
    assert.truthy(r.state, r.message)
    assert.is_true(r.info.certificate.issued)
    assert.are_not.equal(serial, r.info.certificate.serial)
    assert.are_not.equal(key, shell.read(f .. "/key.pem"))
  end)

  -- Renewals in a child process, killed at random instants: after each
  -- kill, the folder holds a certificate and the key it is for.
  local function kill_renewals(times)
    local o, f = opts("ce-kill")
    assert(dps.provision(o)) -- a first pair
    local script = shell.write(dir .. "/renew.lua", table.concat({
      "package.path = " .. string.format("%q", package.path),
      "package.cpath = " .. string.format("%q", package.cpath),
      "local dps = require 'dps'",
      string.format("local o = { id_scope = %q, registration_id = 'ce-kill', group_key = %q, endpoint = %q, "
        .. "ca_file = %q, certificate = { dir = %q, renew = true } }", emu.id_scope, keys.GROUP_KEY, emu.endpoint,
        emu.ca_file, f),
      "while true do dps.provision(o) end",
    }, "\n"), "600")
    local torn = 0
    for i = 1, times do
      shell.run(string.format("%s %s >/dev/null 2>&1 & p=$!; sleep %.3f; kill -9 $p; wait $p 2>/dev/null",
        q(shell.interpreter()), q(script), 0.05 + math.random() * 0.6))
      local held, why = certificate.usable({ dir = f }, "ce-kill", os.time())
      if not held then
        torn = torn + 1
        print("\n# after kill " .. i .. ": " .. tostring(why))
      end
    end
    assert.are.equal(0, torn)
  end

  it("renewals killed at random instants never leave a certificate without its key (5 kills)", function()
    kill_renewals(5)
  end)

  it("#soak 50 kills", function()
    kill_renewals(50)
  end)
end)
