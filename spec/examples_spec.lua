-- Every example, run as a real process against the local emulator: the Lua
-- programs in examples/ and the code blocks README.md and docs/*.md mark as
-- run here. (examples/openwrt/ runs in spec/openwrt_zero_touch_spec.lua.)
local dps = require "dps"
local emulator = require "spec.support.emulator"
local shell = require "spec.support.shell"
local cjson = require("cjson").new()

local keys = require "spec.support.keys"
local timing = require "spec.support.timing"
local monotime = require("dps.core").monotime
local GROUP_KEY = keys.GROUP_KEY
local KEY = keys.KEY
local OTHER_KEY = keys.OTHER_KEY
local HUB = "emulated-hub.azure-devices.net"

local q, read = shell.quote, shell.read

-- Files the specs write are private (0600) unless a mode is given.
local function write(path, text, mode)
  return shell.write(path, text, mode or "600")
end

-- Escapes a literal string for use in a Lua pattern.
local function literal(s)
  return (s:gsub("[%^%$%(%)%%%.%[%]%*%+%-%?]", "%%%0"))
end

local function mode(path)
  local p = io.popen("ls -ld " .. q(path))
  local line = p:read("*l") or ""
  p:close()
  return line:match("^(%S+)")
end

local interpreter = shell.interpreter

-- The documentation whose marked code blocks this spec runs: README.md and
-- every page under docs/.
local function documents()
  local list = { "README.md" }
  local names = shell.run("cd " .. q(emulator.root) .. " && ls docs/*.md 2>/dev/null")
  for name in (names or ""):gmatch("[^\n]+") do list[#list + 1] = name end
  return list
end

-- Every code block that follows a "runs this block" marker: { file, text }.
local function marked_blocks()
  local out = {}
  for _, file in ipairs(documents()) do
    local text = assert(read(emulator.root .. "/" .. file))
    for block in text:gmatch("<!%-%- spec/examples_spec%.lua runs this block %-%->\n```%w+\n(.-)\n```") do
      out[#out + 1] = { file = file, text = block }
    end
  end
  return out
end

-- What tells each block this spec runs from the others, wherever it lives.
local RUNS = {
  quick_start = "dps.provision{", -- docs/provisioning.md, at the top
  lua_example = "dps.connect{", -- README.md, "From Lua"
  walkthrough = "emulator/dps-emulator.lua --config", -- the command line against the emulator
  test_certificate = "openssl req -x509", -- the X.509 page's test certificate
}

-- The one marked block holding RUNS[name].
local function marked_block(name)
  local found
  for _, block in ipairs(marked_blocks()) do
    if block.text:find(RUNS[name], 1, true) then
      assert(not found, "two blocks marked for spec/examples_spec.lua hold " .. RUNS[name])
      found = block.text
    end
  end
  return found or error("no block marked for spec/examples_spec.lua holds " .. RUNS[name], 2)
end

describe("examples", function()
  local emu, certs, dir

  -- Runs a shell command line with ENV (a 0600 file, sourced: keys stay off
  -- command lines) and the Lua paths of this run (none when `bare`, as in a
  -- new user's shell); returns code, stdout, stderr. Gives up after 5 minutes.
  local function sh(command, env, cwd, bare)
    local envfile = write(dir .. "/env.sh", "")
    local f = assert(io.open(envfile, "wb"))
    if not bare then
      f:write("export LUA_PATH=", q(package.path), " LUA_CPATH=", q(package.cpath), "\n")
    end
    f:write("export LUA=", q(interpreter()), "\n")
    for k, v in pairs(env or {}) do f:write("export ", k, "=", q(v), "\n") end
    f:close()
    local script = write(dir .. "/run.sh", string.format("cd %s || exit 99\n. %s\n%s\n",
      q(cwd or emulator.root), q(envfile), command))
    os.execute(string.format("(unset LUA_PATH LUA_CPATH LUA_PATH_5_4 LUA_CPATH_5_4 LUA_PATH_5_3 LUA_CPATH_5_3 "
      .. "DPS_SYMMETRIC_KEY DPS_GROUP_KEY DPS_KEY_PASSWORD; timeout 300 sh %s) </dev/null >%s 2>%s; echo $? >%s",
      q(script), q(dir .. "/out"),
      q(dir .. "/err"), q(dir .. "/rc")))
    return tonumber((read(dir .. "/rc") or ""):match("%d+")), read(dir .. "/out") or "",
      read(dir .. "/err") or ""
  end

  local function example(name, env, args)
    local e = { DPS_ID_SCOPE = emu.id_scope, DPS_ENDPOINT = emu.endpoint, DPS_CA_FILE = emu.ca_file }
    for k, v in pairs(env or {}) do e[k] = v end
    local quoted = {}
    for i, a in ipairs(args or {}) do quoted[i] = q(a) end
    return sh('"$LUA" examples/' .. name .. " " .. table.concat(quoted, " "), e)
  end

  -- The emulator logs a request just after answering it: wait for n entries
  -- (2 s at most on an idle machine, times how busy it is).
  local function requests(registration_id, n)
    local list, deadline = emu:requests(registration_id), nil
    while #list < n do
      deadline = deadline or monotime() + timing.child_margin(2)
      if monotime() > deadline then break end
      os.execute("sleep 0.05")
      list = emu:requests(registration_id)
    end
    return list
  end

  -- The emulator's log entries that `keep` accepts, waiting for n of them as
  -- `requests` does.
  local function logged(keep, n)
    local deadline
    while true do
      local list = {}
      for _, e in ipairs(emu:log()) do
        if keep(e) then list[#list + 1] = e end
      end
      deadline = deadline or monotime() + timing.child_margin(2)
      if #list >= n or monotime() > deadline then return list end
      os.execute("sleep 0.05")
    end
  end

  local function assert_no_keys(text)
    for _, secret in ipairs({ KEY, GROUP_KEY, OTHER_KEY, "sig=", "PRIVATE KEY" }) do
      assert.is_nil(text:find(secret, 1, true), "a secret in:\n" .. text)
    end
  end

  setup(function()
    certs = emulator.certs()
    dir = shell.tmpdir("dps-examples")
    -- README's test certificate, made by its own commands, enrolled below
    os.execute("mkdir -p " .. q(dir .. "/readme-cert"))
    local code, _, err = sh("set -e\n" .. marked_block("test_certificate"), {}, dir .. "/readme-cert")
    assert(code == 0, "README's openssl commands failed: " .. err)
    local enrollments = {
      { type = "group", group_id = "g1", symmetric_key = GROUP_KEY },
      { type = "group", group_id = "x509-group", attestation = "x509" },
      { type = "individual", registration_id = "x509-self-01", attestation = "x509", certificate = certs.x509_self_01 },
      { type = "individual", attestation = "x509", certificate = dir .. "/readme-cert/my-device-01.pem" },
      { type = "individual", registration_id = "dev-ex-01", symmetric_key = KEY, device_id = "router-01" },
    }
    enrollments[#enrollments + 1] = { type = "individual", registration_id = "router-01", symmetric_key = KEY }
    emu = emulator.start{
      retry_after = "0",
      polls_before_assignment = 1,
      enrollments = enrollments,
      scenarios = { ["leaf-ex-bad"] = { result = "failed" } },
      cloud_to_device = { ["router-01"] = { { body = "reboot" } } }, -- for README.md's Lua example
    }
  end)

  teardown(function()
    if emu then emu:stop() end
    if dir then os.execute("rm -rf " .. q(dir)) end
  end)

  describe("Lua programs", function()
    it("provision_individual.lua provisions with an individual key", function()
      local code, out, err = example("provision_individual.lua", { DPS_REGISTRATION_ID = "dev-ex-01",
        DPS_SYMMETRIC_KEY = KEY })
      assert.are.equal(0, code, err)
      assert.are.equal("dev-ex-01 -> hub " .. HUB .. ", device router-01 (initialAssignment)\n", out)
      code, out, err = example("provision_individual.lua", { DPS_REGISTRATION_ID = "dev-ex-01",
        DPS_SYMMETRIC_KEY = OTHER_KEY })
      assert.are.equal(1, code)
      assert.are.equal("", out)
      assert.truthy(err:find("provisioning failed: register: HTTP 401", 1, true), err)
      assert.truthy(err:find("[kind=auth]", 1, true), err)
      assert_no_keys(err)
    end)

    it("provision_group.lua provisions a group member on one TLS connection", function()
      local code, out, err = example("provision_group.lua", { DPS_REGISTRATION_ID = "leaf-ex-07",
        DPS_GROUP_KEY = GROUP_KEY })
      assert.are.equal(0, code, err)
      assert.truthy(out:match("^leaf%-ex%-07 %-> hub " .. literal(HUB)
        .. ", device leaf%-ex%-07 %(initialAssignment; 2 requests on 1 TLS connection%)\n$"), out)
    end)

    it("iot_central.lua sends the model ID, and the IoT Central gateway when asked", function()
      local code, out, err = example("iot_central.lua", { DPS_REGISTRATION_ID = "thermostat-ex-01",
        DPS_GROUP_KEY = GROUP_KEY })
      assert.are.equal(0, code, err)
      assert.are.equal("thermostat-ex-01 -> hub " .. HUB .. ", device thermostat-ex-01, model "
        .. "dtmi:com:example:Thermostat;1\n", out)
      assert.are.same({ modelId = "dtmi:com:example:Thermostat;1" }, requests("thermostat-ex-01", 1)[1].payload)

      code, out, err = example("iot_central.lua", { DPS_REGISTRATION_ID = "sensor-ex-02", DPS_GROUP_KEY = GROUP_KEY,
        DPS_MODEL_ID = "dtmi:com:example:Sensor;2", DPS_GATEWAY_ID = "gateway-ex-01" })
      assert.are.equal(0, code, err)
      assert.are.equal("sensor-ex-02 -> hub " .. HUB .. ", device sensor-ex-02, model dtmi:com:example:Sensor;2, "
        .. "gateway gateway-ex-01\n", out)
      assert.are.same({ modelId = "dtmi:com:example:Sensor;2", iotcGateway = { iotcGatewayId = "gateway-ex-01" } },
        requests("sensor-ex-02", 1)[1].payload)
    end)

    it("gateway_leaves.lua provisions each leaf on its own client and reports each", function()
      local key_file = write(dir .. "/group.key", GROUP_KEY .. "\n")
      local leaves = { "leaf-ex-a", "leaf-ex-b", "leaf-ex-c" }
      local code, out, err = example("gateway_leaves.lua", { DPS_GROUP_KEY_FILE = key_file }, leaves)
      assert.are.equal(0, code, err)
      local expected = {}
      for i, leaf in ipairs(leaves) do expected[i] = leaf .. ": assigned to " .. HUB .. " as " .. leaf end
      expected[#expected + 1] = "3 of 3 leaves assigned"
      assert.are.equal(table.concat(expected, "\n") .. "\n", out)
      local seen = {}
      for _, leaf in ipairs(leaves) do
        local conns = emu:connections(leaf)
        assert.are.equal(1, #conns, leaf)
        assert.is_nil(seen[conns[1]], "two leaves on one connection")
        seen[conns[1]] = true
      end

      code, out = example("gateway_leaves.lua", { DPS_GROUP_KEY = GROUP_KEY }, { "leaf-ex-d", "leaf-ex-bad" })
      assert.are.equal(1, code)
      assert.truthy(out:find("leaf-ex-d: assigned to " .. HUB .. " as leaf-ex-d\n", 1, true), out)
      assert.truthy(out:find("leaf-ex-bad: FAILED registration failed: ", 1, true), out)
      assert.truthy(out:find("[kind=failed]\n1 of 2 leaves assigned\n", 1, true), out)
      assert_no_keys(out)
      assert.are.equal(2, (example("gateway_leaves.lua", { DPS_GROUP_KEY = GROUP_KEY })))
    end)

    -- issue #10, case 16: one result line per leaf and the summary, whatever goes wrong
    it("gateway_leaves.lua reports a bad leaf ID, a bad setting or a missing key on its leaf's line", function()
      local code, out, err = example("gateway_leaves.lua", { DPS_GROUP_KEY = GROUP_KEY },
        { "leaf-ex-e", "bad id", "leaf\nex\27[2J", string.rep("l", 129) })
      assert.are.equal(1, code, err)
      assert.are.equal("", err)
      local lines = {}
      for line in out:gmatch("[^\n]*\n") do lines[#lines + 1] = line end
      assert.are.equal(5, #lines, out)
      assert.are.equal("leaf-ex-e: assigned to " .. HUB .. " as leaf-ex-e\n", lines[1])
      assert.truthy(lines[2]:find("^bad id: FAILED registration_id may only contain .*%[kind=usage%]\n$"), lines[2])
      assert.truthy(lines[3]:find("^leaf\\nex\\x1b%[2J: FAILED .*%[kind=usage%]\n$"), lines[3])
      assert.truthy(lines[4]:find("%[kind=usage%]\n$"), lines[4])
      assert.are.equal("1 of 4 leaves assigned\n", lines[5])
      assert_no_keys(out)

      for _, env in ipairs({ { DPS_GROUP_KEY_FILE = dir .. "/no-such.key" }, { DPS_GROUP_KEY = "not a key" },
        { DPS_GROUP_KEY = GROUP_KEY, DPS_ID_SCOPE = "" },
        { DPS_GROUP_KEY = GROUP_KEY, DPS_CA_FILE = dir .. "/none" } }) do
        code, out, err = example("gateway_leaves.lua", env, { "leaf-ex-f", "leaf-ex-g" })
        assert.are.equal(1, code, err)
        assert.are.equal("", err)
        assert.truthy(out:find("^leaf%-ex%-f: FAILED [^\n]+%]\nleaf%-ex%-g: FAILED [^\n]+%]\n"
          .. "0 of 2 leaves assigned\n$"), out)
        assert_no_keys(out)
      end
    end)

    it("x509.lua provisions with a certificate chain, a self-signed certificate and an encrypted key", function()
      local code, out, err = example("x509.lua", { DPS_CERT_FILE = certs.x509_device_01_chain,
        DPS_KEY_FILE = certs.x509_device_01_key })
      assert.are.equal(0, code, err)
      assert.truthy(out:match("^x509%-device%-01 %-> hub " .. literal(HUB) .. ", device x509%-device%-01 "
        .. "%(CN=x509%-device%-01, SHA%-256 %x+, group x509%-group%)\n$"), out)
      code, out, err = example("x509.lua", { DPS_CERT_FILE = certs.x509_self_01, DPS_KEY_FILE = certs.x509_self_01_key,
        DPS_REGISTRATION_ID = "x509-self-01" })
      assert.are.equal(0, code, err)
      assert.truthy(out:find("^x509%-self%-01 %-> hub "), out)
      code, out, err = example("x509.lua", { DPS_CERT_FILE = certs.x509_device_01_chain,
        DPS_KEY_FILE = certs.x509_device_01_enc_key, DPS_KEY_PASSWORD = certs.x509_device_01_passphrase })
      assert.are.equal(0, code, err)
      assert.truthy(out:find("^x509%-device%-01 %-> hub "), out)
      code, out, err = example("x509.lua", { DPS_CERT_FILE = certs.x509_device_01_chain,
        DPS_KEY_FILE = certs.x509_device_01_enc_key, DPS_KEY_PASSWORD = "not-the-pass-phrase" })
      assert.are.equal(3, code)
      assert.are.equal("", out)
      assert.truthy(err:find("cannot use the certificate: dps.new: key_file could not be decrypted", 1, true), err)
      assert.truthy(err:find("[kind=credentials]", 1, true), err)
      assert.is_nil(err:find("not-the-pass-phrase", 1, true), err)
    end)

    -- issue 21: the group key comes from the environment, never the command line
    it("cqueues_gateway.lua and hubs_cqueues.lua run on cqueues with the group key from the environment", function()
      if not pcall(require, "cqueues") then
        pending("no cqueues for " .. interpreter())
        return
      end
      local code, out, err = example("cqueues_gateway.lua", { DPS_GROUP_KEY = GROUP_KEY }, { "3" })
      assert.are.equal(0, code, err)
      for i = 1, 3 do
        assert.truthy(out:find(string.format("leaf-00%d\tassigned\t%s\tleaf-00%d\n", i, HUB, i), 1, true), out)
      end
      assert.truthy(out:find("\n3 assigned, 0 failed\ntimer: %d+ ticks, worst delay [%d.]+ ms\n$"), out)
      code, out, err = example("hubs_cqueues.lua", { DPS_GROUP_KEY = GROUP_KEY, DPS_HUB_ENDPOINT = emu.endpoint },
        { "2", "1" })
      assert.are.equal(0, code, err)
      assert.truthy(out:find("^2 acknowledged, 0 failed, %d+ requests on %d+ connections\n$"), out)
      -- the key given as an argument is taken for no key: usage, exit 2
      for _, name in ipairs({ "cqueues_gateway.lua", "hubs_cqueues.lua" }) do
        code, out, err = example(name, {}, { GROUP_KEY })
        assert.are.equal(2, code, err)
        assert.are.equal("", out)
        assert.truthy(err:find("usage: DPS_ID_SCOPE=… DPS_GROUP_KEY=… " .. name, 1, true), err)
        assert_no_keys(err)
      end
    end)
  end)

  describe("the documentation's code blocks", function()
    it("are each run here: every marked block is one this spec knows", function()
      local blocks = marked_blocks()
      assert.is_true(#blocks >= 2, "no marked blocks found")
      for _, block in ipairs(blocks) do
        local known = 0
        for _, needle in pairs(RUNS) do
          if block.text:find(needle, 1, true) then known = known + 1 end
        end
        assert.are.equal(1, known, block.file .. " marks a block that spec/examples_spec.lua does not run:\n"
          .. block.text)
      end
    end)

    it("the provisioning page's first example provisions", function()
      local program = write(dir .. "/quick_start.lua", marked_block("quick_start"))
      local code, out, err = sh('"$LUA" ' .. q(program), { DPS_SYMMETRIC_KEY = KEY, DPS_ENDPOINT = emu.endpoint,
        DPS_CA_FILE = emu.ca_file })
      assert.are.equal(0, code, err)
      assert.are.equal(HUB .. "\trouter-01\n", out)
    end)

    it("README.md's Lua example provisions, sends, takes a message, and answers from its cache after that", function()
      -- as written, except: the cache in this run's folder, not /etc
      local cache_file = dir .. "/readme-example/assignment.json"
      os.execute("mkdir -p " .. q(dir .. "/readme-example"))
      local text = marked_block("lua_example")
      local program = text:gsub('"/etc/dps/assignment%.json"', function() return string.format("%q", cache_file) end)
      assert.are_not.equal(text, program, "the example no longer keeps its assignment in /etc/dps/assignment.json")
      program = write(dir .. "/readme-example/example.lua", program)
      local env = { DPS_SYMMETRIC_KEY = KEY, DPS_ENDPOINT = emu.endpoint, DPS_HUB_ENDPOINT = emu.endpoint,
        DPS_CA_FILE = emu.ca_file }
      local function registrations(n)
        return #logged(function(e)
          return e.event == "request" and e.method == "PUT" and e.registration_id == "router-01"
        end, n)
      end
      local code, out, err = sh('"$LUA" ' .. q(program), env)
      assert.are.equal(0, code, err)
      assert.are.equal("", err)
      assert.are.equal("router-01\t" .. HUB .. "\tservice\nmessage:\treboot\n", out)
      local before = registrations(1)
      code, out, err = sh('"$LUA" ' .. q(program), env)
      assert.are.equal(0, code, err)
      assert.are.equal("router-01\t" .. HUB .. "\tcache\n", out) -- the message was completed: none waits
      assert.are.equal(before, registrations(before), "the second run registered again")
      local sent = logged(function(e)
        return e.event == "telemetry" and e.device_id == "router-01" and e.body == '{"temperature":21.5}'
      end, 2)
      assert.are.equal(2, #sent)
      local completed = logged(function(e) return e.kind == "hub_complete" and e.device_id == "router-01" end, 1)
      assert.are.equal(1, #completed)
    end)

    it("the command-line walkthrough against the emulator works as written", function()
      -- as written, except: its own folder and port (so runs never collide),
      -- and no `make` (the suite has built everything and made the certificates)
      -- below the ephemeral range (32768+), and apart for suites running side by side
      local port = tostring(20000 + math.floor(monotime() * 1e6) % 12000)
      local block = marked_block("walkthrough"):gsub("\nmake [^\n]*", ""):gsub("^make [^\n]*\n", "")
      local try = (dir:gsub("%%", "%%%%")) .. "/try"
      block = block:gsub("%$PWD/build/try", try):gsub("build/try", try):gsub("8443", port)
      local code, out, err = sh("set -e\ntrap 'kill $emulator 2>/dev/null || true' EXIT\n" .. block, {}, nil, true)
      assert.are.equal(0, code, err)
      local lines = {}
      for line in out:gmatch("[^\n]+") do lines[#lines + 1] = line end
      assert.are.equal(5, #lines, out)
      assert.are.equal("router-01", cjson.decode(lines[1]).deviceId)
      assert.are.equal("leaf-07", cjson.decode(lines[2]).deviceId)
      assert.are.same({ modelId = "dtmi:com:example:Thermostat;1" }, cjson.decode(lines[2]).payload)
      assert.are.equal("assigned", cjson.decode(lines[3]).status)
      assert.are.equal(dps.derive_key(GROUP_KEY, "leaf-07"), lines[4])
      assert.truthy(lines[5]:find("^SharedAccessSignature sr=0ne00000001%%2Fregistrations%%2Frouter%-01&sig="))
      assert.are.equal("", err)
    end)

    it("the test certificate provisions an individual X.509 enrollment, by x509.lua and by dps", function()
      local cert, key = dir .. "/readme-cert/my-device-01.pem", dir .. "/readme-cert/my-device-01.key"
      assert.are.equal("-rw-------", mode(key))
      local code, out, err = example("x509.lua", { DPS_CERT_FILE = cert, DPS_KEY_FILE = key })
      assert.are.equal(0, code, err)
      assert.truthy(out:find("^my%-device%-01 %-> hub "), out)
      code, out, err = sh(string.format('"$LUA" bin/dps provision --id-scope %s --cert-file %s --key-file %s '
        .. "--endpoint %s --ca-file %s", emu.id_scope, q(cert), q(key), emu.endpoint, q(emu.ca_file)))
      assert.are.equal(0, code, err)
      assert.are.equal("", err)
      assert.are.equal("my-device-01", cjson.decode(out).deviceId)
    end)
  end)
end)
