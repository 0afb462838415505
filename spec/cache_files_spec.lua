-- Which cache files `dps.cache.load` trusts (issue 22, item 4): only one
-- this user alone can have written. A symbolic link, a FIFO, a file another
-- user owns or that group or others may write is ignored, with the reason
-- (info.cache_ignored, the `-v` line); the identity check inside the file
-- (ID scope, registration ID, endpoint, credential fingerprint) tells caches
-- apart but authenticates nothing. Real files in a temporary folder; the
-- specs run as root, so the file of "another user" is chowned to 65534.
local cache = require "dps.cache"
local dps = require "dps"
local emulator = require "spec.support.emulator"
local shell = require "spec.support.shell"
local timing = require "spec.support.timing"
local child = require "spec.support.child"
local keys = require "spec.support.keys"

local q = shell.quote
local ROOT = shell.run("id -u"):match("^0%s") ~= nil

local IDENTITY = { id_scope = "0ne00000001", registration_id = "dev-01",
  endpoint = "https://global.azure-devices-provisioning.net", credential = cache.key_fingerprint(keys.KEY) }
local STATE = { registrationId = "dev-01", assignedHub = "hub.example", deviceId = "dev-01", status = "assigned" }
local TEXT = cache.encode(IDENTITY, STATE, 1800000000)

describe("dps.cache.load reads only a cache this user alone can have written", function()
  local dir
  setup(function() dir = shell.tmpdir("dps-cache-files") end)
  teardown(function() shell.succeeds("rm -rf " .. q(dir)) end)

  local function load(name)
    return cache.load(dir .. "/" .. name, IDENTITY)
  end

  local function ignored(name, words)
    local doc, problem = load(name)
    assert.is_nil(doc, name)
    assert.truthy(problem and problem:find(words, 1, true), name .. ": " .. tostring(problem))
  end

  it("loads a good cache: a regular file of this user's, mode 0600 or 0400", function()
    shell.write(dir .. "/good.json", TEXT, "600")
    shell.write(dir .. "/read-only.json", TEXT, "400")
    assert.are.same(STATE, assert(load("good.json")).state)
    assert.are.same(STATE, assert(load("read-only.json")).state)
  end)

  it("says nothing when there is no file, or no folder", function()
    for _, name in ipairs({ "missing.json", "no/folder/a.json" }) do
      local doc, problem = load(name)
      assert.is_nil(doc, name)
      assert.is_nil(problem, name)
    end
  end)

  it("ignores a symbolic link, even to a good cache", function()
    shell.write(dir .. "/target.json", TEXT, "600")
    assert(shell.succeeds("ln -s target.json " .. q(dir .. "/link.json")))
    ignored("link.json", "a symbolic link")
  end)

  it("ignores a FIFO, and returns at once", function()
    assert(shell.succeeds("mkfifo " .. q(dir .. "/fifo.json")))
    -- first in a child with a time limit, so that a load that blocks fails
    -- this spec instead of hanging the suite
    local out, ok = child.run(dir, string.format([[
      local cache = require "dps.cache"
      local doc, problem = cache.load(%q, {})
      print(tostring(doc) .. " / " .. tostring(problem))
    ]], dir .. "/fifo.json"), { prefix = "timeout 10" })
    assert.is_true(ok, out)
    assert.are.equal("nil / not a regular file (a FIFO)\n", out)
    ignored("fifo.json", "not a regular file (a FIFO)")
  end)

  it("ignores a folder in its place", function()
    assert(shell.succeeds("mkdir " .. q(dir .. "/folder.json")))
    ignored("folder.json", "not a regular file (a directory)")
  end)

  it("ignores a cache that group or others may read or write (0644, 0660, 0606)", function()
    for _, mode in ipairs({ "644", "660", "606", "640" }) do
      shell.write(dir .. "/open-" .. mode .. ".json", TEXT, mode)
      ignored("open-" .. mode .. ".json", "readable or writable by group or others (mode 0" .. mode .. ")")
    end
  end)

  it("ignores a cache another user owns, even when the reader is root", function()
    if not ROOT then
      pending("needs root to chown a file to another user")
      return
    end
    shell.write(dir .. "/nobody.json", TEXT, "600")
    assert(shell.succeeds("chown 65534 " .. q(dir .. "/nobody.json")))
    ignored("nobody.json", "owned by uid 65534, not this user (0)")
  end)

  it("ignores a cache over MAX_BYTES", function()
    shell.write(dir .. "/big.json", string.rep(" ", cache.MAX_BYTES + 1), "600")
    ignored("big.json", "larger than " .. cache.MAX_BYTES .. " bytes")
  end)
end)

describe("a cache forged by another user", function()
  local emu, dir

  setup(function()
    emu = emulator.start{ enrollments = {
      { type = "individual", registration_id = "forged-01", symmetric_key = keys.KEY },
    } }
    dir = shell.tmpdir("dps-cache-forged")
  end)

  teardown(function()
    if emu then emu:stop() end
    shell.succeeds("rm -rf " .. q(dir))
  end)

  it("does not send the device to its hub: dps.provision registers at DPS instead", function()
    if not ROOT then
      pending("needs root to chown a file to another user")
      return
    end
    -- everything in it is public: the ID scope, the registration ID, the
    -- endpoint, and the key's fingerprint (which the identity check matches)
    local identity = { id_scope = emu.id_scope, registration_id = "forged-01", endpoint = emu.endpoint,
      credential = cache.key_fingerprint(keys.KEY) }
    local forged = cache.encode(identity, { registrationId = "forged-01", assignedHub = "evil-hub.test",
      deviceId = "forged-01", status = "assigned" }, 1800000000)
    local path = shell.write(dir .. "/assignment.json", forged, "600")
    local opts = { id_scope = emu.id_scope, registration_id = "forged-01", symmetric_key = keys.KEY,
      endpoint = emu.endpoint, ca_file = emu.ca_file, timeout = timing.margin(10), cache = path }
    -- owned by this user, the identity check alone takes it: it is no authentication
    local state, info = dps.provision(opts)
    assert.are.equal("cache", info.source)
    assert.are.equal("evil-hub.test", state.assignedHub)
    -- owned by nobody: ignored, said why, and the device registers
    assert(shell.succeeds("chown 65534 " .. q(path)))
    state, info = dps.provision(opts)
    assert.truthy(state, info)
    assert.are.equal("service", info.source)
    assert.are_not.equal("evil-hub.test", state.assignedHub)
    assert.matches("owned by uid 65534, not this user", info.cache_ignored)
    local puts = 0
    for _ = 1, 40 do -- the emulator logs a request just after answering it
      puts = 0
      for _, e in ipairs(emu:requests("forged-01")) do
        if e.method == "PUT" then puts = puts + 1 end
      end
      if puts > 0 then break end
      shell.sleep(0.05)
    end
    assert.are.equal(1, puts)
  end)
end)
