-- The soak of dps.hubs (tagged #soak: `make soak`, spec/soak.sh; CI's soak
-- phase runs the short form). One process drives, through one pool against
-- the emulator with faults on, the provisioning of DEVICES leaves of a group
-- and then WAVES messages from each: a wave is one message from every leaf,
-- queued when the wave before it ended, so a wave is 10 % of the messages.
-- At the end of each wave the process's RSS (after a full collection) and
-- its open descriptors are sampled.
--
-- Faults, by the leaf's number: on DPS, registrations reset, stalled (no
-- answer: request_timeout ends them), answered 503, polls answered 503 or
-- reset, and a registration quota that answers bursts of 429 (every
-- registration of the pool held for their Retry-After); on the hub, each in
-- a wave of its own (the hub's fault queue is positional: null passes) a
-- reset, a stall, a 429, a 503, a refusal (404 DeviceNotFound, or 401) after
-- which the device provisions again once, and two that make the message
-- fail (a 400; a refusal again after provisioning again).
--
-- The rules: every message is either acknowledged by the hub (and the hub
-- has it) or handed back to the app with its failure: 0 lost; the RSS grows
-- less than 2 MiB from 10 % to 100 %; the descriptors stay within the
-- pool's connections and are back to their start once the pool is closed.
--
-- Short form (the default): 1,000 leaves x 10 waves = 10,000 messages.
-- Long form: DPS_SOAK_FULL=1 make soak (10,000 leaves, 100,000 messages).
local Hubs = require "dps.hubs"
local emulator = require "spec.support.emulator"
local keys = require "spec.support.keys"
local cjson = require("cjson").new()

local FULL = os.getenv("DPS_SOAK_FULL") == "1"
local DEVICES, WAVES = FULL and 10000 or 1000, 10
local CONCURRENCY = 32
local REQUEST_TIMEOUT = 3   -- a stalled request ends after this
local STALL = 10            -- seconds the emulator holds a stalled request
local REGISTER_QUOTA = FULL and 400 or 200 -- registrations a second: past it, 429 (bursts)
local MiB = 1024 * 1024

local function id_of(i) return string.format("soak-%05d", i) end
local function body_of(i, wave) return string.format('{"leaf":%d,"wave":%d}', i, wave) end

-- The faults of leaf i (a scenario, or nil): about one leaf in eight has one.
local function scenario(i)
  local dps_class, hub_class = i % 97, i % 89
  local sc = {}
  if dps_class == 1 then sc.register = { { fault = "reset" } }
  elseif dps_class == 2 then sc.register = { { fault = "hang", seconds = STALL } }
  elseif dps_class == 3 then sc.register = { { status = 503, retry_after = "1" } }
  elseif dps_class == 4 then sc.poll = { { status = 503 } }
  elseif dps_class == 5 then sc.poll = { { fault = "reset" } }
  end
  local hub_faults = {
    { fault = "reset" },
    { fault = "hang", seconds = STALL },
    { status = 429, error_code = "ThrottlingException", retry_after = "1" },
    { status = 503, error_code = "ServerBusy" },
    { status = 404, error_code = "DeviceNotFound" },
    { status = 401, error_code = "IotHubUnauthorizedAccess" },
    -- a message that fails: refused again after provisioning again, or refused outright
    { { status = 404, error_code = "DeviceNotFound" }, { status = 404, error_code = "DeviceNotFound" } },
    { status = 400, error_code = "ArgumentInvalid" },
  }
  local fault = hub_faults[hub_class]
  if fault then
    -- in wave w: its hub requests before it pass (null)
    local w = math.floor(i / 89) % WAVES + 1
    local queue = {}
    for k = 1, w - 1 do queue[k] = cjson.null end
    for _, f in ipairs(fault[1] and fault or { fault }) do queue[#queue + 1] = f end
    sc.hub = queue
  end
  return next(sc) and sc or nil
end

-- This process's resident set (bytes) and open descriptors.
local function rss()
  local f = assert(io.open("/proc/self/status"))
  local text = f:read("*a")
  f:close()
  return tonumber(text:match("VmRSS:%s*(%d+)")) * 1024
end

local function descriptors()
  local f = assert(io.open("/proc/self/stat"))
  local pid = f:read("*a"):match("^%d+")
  f:close()
  local p = assert(io.popen("ls /proc/" .. pid .. "/fd"))
  local n = 0
  for _ in p:lines() do n = n + 1 end
  p:close()
  return n - 1 -- the pipe of this count
end

-- The bodies of the messages the hub took, each with how many times (the
-- emulator's log, read line by line).
local function at_hub(emu)
  local seen = {}
  for line in io.lines(emu.log_file) do
    if line:find('"event":"telemetry"', 1, true) then
      local body = cjson.decode(line).body
      seen[body] = (seen[body] or 0) + 1
    end
  end
  return seen
end

describe("dps.hubs soak", function()
  it(string.format("#soak %d leaves provisioned, %d messages, faults on: 0 lost, RSS and descriptors bounded",
    DEVICES, DEVICES * WAVES), function()
    local scenarios = {}
    for i = 1, DEVICES do scenarios[id_of(i)] = scenario(i) end
    local emu = emulator.start{ retry_after = "0", register_quota = REGISTER_QUOTA, quota_window = 1,
      enrollments = { { type = "group", group_id = "soak", symmetric_key = keys.GROUP_KEY } },
      scenarios = scenarios }
    finally(function() emu:stop() end)
    collectgarbage()
    local fds_start = descriptors()
    local began = os.time()
    local pool = Hubs.new{ ca_file = emu.ca_file, concurrency = CONCURRENCY, rate = 1e6,
      request_timeout = REQUEST_TIMEOUT }
    local leaves = {}
    for i = 1, DEVICES do
      leaves[i] = pool:add{ id_scope = emu.id_scope, registration_id = id_of(i), group_key = keys.GROUP_KEY,
        dps_endpoint = emu.endpoint, endpoint = emu.endpoint }
    end

    -- the app's books, their room taken before the first sample: message k
    -- (wave w, leaf i: k = (w - 1) x DEVICES + i) acknowledged or not
    local total = DEVICES * WAVES
    local acked = {}
    for k = 1, total do acked[k] = false end
    local sent, n_acked, handed_back, wrong_item = 0, 0, 0, 0
    local failed_by_kind = {}
    local samples = {}
    for wave = 1, WAVES do
      local t0 = os.time()
      for i = 1, DEVICES do
        local body, k = body_of(i, wave), (wave - 1) * DEVICES + i
        assert(leaves[i]:send(body, nil, function(ok, _, info, item)
          if ok then
            acked[k], n_acked = true, n_acked + 1
          else
            failed_by_kind[info.kind] = (failed_by_kind[info.kind] or 0) + 1
            handed_back = handed_back + 1
            if not item or item.body ~= body then wrong_item = wrong_item + 1 end
          end
        end))
        sent = sent + 1
      end
      local st = pool:run()
      collectgarbage()
      collectgarbage()
      samples[wave] = { rss = rss(), fds = descriptors(), heap = collectgarbage("count"), seconds = os.time() - t0,
        requests = st.requests, reprovisions = st.reprovisions }
      local s = samples[wave]
      print(string.format("\n# %3d %%: RSS %.2f MiB, Lua heap %.2f MiB, %d descriptors (%d at the start); "
        .. "%d requests, %d provisionings again so far; wave %d s", wave * 100 / WAVES, s.rss / MiB,
        s.heap / 1024, s.fds, fds_start, s.requests, s.reprovisions, s.seconds))
    end
    local stats = pool:stats()
    pool:close()
    collectgarbage()
    local fds_end = descriptors()

    -- what the hub has: every acknowledged message (once, unless an answer was lost)
    local seen = at_hub(emu)
    local missing, twice = 0, 0
    for wave = 1, WAVES do
      for i = 1, DEVICES do
        local n = seen[body_of(i, wave)]
        if acked[(wave - 1) * DEVICES + i] and not n then missing = missing + 1 end
        if n and n > 1 then twice = twice + 1 end
      end
    end
    local throttled = 0
    for line in io.lines(emu.log_file) do
      if line:find('"fault":"quota"', 1, true) then throttled = throttled + 1 end
    end
    local kinds = {}
    for kind, n in pairs(failed_by_kind) do kinds[#kinds + 1] = kind .. " " .. n end
    table.sort(kinds)
    -- lost: neither acknowledged nor handed back, handed back without its
    -- message, or acknowledged but not at the hub
    local lost = sent - n_acked - handed_back + wrong_item + missing
    print(string.format("# %d leaves: %d provisioned, %d failed to provision, %d provisionings again, "
      .. "%d registrations answered 429 (the quota); %d messages: %d acknowledged (%d at the hub twice), "
      .. "%d handed back (%s), %d lost; descriptors %d at the start, %d after close; "
      .. "RSS %.2f MiB at 10 %%, %.2f MiB at 100 %% (%+.2f MiB); %d s",
      DEVICES, stats.provisioned, stats.provision_failed, stats.reprovisions, throttled, sent, n_acked, twice,
      handed_back, table.concat(kinds, ", "), lost, fds_start, fds_end, samples[1].rss / MiB,
      samples[WAVES].rss / MiB, (samples[WAVES].rss - samples[1].rss) / MiB, os.time() - began))

    assert.are.equal(total, sent)
    assert.are.equal(0, lost)
    assert.is_true(handed_back > 0, "no message failed: the hand-back was not tried")
    assert.is_true(throttled > 0, "no registration was answered 429: the quota did not bite")
    assert.are.equal(DEVICES, stats.provisioned)
    assert.is_true(stats.reprovisions > 0, "no device provisioned again: the hub's refusals did not happen")
    assert.is_true(samples[WAVES].rss - samples[1].rss < 2 * MiB,
      string.format("RSS grew %.2f MiB from 10 %% to 100 %%", (samples[WAVES].rss - samples[1].rss) / MiB))
    for wave, s in ipairs(samples) do
      assert.is_true(s.fds <= fds_start + CONCURRENCY + 2,
        string.format("%d descriptors after wave %d (%d at the start)", s.fds, wave, fds_start))
    end
    assert.are.equal(fds_start, fds_end)
  end)
end)
