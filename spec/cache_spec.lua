-- The assignment cache's own rules, on real files: what `load` trusts and
-- what `store` writes (the device's life around it, reboots and power cuts:
-- device_life_spec).
local cache = require "dps.cache"
local shell = require "spec.support.shell"
local keys = require "spec.support.keys"
local cjson = require "cjson"

local IDENTITY = { id_scope = "0ne00000001", registration_id = "dev-01",
  endpoint = "https://global.azure-devices-provisioning.net", credential = cache.key_fingerprint(keys.KEY) }
local STATE = { registrationId = "dev-01", assignedHub = "hub.example", deviceId = "dev-01", status = "assigned" }
local NOW = 1800000000

describe("dps.cache", function()
  local dir
  setup(function() dir = shell.tmpdir("dps-cache") end)
  teardown(function() shell.succeeds("rm -rf " .. shell.quote(dir)) end)

  local function with_state(changes)
    local state = {}
    for k, v in pairs(STATE) do state[k] = v end
    for k, v in pairs(changes) do state[k] = v end
    return state
  end

  describe("load checks the assignment as a DPS answer is checked", function()
    for _, case in ipairs({
      { "a deviceId holding a connection string's separator", { deviceId = "dev;GatewayHostName=evil-hub.test" },
        "deviceId" },
      { "an assignedHub that is no host name", { assignedHub = "evil-hub.test/x?y" }, "assignedHub" },
      { "a deviceId with control characters", { deviceId = "dev\r\n01" }, "deviceId" },
    }) do
      it("ignores a cache with " .. case[1] .. ", saying why", function()
        local text = cache.encode(IDENTITY, with_state(case[2]), NOW)
        local doc, problem = cache.decode(text, IDENTITY)
        assert.is_nil(doc)
        assert.truthy(problem:find("a DPS answer could not hold: " .. case[3], 1, true), problem)
        local path = dir .. "/bad.json"
        shell.write(path, text, "600")
        doc, problem = cache.load(path, IDENTITY)
        assert.is_nil(doc)
        assert.truthy(problem:find(case[3], 1, true), problem)
      end)
    end

    it("ignores a cache whose state holds NaN or an infinity, which store could never write", function()
      for _, number in ipairs({ "NaN", "Infinity", "-Infinity", "1e400" }) do
        local text = cache.encode(IDENTITY, STATE, NOW)
        text = text:gsub('"status":"assigned"', '"status":"assigned","x":' .. number)
        local doc, problem = cache.decode(text, IDENTITY)
        assert.is_nil(doc, number)
        assert.truthy(problem:find("JSON cannot hold", 1, true), problem)
      end
    end)

    it("takes a good one", function()
      local doc = cache.decode(cache.encode(IDENTITY, STATE, NOW), IDENTITY)
      assert.are.same(STATE, doc.state)
    end)
  end)

  describe("store writes only what load reads back", function()
    it("drops a payload that would make the file too large, and the file loads", function()
      local state = with_state{ payload = { blob = string.rep("x", cache.MAX_BYTES) } }
      local path = dir .. "/big-payload.json"
      assert.are.equal("written", cache.store(path, IDENTITY, state, NOW))
      local doc, problem = cache.load(path, IDENTITY)
      assert.truthy(doc, problem)
      assert.are.equal("hub.example", doc.state.assignedHub)
      assert.is_nil(doc.state.payload)
      assert.is_not_nil(state.payload) -- the caller's state is left as it was
    end)

    it("refuses, never raises, a state holding NaN or an infinity (a hostile answer's)", function()
      local path = dir .. "/nan.json"
      for _, number in ipairs({ 0 / 0, math.huge, -math.huge }) do
        local ok, status, message, info = pcall(cache.store, path, IDENTITY, with_state{ payload = { x = number } },
          NOW)
        assert.is_true(ok, tostring(status))
        assert.is_nil(status)
        assert.are.equal("protocol", info.kind)
        assert.truthy(message:find("JSON cannot hold", 1, true), message)
      end
    end)

    it("keeps a payload that fits", function()
      local path = dir .. "/small-payload.json"
      assert.are.equal("written", cache.store(path, IDENTITY, with_state{ payload = { site = "north" } }, NOW))
      assert.are.same({ site = "north" }, cache.load(path, IDENTITY).state.payload)
    end)

    it("refuses, as kind too_large, a state too large even without its payload; the old file stays", function()
      local path = dir .. "/too-big.json"
      assert.are.equal("written", cache.store(path, IDENTITY, STATE, NOW))
      local ok, message, info = cache.store(path, IDENTITY, with_state{ substatus = string.rep("s", cache.MAX_BYTES) },
        NOW)
      assert.is_nil(ok)
      assert.are.equal("too_large", info.kind)
      assert.truthy(message:find("not written", 1, true), message)
      assert.are.equal("hub.example", cjson.decode(shell.read(path)).state.assignedHub)
    end)
  end)
end)
