-- The dps command-line tool: every command, flag family and exit code,
-- in-process (dps.cli.main) and as a real process (bin/dps), against the
-- local emulator; and the rule that no output ever holds a secret.
local dps = require "dps"
local cli = require "dps.cli"
local emulator = require "spec.support.emulator"
local shell = require "spec.support.shell"
local cjson = require("cjson").new()

local keys = require "spec.support.keys"
local GROUP_KEY = keys.GROUP_KEY
local KEY = keys.KEY
local OTHER_KEY = keys.OTHER_KEY
local PASSPHRASE = "test-pass"

local q, read = shell.quote, shell.read

-- Files the specs write are private (0600) unless a mode is given.
local function write(path, text, mode)
  return shell.write(path, text, mode or "600")
end

local function buffer()
  local b = { parts = {} }
  function b.write(self, ...)
    for i = 1, select("#", ...) do self.parts[#self.parts + 1] = tostring((select(i, ...))) end
    return self
  end
  function b.text(self) return table.concat(self.parts) end
  return b
end

local interpreter = shell.interpreter

-- Everything that must never appear in an output that is not the asked-for value.
local SECRETS = { KEY, GROUP_KEY, OTHER_KEY, PASSPHRASE, "PRIVATE KEY", "sig=", "SharedAccessSignature" }

local function assert_no_secrets(text, extra)
  for _, secret in ipairs(SECRETS) do
    assert.is_nil(text:find(secret, 1, true), "output holds a secret (" .. secret:sub(1, 12) .. "…):\n" .. text)
  end
  for _, secret in ipairs(extra or {}) do
    assert.is_nil(text:find(secret, 1, true), "output holds a derived key:\n" .. text)
  end
end

describe("dps command line", function()
  local emu, certs, dir

  -- In-process: returns exit code, stdout, stderr.
  local function main(args, env)
    local out, err = buffer(), buffer()
    local code = cli.main(args, env or {}, { stdout = out, stderr = err })
    return code, out:text(), err:text()
  end

  -- As a process: `lua bin/dps ARGS` with ENV (written to a 0600 file and
  -- sourced, so that no key shows up in this test's own command lines).
  local function process(args, env)
    local envfile = write(dir .. "/env.sh", "", "600")
    local f = assert(io.open(envfile, "wb"))
    f:write("export LUA_PATH=", q(package.path), " LUA_CPATH=", q(package.cpath), "\n")
    for k, v in pairs(env or {}) do f:write("export ", k, "=", q(v), "\n") end
    f:close()
    local quoted = {}
    for i, a in ipairs(args) do quoted[i] = q(a) end
    local cmd = string.format("(unset LUA_PATH_5_4 LUA_CPATH_5_4 LUA_PATH_5_3 LUA_CPATH_5_3 DPS_SYMMETRIC_KEY "
      .. "DPS_GROUP_KEY DPS_KEY_PASSWORD; . %s && exec %s %s %s) </dev/null >%s 2>%s; echo $? >%s",
      q(envfile), interpreter(), q(emulator.root .. "/bin/dps"), table.concat(quoted, " "),
      q(dir .. "/out"), q(dir .. "/err"), q(dir .. "/rc"))
    os.execute(cmd)
    return tonumber((read(dir .. "/rc") or ""):match("%d+")), read(dir .. "/out") or "",
      read(dir .. "/err") or ""
  end

  local function args(registration_id, ...)
    local a = { "provision", "--id-scope", emu.id_scope, "--endpoint", emu.endpoint, "--ca-file", emu.ca_file }
    if registration_id then
      a[#a + 1], a[#a + 2] = "--registration-id", registration_id
    end
    for i = 1, select("#", ...) do a[#a + 1] = (select(i, ...)) end
    return a
  end

  -- The emulator logs a request just after answering it: wait for n entries.
  local function requests(registration_id, n)
    local list = emu:requests(registration_id)
    for _ = 1, 40 do
      if #list >= n then break end
      os.execute("sleep 0.05")
      list = emu:requests(registration_id)
    end
    return list
  end

  -- Replaces the value of a flag in an argument list, or adds the flag.
  local function set(a, flag, value)
    for i = 1, #a do
      if a[i] == flag then
        a[i + 1] = value
        return a
      end
    end
    a[#a + 1], a[#a + 2] = flag, value
    return a
  end

  local function with_command(command, a)
    a[1] = command
    return a
  end

  -- Messages name the command line's flags, never the Lua options.
  local function assert_flag_names(text)
    for _, name in ipairs({ "cert_file", "key_file", "key_password", "registration_id", "id_scope", "ca_file",
      "symmetric_key", "group_key", "dps.new" }) do
      assert.is_nil(text:find(name, 1, true), "names " .. name .. ": " .. text)
    end
  end

  local function one_line(text)
    assert.are.equal(1, select(2, text:gsub("\n", "")), "not one line:\n" .. text)
    assert.truthy(text:match("^dps: "), text)
    assert.is_nil(text:find("traceback", 1, true), text)
    assert.is_nil(text:find("%.lua:%d+:"), text)
  end

  local key_file, group_key_file, other_key_file

  setup(function()
    certs = emulator.certs()
    dir = shell.tmpdir("dps-cli")
    key_file = write(dir .. "/device.key", KEY .. "\n")
    group_key_file = write(dir .. "/group.key", GROUP_KEY .. "\n")
    other_key_file = write(dir .. "/other.key", OTHER_KEY)
    -- private keys kept as they should be (mode 0600): no permission warning
    local shared = certs
    certs = setmetatable({}, { __index = shared })
    for _, name in ipairs({ "x509_device_01_key", "x509_device_01_enc_key", "x509_self_01_key", "rogue_key" }) do
      certs[name] = write(dir .. "/" .. name .. ".pem", read(shared[name]))
    end
    local enrollments = {
      { type = "group", group_id = "g1", symmetric_key = GROUP_KEY },
      { type = "group", group_id = "x509-group", attestation = "x509" },
      { type = "individual", registration_id = "x509-self-01", attestation = "x509", certificate = certs.x509_self_01 },
    }
    for _, id in ipairs({ "dev-01", "dev-02", "dev-env", "dev-proc", "dev-failed", "dev-disabled", "dev-400",
      "dev-busy", "dev-verbose", "dev-mode" }) do
      enrollments[#enrollments + 1] = { type = "individual", registration_id = id, symmetric_key = KEY,
        device_id = id .. "-hub" }
    end
    emu = emulator.start{
      retry_after = "0",
      polls_before_assignment = 0,
      enrollments = enrollments,
      scenarios = {
        ["dev-failed"] = { result = "failed" },
        ["dev-disabled"] = { result = "disabled" },
        ["dev-400"] = { register = { { status = 400 } } },
        ["dev-busy"] = { lookup = { { status = 429, retry_after = "7" } } },
        ["dev-verbose"] = { polls_before_assignment = 1 },
      },
    }
  end)

  teardown(function()
    if emu then emu:stop() end
    if dir then os.execute("rm -rf " .. q(dir)) end
  end)

  describe("help, version and usage", function()
    it("prints the overview with every command and the exit codes", function()
      for _, a in ipairs({ { "--help" }, { "-h" }, { "help" } }) do
        local code, out, err = main(a)
        assert.are.equal(0, code)
        assert.are.equal("", err)
        for _, word in ipairs({ "provision", "status", "token", "derive-key", "DPS_SYMMETRIC_KEY", "DPS_GROUP_KEY" }) do
          assert.truthy(out:find(word, 1, true), word)
        end
        for n = 0, 6 do
          assert.truthy(out:find("\n  " .. n .. "  "), "exit code " .. n)
        end
      end
    end)

    it("prints each command's options with COMMAND --help and help COMMAND", function()
      for _, command in ipairs({ "provision", "status", "token", "derive-key" }) do
        local code, out = main({ command, "--help" })
        assert.are.equal(0, code)
        assert.truthy(out:find("^usage: dps " .. command:gsub("%-", "%%-")), out)
        local code2, out2 = main({ "help", command })
        assert.are.equal(0, code2)
        assert.are.equal(out, out2)
      end
      assert.truthy(select(2, main({ "provision", "--help" })):find("--payload", 1, true))
      assert.truthy(select(2, main({ "token", "--help" })):find("--ttl", 1, true))
    end)

    it("prints the version", function()
      local code, out = main({ "--version" })
      assert.are.equal(0, code)
      assert.truthy(out:find("dps (lua-azure-dps) " .. dps._VERSION, 1, true), out)
    end)

    it("exits 2 without a command, with an unknown command, option or stray argument", function()
      local code, out, err = main({})
      assert.are.equal(2, code)
      assert.are.equal("", out)
      assert.truthy(err:find("usage: dps COMMAND", 1, true))
      for _, a in ipairs({
        { "provison" }, { "--id-scope", "x" }, { "provision", "--bogus", "1" }, { "provision", "--id-scope" },
        { "provision", "--id-scope", "a", "--id-scope", "b" }, { "provision", "stray-value" },
        { "provision", "--verbose=yes" }, { "derive-key", "--symmetric-key-file", key_file },
      }) do
        code, out, err = main(a)
        assert.are.equal(2, code, table.concat(a, " ") .. " → " .. err)
        assert.are.equal("", out)
        one_line(err)
      end
      assert.is_nil(select(3, main({ "provision", "stray-value" })):find("stray-value", 1, true))
    end)

    it("exits 2 when a required flag is missing", function()
      local code, out, err = main({ "provision", "--registration-id", "dev-01", "--symmetric-key-file", key_file })
      assert.are.equal(2, code)
      assert.are.equal("", out)
      assert.truthy(err:find("--id-scope is required", 1, true))
      code, out, err = main({ "token", "--id-scope", "0ne00000001", "--symmetric-key-file", key_file })
      assert.are.equal(2, code)
      assert.are.equal("", out)
      assert.truthy(err:find("--registration-id is required", 1, true))
      code = main({ "derive-key" }, { DPS_GROUP_KEY = GROUP_KEY })
      assert.are.equal(2, code)
    end)
  end)

  describe("keys never on the command line", function()
    it("refuses every key-bearing flag with a usage error pointing to a file or variable", function()
      local cases = {
        { "--key", "DPS_SYMMETRIC_KEY" }, { "--symmetric-key", "--symmetric-key-file" },
        { "--primary-key", "--symmetric-key-file" },
        { "--group-key", "DPS_GROUP_KEY" }, { "--key-password", "DPS_KEY_PASSWORD" },
        { "--password", "--key-password-file" }, { "--sas-token", "key file" },
      }
      for _, case in ipairs(cases) do
        for _, form in ipairs({ { case[1], KEY }, { case[1] .. "=" .. KEY } }) do
          local a = args("dev-01", form[1], form[2])
          local code, out, err = main(a)
          assert.are.equal(2, code, case[1])
          assert.are.equal("", out)
          one_line(err)
          assert.truthy(err:find("not accepted on the command line", 1, true), err)
          assert.truthy(err:find(case[2], 1, true), err)
          assert_no_secrets(err)
        end
      end
    end)

    it("refuses them as a process too, exit status 2", function()
      local code, out, err = process({ "token", "--id-scope", "0ne00000001", "--registration-id", "dev-01",
        "--symmetric-key", KEY })
      assert.are.equal(2, code)
      assert.are.equal("", out)
      one_line(err)
      assert_no_secrets(err)
    end)
  end)

  describe("provision", function()
    it("provisions with --key-file and prints the registration state as JSON", function()
      local code, out, err = main(args("dev-01", "--symmetric-key-file", key_file))
      assert.are.equal(0, code, err)
      assert.are.equal("", err)
      assert.truthy(out:match("^{.*}\n$"))
      local state = cjson.decode(out)
      assert.are.equal("emulated-hub.azure-devices.net", state.assignedHub)
      assert.are.equal("dev-01-hub", state.deviceId)
      assert.are.equal("assigned", state.status)
      assert_no_secrets(out)
    end)

    it("provisions with DPS_SYMMETRIC_KEY, and as a process", function()
      local code, out, err = main(args("dev-env"), { DPS_SYMMETRIC_KEY = KEY })
      assert.are.equal(0, code, err)
      assert.are.equal("dev-env-hub", cjson.decode(out).deviceId)
      code, out, err = process(args("dev-proc"), { DPS_SYMMETRIC_KEY = KEY })
      assert.are.equal(0, code, err)
      assert.are.equal("", err)
      assert.are.equal("dev-proc-hub", cjson.decode(out).deviceId)
    end)

    it("provisions a group member from --group-key-file or DPS_GROUP_KEY", function()
      local code, out, err = main(args("leaf-cli-1", "--group-key-file", group_key_file))
      assert.are.equal(0, code, err)
      local state = cjson.decode(out)
      assert.are.equal("leaf-cli-1", state.deviceId)
      assert.are.equal("g1", state.symmetricKey.enrollmentGroupId)
      code, out = main(args("leaf-cli-2"), { DPS_GROUP_KEY = GROUP_KEY })
      assert.are.equal(0, code)
      assert.are.equal("leaf-cli-2", cjson.decode(out).deviceId)
    end)

    it("sends --payload as the registration payload", function()
      local code, out, err = main(args("leaf-cli-3", "--group-key-file", group_key_file,
        "--payload", '{"modelId":"dtmi:com:example:Thermostat;1","n":2}'))
      assert.are.equal(0, code, err)
      assert.are.same({ modelId = "dtmi:com:example:Thermostat;1", n = 2 }, cjson.decode(out).payload)
      assert.truthy(out:find('"dtmi:com:example:Thermostat;1"', 1, true))
      assert.are.same({ modelId = "dtmi:com:example:Thermostat;1", n = 2 }, requests("leaf-cli-3", 1)[1].payload)
      for _, bad in ipairs({ "{", "[1,2]", '"text"', "42" }) do
        local c, _, e = main(args("leaf-cli-3", "--group-key-file", group_key_file, "--payload", bad))
        assert.are.equal(2, c, bad)
        one_line(e)
        assert.truthy(e:find("--payload", 1, true))
      end
    end)

    it("provisions with an X.509 certificate, the registration ID taken from its CN", function()
      local code, out, err = main(args(nil, "--cert-file", certs.x509_device_01_chain,
        "--key-file", certs.x509_device_01_key))
      assert.are.equal(0, code, err)
      local state = cjson.decode(out)
      assert.are.equal("x509-device-01", state.deviceId)
      assert.are.equal("x509-group", state.x509.enrollmentGroupId)
      code, out, err = main(args("x509-self-01", "--cert-file", certs.x509_self_01, "--key-file",
        certs.x509_self_01_key))
      assert.are.equal(0, code, err)
      assert.are.equal("x509-self-01", cjson.decode(out).deviceId)
    end)

    it("reads an encrypted key's pass phrase from DPS_KEY_PASSWORD or --key-password-file", function()
      local cert = { "--cert-file", certs.x509_device_01_chain, "--key-file", certs.x509_device_01_enc_key }
      local code, out, err = main(args(nil, cert[1], cert[2], cert[3], cert[4]), { DPS_KEY_PASSWORD = PASSPHRASE })
      assert.are.equal(0, code, err)
      assert.are.equal("x509-device-01", cjson.decode(out).deviceId)
      local pw = write(dir .. "/pass", PASSPHRASE .. "\n")
      code, out, err = main(args(nil, cert[1], cert[2], cert[3], cert[4], "--key-password-file", pw))
      assert.are.equal(0, code, err)
      assert.are.equal("x509-device-01", cjson.decode(out).deviceId)
    end)

    it("exits 3 for local credential problems", function()
      local wrong = write(dir .. "/wrong-pass", "nope")
      local not_base64 = write(dir .. "/bad.key", "this is not base64!")
      local empty = write(dir .. "/empty.key", "\n")
      local cases = {
        { args("dev-01", "--symmetric-key-file", dir .. "/missing.key"), {}, "missing.key" },
        { args("dev-01", "--symmetric-key-file", not_base64), {}, "base64" },
        { args("dev-01", "--symmetric-key-file", empty), {}, "empty" },
        { args("dev-01"), {}, "no key" },
        { args("dev-01"), { DPS_SYMMETRIC_KEY = "" }, "no key" },
        { args(nil, "--cert-file", certs.x509_device_01_chain, "--key-file", certs.x509_device_01_enc_key), {},
          "pass" },
        { args(nil, "--cert-file", certs.x509_device_01_chain, "--key-file", certs.x509_device_01_enc_key,
          "--key-password-file", wrong), {}, "wrong --key-password-file" },
        { args(nil, "--cert-file", dir .. "/missing.pem", "--key-file", certs.x509_device_01_key), {},
          "--cert-file " .. dir .. "/missing.pem: No such file or directory" },
        { args(nil, "--cert-file", certs.x509_device_01_chain, "--key-file", dir .. "/missing.pem"), {},
          "--key-file " .. dir .. "/missing.pem: No such file or directory" },
        { args("someone-else", "--cert-file", certs.x509_self_01, "--key-file", certs.x509_self_01_key), {},
          "--registration-id \"someone-else\" differs from the certificate's subject CN \"x509-self-01\"" },
      }
      for _, case in ipairs(cases) do
        local code, out, err = main(case[1], case[2])
        assert.are.equal(3, code, err)
        assert.are.equal("", out)
        one_line(err)
        assert.truthy(err:find(case[3], 1, true), err)
        assert_no_secrets(err)
        assert_flag_names(err)
      end
    end)

    it("exits 2 for misuse the library detects, in one clean line", function()
      local cases = {
        { args("bad id!", "--symmetric-key-file", key_file), "--registration-id may only contain" },
        { set(args("dev-01", "--symmetric-key-file", key_file), "--endpoint", "http://localhost:1"), "endpoint" },
        { args("dev-01", "--symmetric-key-file", key_file, "--proxy", "socks5://localhost:1"), "proxy" },
        { args("dev-01", "--symmetric-key-file", key_file, "--timeout", "soon"), "--timeout" },
        { args("dev-01", "--symmetric-key-file", key_file, "--timeout", "-1"), "--timeout" },
        { args(nil, "--cert-file", certs.x509_self_01), "--key-file" },
        { args("dev-01", "--symmetric-key-file", key_file, "--group-key-file", group_key_file), "one key source" },
        { args("dev-01"), "both", { DPS_SYMMETRIC_KEY = KEY, DPS_GROUP_KEY = GROUP_KEY } },
        { args("dev-01", "--symmetric-key-file", key_file, "--key-password-file", key_file), "--key-password-file" },
      }
      for _, case in ipairs(cases) do
        local code, out, err = main(case[1], case[3])
        assert.are.equal(2, code, err)
        assert.are.equal("", out)
        one_line(err)
        assert.truthy(err:find(case[2], 1, true), err)
        assert_no_secrets(err)
        assert_flag_names(err)
      end
    end)

    it("exits 4 when the service refuses the credentials, with errorCode and trackingId", function()
      for _, a in ipairs({ args("dev-01", "--symmetric-key-file", other_key_file),
        args("x509-device-01", "--cert-file", certs.rogue, "--key-file", certs.rogue_key) }) do
        local code, out, err = main(a)
        assert.are.equal(4, code, err)
        assert.are.equal("", out)
        one_line(err)
        assert.truthy(err:find("HTTP 401", 1, true), err)
        assert.truthy(err:find("errorCode 401002", 1, true), err)
        assert.truthy(err:find("trackingId %x+%-"), err)
        assert.truthy(err:find("clock", 1, true), err)
        assert_no_secrets(err)
      end
    end)

    it("exits 1 when the service refuses the request (404 ID scope, 400)", function()
      local code, out, err = main(set(args("dev-01", "--symmetric-key-file", key_file), "--id-scope", "0ne99999999"))
      assert.are.equal(1, code, err)
      assert.are.equal("", out)
      one_line(err)
      assert.truthy(err:find("HTTP 404", 1, true) and err:find("errorCode 404001", 1, true), err)
      assert.truthy(err:find("--id-scope", 1, true), err)
      code, out, err = main(args("dev-400", "--symmetric-key-file", key_file))
      assert.are.equal("", out)
      assert.are.equal(1, code, err)
      assert.truthy(err:find("HTTP 400", 1, true), err)
    end)

    it("exits 5 for TLS failures, unreachable endpoints and the deadline", function()
      local code, out, err = main(set(args("dev-01", "--symmetric-key-file", key_file), "--ca-file", certs.other_ca))
      assert.are.equal(5, code, err)
      assert.are.equal("", out)
      one_line(err)
      assert.truthy(err:lower():find("tls", 1, true), err)
      local a = set(args("dev-01", "--symmetric-key-file", key_file), "--endpoint", emu.expired_endpoint)
      code, out, err = main(a)
      assert.are.equal("", out)
      assert.are.equal(5, code, err)
      set(a, "--endpoint", "https://127.0.0.1:1")
      set(a, "--timeout", "1")
      local started = os.time()
      code, out, err = main(a)
      assert.are.equal("", out)
      assert.are.equal(5, code, err)
      one_line(err)
      -- the real cause and kind, not "no assignment within 1 s" (issue #10, case 15)
      assert.truthy(err:find("could not connect", 1, true), err)
      assert.truthy(err:find("within 1 s", 1, true), err)
      assert.is_true(os.time() - started <= 4)
    end)

    it("exits 6 when the registration ends failed or disabled", function()
      local code, out, err = main(args("dev-failed", "--symmetric-key-file", key_file))
      assert.are.equal(6, code, err)
      assert.are.equal("", out)
      one_line(err)
      assert.truthy(err:find("registration failed", 1, true) and err:find("errorCode 400207", 1, true), err)
      code, out, err = main(args("dev-disabled", "--symmetric-key-file", key_file))
      assert.are.equal(6, code, err)
      assert.are.equal("", out)
      assert.truthy(err:find("disabled", 1, true), err)
    end)

    it("warns when a key file can be read by other users", function()
      local open_key = write(dir .. "/open.key", KEY, "644")
      local code, out, err = main(args("dev-mode", "--symmetric-key-file", open_key))
      assert.are.equal(0, code, err)
      assert.truthy(out:find("dev-mode-hub", 1, true))
      one_line(err)
      assert.truthy(err:find("warning: " .. open_key .. " can be read by other users", 1, true), err)
      assert.truthy(err:find("chmod 600", 1, true), err)
      assert_no_secrets(err)
      assert.truthy(err:find("(mode 0644)", 1, true), err)
      local group_key = write(dir .. "/group-readable.key", KEY, "640")
      code, out, err = main(args("dev-mode", "--symmetric-key-file", group_key))
      assert.are.equal(0, code, err)
      assert.truthy(out:find("dev-mode-hub", 1, true))
      assert.truthy(err:find("warning: " .. group_key .. " can be read by other users (mode 0640)", 1, true), err)
      code, out, err = main(args("dev-mode", "--symmetric-key-file", key_file))
      assert.truthy(out:find("dev-mode-hub", 1, true))
      assert.are.equal(0, code)
      assert.are.equal("", err)
    end)

    it("tells what it does with --verbose, without a key or token", function()
      local code, out, err = main(args("dev-verbose", "--symmetric-key-file", key_file, "--verbose"))
      assert.are.equal(0, code, err)
      assert.truthy(err:find("dps: provisioning dev-verbose at " .. emu.endpoint, 1, true), err)
      assert.truthy(err:find("the key in --symmetric-key-file " .. key_file, 1, true), err)
      assert.truthy(err:find("assigned to emulated-hub.azure-devices.net as device dev-verbose-hub", 1, true), err)
      assert.truthy(err:find("2 requests on 1 TLS connection", 1, true), err)
      assert.are.equal("dev-verbose-hub", cjson.decode(out).deviceId)
      assert_no_secrets(err)
      code, out, err = main(args("dev-01", "--symmetric-key-file", other_key_file, "-v"))
      assert.are.equal("", out)
      assert.are.equal(4, code)
      assert.truthy(err:find("kind=auth status=401 error_code=401002 tracking_id=", 1, true), err)
      assert_no_secrets(err)
    end)
  end)

  describe("status", function()
    it("prints the registration without registering again", function()
      assert.are.equal(0, (main(args("dev-02", "--symmetric-key-file", key_file))))
      local before = #requests("dev-02", 1)
      local code, out, err = main(with_command("status", args("dev-02", "--symmetric-key-file", key_file)))
      assert.are.equal(0, code, err)
      local state = cjson.decode(out)
      assert.are.equal("assigned", state.status)
      assert.are.equal("dev-02-hub", state.deviceId)
      local list = requests("dev-02", before + 1)
      assert.are.equal(before + 1, #list)
      assert.are.equal("lookup", list[#list].kind)
    end)

    it("works as a process with a group key", function()
      assert.are.equal(0, (main(args("leaf-cli-status", "--group-key-file", group_key_file))))
      local code, out, err = process(with_command("status", args("leaf-cli-status", "--group-key-file",
        group_key_file)))
      assert.are.equal(0, code, err)
      assert.are.equal("leaf-cli-status", cjson.decode(out).deviceId)
    end)

    it("exits 1 with a hint for a device that never registered, and on 429", function()
      local code, out, err = main(with_command("status", args("leaf-never", "--group-key-file", group_key_file)))
      assert.are.equal(1, code, err)
      assert.are.equal("", out)
      one_line(err)
      assert.truthy(err:find("HTTP 404", 1, true) and err:find("dps provision", 1, true), err)
      code, out, err = main(with_command("status", args("dev-busy", "--symmetric-key-file", key_file)))
      assert.are.equal("", out)
      assert.are.equal(1, code, err)
      assert.truthy(err:find("HTTP 429", 1, true) and err:find("Retry-After 7 s", 1, true), err)
    end)

    it("exits 6 for a failed registration and 4 for a refused key", function()
      main(args("dev-failed", "--symmetric-key-file", key_file))
      local code, out, err = main(with_command("status", args("dev-failed", "--symmetric-key-file", key_file)))
      assert.are.equal(6, code, err)
      assert.are.equal("", out)
      one_line(err)
      assert.truthy(err:find("registration failed", 1, true), err)
      code = main(with_command("status", args("dev-02", "--symmetric-key-file", other_key_file)))
      assert.are.equal(4, code)
    end)
  end)

  describe("token", function()
    local function token_args(...)
      local a = { "token", "--id-scope", "0ne00000001", "--registration-id", "dev-01" }
      for i = 1, select("#", ...) do a[#a + 1] = (select(i, ...)) end
      return a
    end

    it("prints the same token as dps.registration_token", function()
      local code, out, err = main(token_args("--symmetric-key-file", key_file, "--expiry", "1700000000"))
      assert.are.equal(0, code, err)
      assert.are.equal("", err)
      assert.are.equal(dps.registration_token("0ne00000001", "dev-01", KEY, 1700000000) .. "\n", out)
      code, out = process(token_args("--expiry", "1700000000"), { DPS_SYMMETRIC_KEY = KEY })
      assert.are.equal(0, code)
      assert.are.equal(dps.registration_token("0ne00000001", "dev-01", KEY, 1700000000) .. "\n", out)
    end)

    it("signs a group member's token with the derived key", function()
      local code, out = main(token_args("--group-key-file", group_key_file, "--expiry", "1700000000"))
      assert.are.equal(0, code)
      local derived = dps.derive_key(GROUP_KEY, "dev-01")
      assert.are.equal(dps.registration_token("0ne00000001", "dev-01", derived, 1700000000) .. "\n", out)
    end)

    it("expires after --ttl seconds, one hour by default", function()
      for _, case in ipairs({ { {}, 3600 }, { { "--ttl", "120" }, 120 } }) do
        local a = token_args("--symmetric-key-file", key_file, case[1][1], case[1][2])
        local now = os.time()
        local code, out = main(a)
        assert.are.equal(0, code)
        local se = tonumber(out:match("&se=(%d+)"))
        assert.is_true(se >= now + case[2] and se <= now + case[2] + 2, out)
      end
    end)

    it("exits 2 for bad --expiry / --ttl and for a certificate, 3 without a key", function()
      for _, a in ipairs({
        token_args("--symmetric-key-file", key_file, "--expiry", "1.5"),
        token_args("--symmetric-key-file", key_file, "--expiry", "9007199254740992"),
        token_args("--symmetric-key-file", key_file, "--ttl", "0"),
        token_args("--symmetric-key-file", key_file, "--ttl", "x"),
        token_args("--symmetric-key-file", key_file, "--expiry", "1700000000", "--ttl", "60"),
        token_args("--cert-file", certs.x509_self_01, "--key-file", certs.x509_self_01_key),
      }) do
        local code, out, err = main(a)
        assert.are.equal(2, code, err)
        assert.are.equal("", out)
        one_line(err)
      end
      local code, _, err = main(token_args())
      assert.are.equal(3, code)
      one_line(err)
    end)

    it("never shows the signature in --verbose", function()
      local code, out, err = main(token_args("--symmetric-key-file", key_file, "--expiry", "1700000000", "--verbose"))
      assert.are.equal(0, code)
      assert.truthy(out:find("sig=", 1, true))
      assert.truthy(err:find("expires 2023-11-14T22:13:20Z", 1, true), err)
      assert_no_secrets(err)
    end)
  end)

  describe("messages that say what is wrong (issue 21)", function()
    it("a cache that could not be written is reported so, never as 'cache unchanged'", function()
      local cache = dir .. "/no-such-folder/dev-02.json"
      local code, out, err = main(args("dev-02", "--symmetric-key-file", key_file, "--cache", cache, "--verbose"))
      assert.are.equal(0, code, err)
      assert.are.equal("dev-02-hub", cjson.decode(out).deviceId)
      assert.truthy(err:find("warning: provisioned, but the cache cannot be written", 1, true), err)
      assert.truthy(err:find("; cache not written (see the warning)", 1, true), err)
      assert.is_nil(err:find("cache unchanged", 1, true), err)
    end)

    it("a key file that is a directory is said to be one, not 'empty'", function()
      for _, flag in ipairs({ "--symmetric-key-file", "--group-key-file" }) do
        local code, out, err = main(args("dev-01", flag, dir))
        assert.are.equal(3, code, err)
        assert.are.equal("", out)
        one_line(err)
        assert.truthy(err:find(flag .. " " .. dir .. " is a directory", 1, true), err)
        assert.is_nil(err:find("empty", 1, true), err)
      end
    end)

    it("--ttl below 1 must be positive; a fraction must be whole", function()
      for _, case in ipairs({ { "-5", "--ttl must be positive" }, { "0", "--ttl must be positive" },
        { "-0.5", "--ttl must be positive" }, { "1.5", "--ttl must be a whole number of seconds" } }) do
        local code, out, err = main({ "token", "--id-scope", "0ne00000001", "--registration-id", "dev-01",
          "--symmetric-key-file", key_file, "--ttl", case[1] })
        assert.are.equal(2, code, err)
        assert.are.equal("", out)
        one_line(err)
        assert.truthy(err:find(case[2], 1, true), err)
      end
    end)

    it("provision-batch names the registration ID of a line, never the Lua name registration_id", function()
      local ids = write(dir .. "/ids.txt", "ok-1\nBAD ID!\n")
      local repeated = write(dir .. "/repeated.txt", "ok-1\n# again\nok-1\n")
      for _, case in ipairs({
        { ids, "--ids " .. ids .. " line 2: the registration ID may only contain A-Z a-z 0-9 - . _ :" },
        { repeated, "--ids " .. repeated .. " line 3: the registration ID ok-1 is listed already, on line 1" },
      }) do
        local code, out, err = main({ "provision-batch", "--id-scope", "0ne00000001", "--ids", case[1] },
          { DPS_GROUP_KEY = GROUP_KEY })
        assert.are.equal(2, code, err)
        assert.are.equal("", out)
        one_line(err)
        assert.truthy(err:find(case[2], 1, true), err)
        assert_flag_names(err)
      end
    end)
  end)

  describe("derive-key", function()
    local ID = "sn-007-888-abc-mac-a1-b2-c3-d4-e5-f6"
    local DERIVED = "Jsm0lyGpjaVYVP2g3FnmnmG9dI/9qU24wNoykUmermc="

    it("prints the derived key from --group-key-file or DPS_GROUP_KEY", function()
      local code, out, err = main({ "derive-key", "--registration-id", ID, "--group-key-file", group_key_file })
      assert.are.equal(0, code, err)
      assert.are.equal(DERIVED .. "\n", out)
      assert.are.equal("", err)
      code, out, err = process({ "derive-key", "--registration-id", ID }, { DPS_GROUP_KEY = GROUP_KEY })
      assert.are.equal(0, code, err)
      assert.are.equal(DERIVED .. "\n", out)
    end)

    it("ignores DPS_SYMMETRIC_KEY and exits 3 without a group key", function()
      local code, out, err = main({ "derive-key", "--registration-id", ID }, { DPS_SYMMETRIC_KEY = KEY })
      assert.are.equal(3, code)
      assert.are.equal("", out)
      one_line(err)
      assert.truthy(err:find("DPS_GROUP_KEY", 1, true))
    end)
  end)

  describe("exit codes as a process", function()
    it("are the documented ones", function()
      local cases = {
        { { "--version" }, {}, 0 },
        { { "provision", "--key", KEY }, {}, 2 },
        { args("dev-01", "--symmetric-key-file", dir .. "/missing.key"), {}, 3 },
        { args("dev-01", "--symmetric-key-file", other_key_file), {}, 4 },
        { set(args("dev-01", "--symmetric-key-file", key_file), "--ca-file", certs.other_ca), {}, 5 },
        { args("dev-failed"), { DPS_SYMMETRIC_KEY = KEY }, 6 },
      }
      cases[#cases + 1] = { set(args("dev-01", "--symmetric-key-file", key_file), "--id-scope", "0ne99999999"), {}, 1 }
      for _, case in ipairs(cases) do
        local code, out, err = process(case[1], case[2])
        assert.are.equal(case[3], code, table.concat(case[1], " ") .. "\n" .. err)
        if code ~= 0 then
          assert.are.equal("", out)
          one_line(err)
        end
        assert_no_secrets(out .. err)
      end
    end)
  end)

  describe("flag names", function()
    it("still accepts the old --key-file (symmetric key), --cert and --cert-key, with a note for --key-file", function()
      local code, out, err = main(args("dev-02", "--key-file", key_file))
      assert.are.equal(0, code, err)
      assert.are.equal("dev-02-hub", cjson.decode(out).deviceId)
      assert.are.equal("dps: note: --key-file without --cert-file is the old name of --symmetric-key-file, which "
        .. "it will stop being; use --symmetric-key-file\n", err)
      code, out, err = main({ "token", "--id-scope", "0ne00000001", "--registration-id", "dev-01",
        "--key-file", key_file, "--expiry", "1700000000" })
      assert.are.equal(0, code, err)
      assert.are.equal(dps.registration_token("0ne00000001", "dev-01", KEY, 1700000000) .. "\n", out)
      assert.truthy(err:find("note: --key-file", 1, true), err)
      code, out, err = main(args(nil, "--cert", certs.x509_device_01_chain, "--cert-key", certs.x509_device_01_key))
      assert.are.equal(0, code, err)
      assert.are.equal("x509-device-01", cjson.decode(out).deviceId)
      assert.are.equal("", err)
      -- --key-file with a certificate is the certificate's key, as key_file in Lua
      code, out, err = main(args(nil, "--cert", certs.x509_device_01_chain, "--key-file", certs.x509_device_01_key))
      assert.are.equal(0, code, err)
      assert.are.equal("x509-device-01", cjson.decode(out).deviceId)
      assert.are.equal("", err)
    end)

    it("refuses an old and a new name of one flag together, and --cert-key without a certificate", function()
      for _, case in ipairs({
        { args(nil, "--cert", certs.x509_self_01, "--cert-file", certs.x509_self_01, "--key-file",
          certs.x509_self_01_key), "--cert and --cert-file are the same option" },
        { args(nil, "--cert-file", certs.x509_self_01, "--cert-key", certs.x509_self_01_key, "--key-file",
          certs.x509_self_01_key), "--cert-key and --key-file are the same option" },
        { args("dev-01", "--cert-key", certs.x509_self_01_key), "--cert-key is the certificate's private key" },
        { args("dev-01", "--key-file", key_file, "--symmetric-key-file", key_file), "one key source" },
      }) do
        local code, out, err = main(case[1])
        assert.are.equal(2, code, err)
        assert.are.equal("", out)
        assert.truthy(err:find(case[2], 1, true), err)
      end
    end)

    it("never echoes a key given by mistake where a file name goes", function()
      for _, flag in ipairs({ "--symmetric-key-file", "--group-key-file", "--key-file" }) do
        local code, out, err = main(args("dev-01", flag, KEY))
        assert.are.equal(3, code, err)
        assert.are.equal("", out)
        assert.truthy(err:find(flag .. ": the value given is no file that can be read (No such file", 1, true), err)
        assert_no_secrets(err)
      end
      local code, out, err = main(args(nil, "--cert-file", certs.x509_device_01_chain, "--key-file",
        certs.x509_device_01_enc_key, "--key-password-file", PASSPHRASE))
      assert.are.equal(3, code, err)
      assert.are.equal("", out)
      assert.is_nil(err:find(PASSPHRASE, 1, true), err)
    end)
  end)

  describe("time limits", function()
    -- One meaning per word, as in Lua: --timeout is the overall limit of a
    -- call that may retry (the option timeout), --request-timeout that of one
    -- request (request_timeout), on every command that talks to a server.
    local SERVER = { "provision", "status", "send", "receive", "provision-batch" }

    -- The options a command gives the library, caught before any request.
    local function options_of(command, ...)
      local caught
      local stubs = { "new", "connect", "batch" }
      local saved = {}
      for _, name in ipairs(stubs) do
        saved[name] = dps[name]
        dps[name] = function(o)
          caught = o
          if name == "batch" then error("stopped here", 0) end
          return nil, "stopped here", { kind = "network", step = "new" }
        end
      end
      local a = { command, "--id-scope", "0ne00000001", "--registration-id", "dev-01", ... }
      local env = { DPS_SYMMETRIC_KEY = KEY }
      if command == "provision-batch" then
        local ids = write(dir .. "/ids.txt", "dev-01\n")
        a = { command, "--id-scope", "0ne00000001", "--ids", ids, ... }
        env = { DPS_GROUP_KEY = GROUP_KEY }
      elseif command == "send" then
        a[#a + 1] = "hello"
      end
      local ok, code, _, err = pcall(main, a, env)
      for _, name in ipairs(stubs) do dps[name] = saved[name] end
      assert(ok, code)
      return caught, code, err
    end

    it("take --timeout (overall) and --request-timeout (one request) on every command that talks to a server",
      function()
      for _, command in ipairs(SERVER) do
        local o, code, err = options_of(command, "--timeout", "7.5", "--request-timeout", "2")
        assert.truthy(o, command .. ": " .. tostring(err))
        assert.are.equal(7.5, o.timeout, command)
        assert.are.equal(2, o.request_timeout, command)
        assert.is_nil(o.hub_timeout, command)
        assert.is_true(code == 5 or code == 2, command)
        o = options_of(command)
        assert.is_nil(o.timeout, command)
        assert.is_nil(o.request_timeout, command)
        for _, value in ipairs({ "0", "-1", "soon", "inf", "nan" }) do
          local _, code2, err2 = options_of(command, "--request-timeout", value)
          assert.are.equal(2, code2, command .. " " .. value)
          assert.truthy(err2:find("--request-timeout must be a positive number of seconds", 1, true), err2)
        end
      end
    end)

    it("reach the library: provision takes both; send at an unreachable hub ends within --timeout", function()
      local code, out, err = main(args("dev-01", "--symmetric-key-file", key_file, "--timeout", "20",
        "--request-timeout", "5"))
      assert.are.equal(0, code, err)
      assert.are.equal("dev-01-hub", cjson.decode(out).deviceId)
      -- the hub's calls are limited by --timeout too (once 30 s of hub_timeout's default)
      local monotime = require("dps.core").monotime
      local t0 = monotime()
      code, out, err = main(with_command("send", args("dev-01", "--symmetric-key-file", key_file, "--hub-endpoint",
        "https://127.0.0.1:1", "--timeout", "1.5", "--request-timeout", "1", "hello")))
      local took = monotime() - t0
      assert.are.equal(5, code, err)
      assert.are.equal("", out)
      one_line(err)
      assert.truthy(err:find("; check --hub-endpoint, the network and --proxy", 1, true), err)
      assert.is_true(took < 5, took)
    end)

    it("are told alike in every such command's help, and a library message names --request-timeout", function()
      local lines
      for _, command in ipairs(SERVER) do
        local _, out = main({ command, "--help" })
        local found = {}
        for line in out:gmatch("[^\n]+") do
          if line:find("^  %-%-timeout ") or line:find("^  %-%-request%-timeout ") then
            found[#found + 1] = line
          end
        end
        assert.are.equal(2, #found, command .. ":\n" .. out)
        lines = lines or found
        assert.are.same(lines, found, command)
      end
      assert.truthy(lines[1]:find("overall", 1, true), lines[1])
      assert.truthy(lines[2]:find("one request", 1, true), lines[2])
      local output = require "dps.cli.output"
      assert.are.equal("--request-timeout must be a positive number",
        output.in_flags("dps.new: request_timeout must be a positive number"))
    end)
  end)

  describe("exit codes by kind", function()
    -- dps.cli.output.KINDS holds the exit code of every kind; the command uses
    -- it, and decides by info.kind, never by a message's text. Whether a kind
    -- is retried is the library's: dps.errors.KINDS, which knows nothing of
    -- the command line.
    it("are the documented ones for every kind, from one table: docs/errors.md's", function()
      local errors = require "dps.errors"
      local output = require "dps.cli.output"
      -- docs/errors.md's table of kinds: | `kind` | what happened | retries | exit |
      local documented, retries = {}, {}
      for line in assert(io.open("docs/errors.md")):read("*a"):gmatch("[^\n]+") do
        local kinds, again, code = line:match("^| (`[%w_]+`[^|]-) | [^|]+ | ([^|]+) | (%d) |$")
        for kind in (kinds or ""):gmatch("`([%w_]+)`") do
          documented[kind], retries[kind] = tonumber(code), again:match("^yes") ~= nil
        end
      end
      assert.is_true(documented.resolve ~= nil and documented.usage ~= nil, "docs/errors.md's table of kinds is gone")
      for kind, code in pairs(documented) do
        assert.truthy(output.KINDS[kind], "docs/errors.md documents an unknown kind " .. kind)
        assert.are.equal(code, output.exit_code(kind), kind)
        assert.are.equal(retries[kind], errors.retryable(kind), kind)
      end
      for kind in pairs(output.KINDS) do
        assert.truthy(documented[kind], "undocumented kind " .. kind)
      end
      for kind, entry in pairs(errors.KINDS) do
        assert.truthy(output.KINDS[kind], "the command has no exit code for the library's kind " .. kind)
        for field in pairs(entry) do
          assert.are.equal("retryable", field, "dps.errors.KINDS." .. kind .. " holds more than the library needs")
        end
      end
      assert.is_nil(rawget(errors, "EXIT"), "dps.errors holds the command's exit codes")
      assert.are.same({ ok = 0, error = 1, usage = 2, credentials = 3, auth = 4, network = 5, outcome = 6 }, cli.EXIT)
    end)

    it("names --hub-endpoint, not DPS's --endpoint, when the hub's host fails to resolve or connect", function()
      local output = require "dps.cli.output"
      for _, step in ipairs({ "send", "send_batch", "receive", "complete", "reject", "abandon" }) do
        assert.are.equal("check --hub-endpoint and DNS", output.hint({ kind = "resolve", step = step }), step)
        assert.are.equal("check --hub-endpoint, the network and --proxy",
          output.hint({ kind = "connect", step = step }), step)
        assert.are.equal("check the network, or give more --timeout", output.hint({ kind = "timeout", step = step }))
      end
      for _, step in ipairs({ "new", "register", "operation_status", "registration_status", "provision" }) do
        assert.are.equal("check --endpoint and DNS", output.hint({ kind = "resolve", step = step }), step)
        assert.are.equal("check --endpoint, the network and --proxy", output.hint({ kind = "connect", step = step }))
      end
      assert.are.equal("check --endpoint and DNS", output.hint({ kind = "timeout", last_kind = "resolve",
        step = "provision" }))
    end)

    it("and the service's 409 is retryable, as the README promises", function()
      local errors = require "dps.errors"
      local _, _, info = errors.service("register", 409, {}, nil)
      assert.are.equal("conflict", info.kind)
      assert.is_true(info.retryable)
      for status, retryable in pairs({ [400] = false, [401] = false, [404] = false, [429] = true, [500] = true,
        [503] = true, [418] = false }) do
        _, _, info = errors.service("register", status, {}, nil)
        assert.are.equal(retryable, info.retryable, status)
      end
    end)

    it("follows the kind, not the message: a credentials failure whose text says nothing of keys", function()
      local code, out, err = main(set(args("dev-01", "--symmetric-key-file", key_file), "--ca-file",
        dir .. "/no-such-ca.pem"))
      assert.are.equal(3, code, err) -- config: a local file, before any connection
      assert.are.equal("", out)
      one_line(err)
      assert.truthy(err:find("--ca-file " .. dir .. "/no-such-ca.pem: No such file or directory", 1, true), err)
      local dirkey = dir .. "/a-directory"
      os.execute("mkdir -p " .. q(dirkey))
      code, out, err = main(args(nil, "--cert-file", certs.x509_device_01_chain, "--key-file", dirkey))
      assert.are.equal(3, code, err) -- credentials
      assert.are.equal("", out)
      assert.truthy(err:find("--key-file " .. dirkey .. ": is not a file", 1, true), err)
    end)
  end)

  describe("no secrets in any output", function()
    it("holds for every command's stdout (except the asked-for value) and stderr, with --verbose", function()
      local derived = { dps.derive_key(GROUP_KEY, "leaf-secret"), dps.derive_key(GROUP_KEY, "dev-01"), "wrong-pass" }
      local runs = {
        { args("leaf-secret", "--group-key-file", group_key_file, "-v") },
        { args("leaf-secret", "-v"), { DPS_GROUP_KEY = GROUP_KEY } },
        { args("dev-01", "--symmetric-key-file", other_key_file, "-v") },
        { args("dev-failed", "--symmetric-key-file", key_file, "-v") },
        { set(args("dev-01", "--symmetric-key-file", key_file, "-v"), "--ca-file", certs.other_ca) },
        { args(nil, "--cert-file", certs.x509_device_01_chain, "--key-file", certs.x509_device_01_enc_key, "-v"),
          { DPS_KEY_PASSWORD = PASSPHRASE } },
        { args(nil, "--cert-file", certs.x509_device_01_chain, "--key-file", certs.x509_device_01_enc_key, "-v"),
          { DPS_KEY_PASSWORD = "wrong-pass" } },
        { with_command("status", args("leaf-secret", "--group-key-file", group_key_file, "-v")) },
        { { "token", "--id-scope", "0ne00000001", "--registration-id", "dev-01", "--group-key-file",
          group_key_file, "-v" } },
        { { "token", "--id-scope", "0ne00000001", "--registration-id", "dev 01", "-v" },
          { DPS_GROUP_KEY = GROUP_KEY } },
        { { "derive-key", "--registration-id", "dev-01", "--group-key-file", group_key_file } },
        { args("dev-01", "--symmetric-key-file", key_file, "--payload", "{", "-v") },
      }
      for _, r in ipairs(runs) do
        for _, runner in ipairs({ main, process }) do
          local code, out, err = runner(r[1], r[2])
          assert_no_secrets(err, derived)
          if r[1][1] == "token" or r[1][1] == "derive-key" then
            if code == 0 then assert.truthy(out ~= "") end
          else
            assert_no_secrets(out, derived)
          end
        end
      end
    end)
  end)
end)
