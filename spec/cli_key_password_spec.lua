-- A wrong pass phrase names the file it came from (issue 21): the value of
-- --key-password-file is a file's name, not a secret, once it was read, so
-- the message says `(wrong --key-password-file pass.txt?)`, not
-- `<redacted>`; a value that names no file it could read (perhaps the pass
-- phrase itself, given by mistake) is still never shown. bin/dps runs as a
-- process in a folder of its own, where a file's bare name is its path.
local emulator = require "spec.support.emulator"
local shell = require "spec.support.shell"

local q = shell.quote

describe("--key-password-file in messages", function()
  local certs, dir

  setup(function()
    certs = emulator.certs()
    dir = shell.tmpdir("dps-key-password")
    shell.write(dir .. "/wrong-pass.txt", "not-the-pass-phrase\n", "600")
  end)

  teardown(function()
    if dir then shell.succeeds("rm -rf " .. q(dir)) end
  end)

  -- The package paths of this run with the checkout's relative entries made
  -- absolute, for a process started in another folder.
  local function absolute(paths)
    return (paths:gsub("%f[^;%z]%./", emulator.root .. "/"))
  end

  -- bin/dps provision with an encrypted key and --key-password-file VALUE,
  -- run in dir: code, stdout, stderr (no request: the key is read first).
  local function provision(value)
    local command = string.format("cd %s && env LUA_PATH=%s LUA_CPATH=%s %s %s provision --id-scope 0ne00000001 "
      .. "--cert-file %s --key-file %s --key-password-file %s --endpoint https://localhost:9 >out 2>err; echo $? >rc",
      q(dir), q(absolute(package.path)), q(absolute(package.cpath)), q(shell.interpreter()),
      q(emulator.root .. "/bin/dps"), q(certs.x509_device_01_chain), q(certs.x509_device_01_enc_key), q(value))
    assert(shell.succeeds(command))
    return tonumber(shell.read(dir .. "/rc"):match("%d+")), shell.read(dir .. "/out"), shell.read(dir .. "/err")
  end

  it("names the file of a wrong pass phrase, by the name given", function()
    for _, value in ipairs({ "wrong-pass.txt", dir .. "/wrong-pass.txt" }) do
      local code, out, err = provision(value)
      assert.are.equal(3, code, err)
      assert.are.equal("", out)
      assert.truthy(err:find("(wrong --key-password-file " .. value .. "?)", 1, true), err)
      assert.is_nil(err:find("redacted", 1, true), err)
      assert.is_nil(err:find("not-the-pass-phrase", 1, true), err)
    end
  end)

  it("never shows a value that names no file: it may be the pass phrase itself", function()
    for _, value in ipairs({ "hunter2-hunter2", "correct horse battery staple" }) do
      local code, out, err = provision(value)
      assert.are.equal(3, code, err)
      assert.are.equal("", out)
      assert.truthy(err:find("--key-password-file: the value given is no file that can be read", 1, true), err)
      assert.is_nil(err:find(value, 1, true), err)
    end
  end)
end)
