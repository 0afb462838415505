-- File upload throughput on loopback: hub:upload of one file to the
-- emulator's blob store (the whole upload: the hub's place, the bytes, the
-- notification), against `curl -T` of the same file to the same store (the
-- PUT alone, with a place the bench asks the hub for first), in one run.
--
--    lua5.4 bench/upload.lua [MiB (64)] [rounds (3)]
--
-- Both go through the emulator (LuaJIT, lua-http, TLS), which bounds both
-- the same way: the ratio says what the library costs beside curl, not what
-- a storage account would take.
local core = require "dps.core"
local dps = require "dps"
local dps_session = require "dps.session"
local emulator = require "spec.support.emulator"
local cjson = require "cjson"

local MIB = tonumber(arg[1]) or 64
local ROUNDS = tonumber(arg[2]) or 3
local KEY = "18RQk/hOPJR9EbsJlk2j8WA6vWaj/yi+oaYg7zmxfQNdOyMSu+SJ8O7TSlZhDJCYmn4rzEiVKIzNiVAWjLxrGA=="
local function q(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end

local size = MIB * 1024 * 1024
local path = "build/bench-upload.bin"
assert(os.execute(string.format("head -c %d /dev/urandom >%s", size, q(path))))
local emu = emulator.start{ retry_after = "0",
  enrollments = { { type = "individual", registration_id = "bench-up", symmetric_key = KEY } } }

local ok, err = pcall(function()
  local hub = assert(dps.connect{ id_scope = emu.id_scope, registration_id = "bench-up", symmetric_key = KEY,
    endpoint = emu.endpoint, hub_endpoint = emu.endpoint, ca_file = emu.ca_file, timeout = 120 })
  local admin = dps_session.new{ ca_file = emu.ca_file, timeout = 120 }
  local files = emu.endpoint .. "/devices/bench-up/files"

  -- curl -T of the file to a place the hub gave; the hub told afterwards
  local function curl(name)
    local status, _, body = admin:request("POST", files .. "?api-version=2021-04-12",
      { authorization = hub:token(), ["content-type"] = "application/json" }, cjson.encode({ blobName = name }))
    assert(status == 200, body)
    local place = cjson.decode(body)
    local url = "https://" .. place.hostName .. "/" .. place.containerName .. "/" .. place.blobName .. place.sasToken
    local t0 = core.monotime()
    -- (no Expect: 100-continue, as the library sends none: curl would wait
    -- a second for a 100 the store never sends before it sends the body)
    local p = io.popen(string.format("curl -sS -o /dev/null -w '%%{http_code}' --cacert %s -T %s "
      .. "-H 'x-ms-blob-type: BlockBlob' -H 'Expect:' %s", q(emu.ca_file), q(path), q(url)))
    local code = p:read("*a")
    p:close()
    local took = core.monotime() - t0
    assert(code == "201", "curl: HTTP " .. tostring(code))
    admin:request("POST", files .. "/notifications?api-version=2021-04-12",
      { authorization = hub:token(), ["content-type"] = "application/json" },
      cjson.encode({ correlationId = place.correlationId, isSuccess = true, statusCode = 201,
        statusDescription = "OK" }))
    return took
  end

  local function library(name, block_size)
    local t0 = core.monotime()
    local result, message = hub:upload{ name = name, file = path, block_size = block_size }
    assert(result, message)
    return core.monotime() - t0
  end

  local runs = { blocks = {}, one = {}, curl = {} }
  for i = 1, ROUNDS do
    -- side by side in each round, so that all three see the same load
    runs.blocks[i] = library("dps-blocks-" .. i, 4 * 1024 * 1024)
    runs.one[i] = library("dps-one-" .. i, math.min(size, 100 * 1024 * 1024))
    runs.curl[i] = curl("curl-" .. i)
  end
  hub:close()
  admin:close()
  local function median(t)
    table.sort(t)
    return t[math.floor((#t + 1) / 2)]
  end
  local curl_s = median(runs.curl)
  local function line(what, s)
    print(string.format("  %-44s %7.1f MiB/s (%.2f s, median of %d) = %.2fx curl -T", what, MIB / s, s, ROUNDS,
      curl_s / s))
  end
  line(string.format("hub:upload %d MiB, 4 MiB blocks + block list", MIB), median(runs.blocks))
  line(string.format("hub:upload %d MiB, one request", MIB), median(runs.one))
  print(string.format("  %-44s %7.1f MiB/s (%.2f s, median of %d)", "curl -T, one request (the PUT alone)",
    MIB / curl_s, curl_s, ROUNDS))
end)
emu:stop()
os.remove(path)
assert(ok, err)
