-- hub:upload (dps.upload) in milliseconds: a scripted server and a fake
-- clock, no network. The three steps on the wire (the hub's place, the
-- storage requests, the notification), one PUT or blocks and a block list,
-- the rules each storage request inherits from dps.retry (Retry-After,
-- back-off, retryable or not, the step's limit, request_timeout), the
-- hub's rules on the hub's two calls (throttling, provisioning again, a full
-- upload limit that is no refusal), the notification after every failure,
-- the SAS kept out of every message, and misuse raised at the caller.
local core = require "dps.core"
local Hub = require "dps.hub"
local connect = require "dps.connect"
local upload = require "dps.upload"
local shell = require "spec.support.shell"
local keys = require "spec.support.keys"
local json = require("cjson").new()

local KEY = keys.KEY
local STATE = { assignedHub = "hub-a.azure-devices.net", deviceId = "dev(1)!", registrationId = "dev-1" }
local T0 = 1800000000
local HUB = "https://hub-a.azure-devices.net/devices/dev%281%29%21"
local SIG = "c2VjcmV0LXNpZ25hdHVyZQ%3D%3D" -- the blob SAS's signature: a secret
local SAS = "?sv=2018-03-28&sr=b&sig=" .. SIG .. "&se=2027-01-15T08%3A00%3A00Z&sp=rw"
local STORE = "https://acct.blob.core.windows.net/uploads/dev%281%29%21/logs/boot.txt"

-- The hub's place for a blob (its answer to POST /files).
local function place(overrides)
  local doc = { correlationId = "corr-1", hostName = "acct.blob.core.windows.net", containerName = "uploads",
    blobName = "dev(1)!/logs/boot.txt", sasToken = SAS }
  for k, v in pairs(overrides or {}) do
    if v == false then doc[k] = nil else doc[k] = v end
  end
  return { status = 200, headers = { ["content-type"] = "application/json" }, body = json.encode(doc) }
end

local function hub_error(status, code, extra)
  local headers = { ["iothub-errorcode"] = code, ["content-type"] = "application/json" }
  for k, v in pairs(extra or {}) do headers[k] = v end
  return { status = status, headers = headers, body = json.encode({ Message = "ErrorCode:" .. code .. ";refused" }) }
end

local function storage_error(status, code, extra, text)
  local headers = { ["x-ms-error-code"] = code, ["content-type"] = "application/xml" }
  for k, v in pairs(extra or {}) do headers[k] = v end
  return { status = status, headers = headers, body = '<?xml version="1.0" encoding="utf-8"?><Error><Code>' .. code
    .. "</Code><Message>" .. (text or "Injected.") .. "\nRequestId:1\nTime:now</Message></Error>" }
end

local CREATED, NO_CONTENT = { status = 201 }, { status = 204 }

-- What a request is: "start", "notify", "put", "block", "blocklist".
local function kind_of(req)
  if req.url:find("/files/notifications?", 1, true) then return "notify"
  elseif req.url:find("/files?", 1, true) then return "start"
  elseif req.url:find("comp=blocklist", 1, true) then return "blocklist"
  elseif req.url:find("comp=block&", 1, true) then return "block"
  end
  return "put"
end

-- A server: the place, 201 for storage, 204 for the notification, unless
-- `script(req, n, kind, count)` answers (n: the request's number; count:
-- how many requests of that kind so far, this one included).
local function runtime(script)
  local rt = { wall = T0, mono = 100, sleeps = {}, sent = {}, counts = {} }
  rt.now = function() return rt.wall end
  rt.monotime = function() return rt.mono end
  rt.sleep = function(d)
    rt.sleeps[#rt.sleeps + 1] = d
    rt.wall, rt.mono = rt.wall + d, rt.mono + d
  end
  rt.jitter = function(_, high) return high end
  local s = {}
  function s.request(_, method, url, headers, body, timeout)
    local req = { method = method, url = url, headers = headers, body = body, timeout = timeout }
    rt.sent[#rt.sent + 1] = req
    req.kind = kind_of(req)
    rt.counts[req.kind] = (rt.counts[req.kind] or 0) + 1
    local a = script and script(req, #rt.sent, req.kind, rt.counts[req.kind])
    if a == nil then
      a = ({ start = place(), notify = NO_CONTENT })[req.kind] or CREATED
    end
    if a.takes then rt.wall, rt.mono = rt.wall + a.takes, rt.mono + a.takes end
    if a.fail then return nil, a.fail, { kind = a.kind } end
    return a.status, a.headers or {}, a.body or ""
  end
  function s.stats() return { requests = #rt.sent, connects = 1 } end
  function s.close() end
  rt.transport = s
  return rt
end

local function hub_with(script, opts)
  local rt = runtime(script)
  local o = { state = STATE, symmetric_key = KEY }
  for k, v in pairs(opts or {}) do o[k] = v end
  return Hub.new(o, rt), rt
end

local function of_kind(rt, kind)
  local out = {}
  for _, req in ipairs(rt.sent) do
    if req.kind == kind then out[#out + 1] = req end
  end
  return out
end

local function notification(rt)
  local list = of_kind(rt, "notify")
  assert.are.equal(1, #list, "one notification")
  return json.decode(list[1].body)
end

-- Everything a caller sees, as text: no SAS signature may be in it.
local function assert_no_sas(...)
  local seen = {}
  local function walk(v)
    if type(v) == "table" then
      for k, x in pairs(v) do walk(k); walk(x) end
    elseif v ~= nil then
      seen[#seen + 1] = tostring(v)
    end
  end
  walk({ ... })
  local text = table.concat(seen, "\n")
  assert.is_nil(text:find(SIG, 1, true), "the SAS signature leaked: " .. text)
  assert.is_nil(text:find("c2VjcmV0", 1, true), "the SAS signature leaked: " .. text)
  assert.is_nil(text:find("sv=2018", 1, true), "the SAS leaked: " .. text)
end

describe("hub:upload", function()
  describe("the wire", function()
    it("a small upload: the hub's place, one PUT (BlockBlob) with the bytes, the notification", function()
      local hub, rt = hub_with()
      local data = string.rep("0123456789abcdef", 64) -- 1 KiB
      local result = assert(hub:upload{ name = "logs/boot.txt", data = data, content_type = "text/plain" })
      assert.are.same({ blob_name = "dev(1)!/logs/boot.txt", size = 1024, correlation_id = "corr-1", blocks = 0 },
        result)
      assert.are.equal(3, #rt.sent)
      local start, put, notify = rt.sent[1], rt.sent[2], rt.sent[3]
      assert.are.equal("POST", start.method)
      assert.are.equal(HUB .. "/files?api-version=2021-04-12", start.url)
      assert.are.same({ blobName = "logs/boot.txt" }, json.decode(start.body))
      assert.are.equal("application/json", start.headers["content-type"])
      assert.truthy(start.headers.authorization:find("^SharedAccessSignature sr=hub%-a"))
      assert.are.equal("PUT", put.method)
      assert.are.equal(STORE .. SAS, put.url)
      assert.are.equal(data, put.body)
      assert.are.same({ ["x-ms-blob-type"] = "BlockBlob", ["content-type"] = "text/plain",
        ["x-ms-blob-content-type"] = "text/plain" }, put.headers) -- the SAS is the credential: no Authorization
      assert.are.equal(HUB .. "/files/notifications?api-version=2021-04-12", notify.url)
      assert.are.same({ correlationId = "corr-1", isSuccess = true, statusCode = 201, statusDescription = "OK" },
        json.decode(notify.body))
    end)

    it("a larger one: blocks of block_size with IDs of one length, then the block list in order", function()
      local hub, rt = hub_with()
      local progress = {}
      local result = assert(hub:upload{ name = "logs/boot.txt", data = "abcdefghij", block_size = 4,
        on_progress = function(sent, total) progress[#progress + 1] = sent .. "/" .. total end })
      assert.are.equal(3, result.blocks)
      assert.are.equal(10, result.size)
      local blocks = of_kind(rt, "block")
      assert.are.equal(3, #blocks)
      local ids, bodies = {}, {}
      for i, req in ipairs(blocks) do
        local id = req.url:match("&comp=block&blockid=([^&]+)$")
        assert.are.equal(STORE .. SAS, req.url:sub(1, #STORE + #SAS))
        ids[i] = id:gsub("%%3[Dd]", "=")
        bodies[i] = req.body
        assert.are.equal(#ids[1], #ids[i])
        assert.are.equal("application/octet-stream", req.headers["content-type"])
      end
      assert.are.same({ "abcd", "efgh", "ij" }, bodies)
      assert.are_not.equal(ids[1], ids[2])
      local list = of_kind(rt, "blocklist")[1]
      assert.are.equal(STORE .. SAS .. "&comp=blocklist", list.url)
      assert.are.equal('<?xml version="1.0" encoding="utf-8"?><BlockList><Latest>' .. ids[1] .. "</Latest><Latest>"
        .. ids[2] .. "</Latest><Latest>" .. ids[3] .. "</Latest></BlockList>", list.body)
      assert.are.equal("application/octet-stream", list.headers["x-ms-blob-content-type"])
      assert.are.same({ "0/10", "4/10", "8/10", "10/10" }, progress)
      assert.is_true(notification(rt).isSuccess)
    end)

    it("block IDs keep one length past 9 and 99 blocks", function()
      local hub, rt = hub_with()
      assert.are.equal(120, assert(hub:upload{ name = "a", data = string.rep("z", 120), block_size = 1 }).blocks)
      local blocks = of_kind(rt, "block")
      local seen = {}
      for _, req in ipairs(blocks) do
        local id = req.url:match("blockid=([^&]+)$")
        assert.are.equal(#blocks[1].url, #req.url)
        assert.is_nil(seen[id])
        seen[id] = true
      end
    end)

    it("exactly block_size bytes go in one PUT; one byte more in two blocks", function()
      local hub, rt = hub_with()
      assert.are.equal(0, assert(hub:upload{ name = "a", data = "abcd", block_size = 4 }).blocks)
      assert.are.equal(2, assert(hub:upload{ name = "a", data = "abcde", block_size = 4 }).blocks)
      assert.are.equal(1, #of_kind(rt, "put"))
      assert.are.equal(2, #of_kind(rt, "block"))
    end)

    it("a file: each request's body is its range of the open file, never its bytes in Lua", function()
      local dir = shell.tmpdir("dps-upload")
      local bytes = {}
      for i = 1, 3000 do bytes[i] = string.char(i % 256) end
      local data = table.concat(bytes)
      local path = shell.write(dir .. "/f.bin", data)
      local hub, rt = hub_with(function(req, _, kind)
        if kind ~= "block" and kind ~= "put" then return end
        -- the engine's file body: the core reads the range as it sends
        local body = req.body
        assert.are.equal("table", type(body))
        assert.are.equal("file", io.type(body.file))
        assert.are.equal(0, body.file:seek()) -- nothing read from it in Lua
        body.file:seek("set", body.offset)
        req.bytes = body.file:read(body.length)
        body.file:seek("set", 0)
      end)
      local result = assert(hub:upload{ name = "f.bin", file = path, block_size = 1024 })
      assert.are.equal(3000, result.size)
      local ranges, got = {}, {}
      for i, req in ipairs(of_kind(rt, "block")) do
        ranges[i], got[i] = { req.body.offset, req.body.length }, req.bytes
      end
      assert.are.same({ { 0, 1024 }, { 1024, 1024 }, { 2048, 952 } }, ranges)
      assert.are.equal(data, table.concat(got))
      -- one PUT: the whole file as one range
      assert(hub:upload{ name = "f.bin", file = path })
      local put = of_kind(rt, "put")[1]
      assert.are.same({ 0, 3000 }, { put.body.offset, put.body.length })
      assert.are.equal(data, put.bytes)
      -- the file is closed after the upload
      assert.are.equal("closed file", io.type(put.body.file))
      shell.succeeds("rm -rf " .. shell.quote(dir))
    end)

    it("an empty upload is one PUT of nothing", function()
      local hub, rt = hub_with()
      assert.are.equal(0, assert(hub:upload{ name = "empty", data = "" }).size)
      assert.are.equal("", of_kind(rt, "put")[1].body)
    end)

    it("percent-encodes the blob's path segment by segment, as the hub named it", function()
      local hub, rt = hub_with(function(_, _, kind)
        if kind == "start" then return place({ blobName = "dev(1)!/my logs/a b#c.txt" }) end
      end)
      local result = assert(hub:upload{ name = "my logs/a b#c.txt", data = "x" })
      assert.are.equal("dev(1)!/my logs/a b#c.txt", result.blob_name)
      assert.are.equal("https://acct.blob.core.windows.net/uploads/dev%281%29%21/my%20logs/a%20b%23c.txt" .. SAS,
        of_kind(rt, "put")[1].url)
    end)

    it("with X.509: no Authorization anywhere (mutual TLS to the hub, the SAS to storage)", function()
      local rt = runtime()
      local hub = Hub.new({ state = STATE, cert_file = "/nonexistent.pem", key_file = "/nonexistent.key" }, rt)
      assert(hub:upload{ name = "x", data = "abc" })
      for _, req in ipairs(rt.sent) do assert.is_nil(req.headers.authorization) end
    end)

    it("storage requests obey request_timeout and the hub's timeout", function()
      local hub, rt = hub_with(nil, { request_timeout = 7, timeout = 20 })
      assert(hub:upload{ name = "x", data = "abcdef", block_size = 3 })
      for _, req in ipairs(rt.sent) do assert.is_true(req.timeout <= 7) end
    end)
  end)

  describe("a storage request's rules (dps.retry)", function()
    it("a block answered 500 once is sent again after the back-off; the others are sent once", function()
      local hub, rt = hub_with(function(_, _, kind, count)
        if kind == "block" and count == 2 then return storage_error(500, "InternalError") end
      end)
      local result = assert(hub:upload{ name = "x", data = "aaaabbbbcccc", block_size = 4 })
      assert.are.equal(3, result.blocks)
      local blocks = of_kind(rt, "block")
      assert.are.equal(4, #blocks)
      assert.are.same({ "aaaa", "bbbb", "bbbb", "cccc" }, { blocks[1].body, blocks[2].body, blocks[3].body,
        blocks[4].body })
      assert.are.equal(blocks[2].url, blocks[3].url) -- the same block ID
      assert.are.same({ 1 }, rt.sleeps) -- the first back-off (jitter at its top: 1 s)
      assert.are.equal(1, #of_kind(rt, "start")) -- never started over
      assert.is_true(notification(rt).isSuccess)
    end)

    it("Retry-After is honoured; one below the back-off is raised to it", function()
      local hub, rt = hub_with(function(_, _, kind, count)
        if kind == "put" and count == 1 then return storage_error(503, "ServerBusy", { ["retry-after"] = "7" }) end
        if kind == "put" and count == 2 then return storage_error(503, "ServerBusy", { ["retry-after"] = "0" }) end
      end)
      assert(hub:upload{ name = "x", data = "abc" })
      assert.are.same({ 7, 2 }, rt.sleeps) -- 7 as asked; then the second back-off (2 s), not 0
    end)

    it("a connection failure on a block is retried", function()
      local hub, rt = hub_with(function(_, _, kind, count)
        if kind == "block" and count == 1 then return { fail = "connection reset", kind = "network" } end
      end)
      assert(hub:upload{ name = "x", data = "abcdef", block_size = 3 })
      assert.are.equal(3, #of_kind(rt, "block"))
    end)

    for _, case in ipairs({
      { 403, "AuthenticationFailed", "auth" },
      { 409, "BlobAlreadyExists", "conflict" },
      { 400, "InvalidBlockList", "bad_request" },
    }) do
      it(string.format("%d %s is not retried: a classified failure, and the hub is told (isSuccess false)",
        case[1], case[2]), function()
        local hub, rt = hub_with(function(_, _, kind)
          if kind == "put" then return storage_error(case[1], case[2]) end
        end)
        local ok, message, info = hub:upload{ name = "x", data = "abc" }
        assert.is_nil(ok)
        assert.are.equal(case[3], info.kind)
        assert.are.equal(case[1], info.status)
        assert.are.equal(case[2], info.error_code)
        assert.are.equal("upload_blob", info.step)
        assert.is_false(info.retryable)
        assert.is_true(info.notified)
        assert.are.equal("corr-1", info.correlation_id)
        assert.truthy(message:find("HTTP " .. case[1], 1, true))
        assert.are.equal(1, #of_kind(rt, "put"))
        local n = notification(rt)
        assert.is_false(n.isSuccess)
        assert.are.equal(case[1], n.statusCode)
        assert.are.equal("corr-1", n.correlationId)
        assert_no_sas(ok, message, info, n.statusDescription)
      end)
    end

    it("a failing block says which; the blocks after it are not sent", function()
      local hub, rt = hub_with(function(_, _, kind, count)
        if kind == "block" and count == 2 then return storage_error(403, "AuthenticationFailed") end
      end)
      local _, _, info = hub:upload{ name = "x", data = "aaaabbbbcccc", block_size = 4 }
      assert.are.equal(2, info.block)
      assert.are.equal("upload_block", info.step)
      assert.are.equal(2, #of_kind(rt, "block"))
      assert.are.equal(0, #of_kind(rt, "blocklist"))
    end)

    it("retries end within the hub's timeout: a wait past it ends with the last failure, then the notification",
      function()
        local hub, rt = hub_with(function(_, _, kind)
          if kind == "block" then return storage_error(503, "ServerBusy", { ["retry-after"] = "25" }) end
        end, { timeout = 30 })
        local ok, message, info = hub:upload{ name = "x", data = "aaaabbbb", block_size = 4 }
        assert.is_nil(ok)
        assert.are.equal("service", info.kind)
        assert.truthy(message:find("503", 1, true))
        assert.are.same({ 25 }, rt.sleeps)
        assert.are.equal(2, #of_kind(rt, "block"))
        assert.is_false(notification(rt).isSuccess)
      end)

    it("the upload's timeout bounds the whole upload; the notification still goes out", function()
      local hub, rt = hub_with(function(_, _, kind)
        if kind == "block" then return { status = 201, takes = 4 } end
      end)
      local ok, _, info = hub:upload{ name = "x", data = "aaaabbbbccccdddd", block_size = 4, timeout = 10 }
      assert.is_nil(ok)
      assert.are.equal("timeout", info.kind)
      assert.are.equal(3, #of_kind(rt, "block")) -- 4 s each: the fourth would start past 10 s
      assert.is_false(notification(rt).isSuccess)
    end)

    it("storage's error text is made safe: a signature in it is redacted", function()
      local hub = hub_with(function(_, _, kind)
        if kind == "put" then
          return storage_error(403, "AuthenticationFailed", nil, "Signature did not match: sig=" .. SIG .. "\27[2J")
        end
      end)
      local _, message, info = hub:upload{ name = "x", data = "abc" }
      assert.truthy(message:find("sig=<redacted>", 1, true))
      assert.is_nil(message:find("\27", 1, true))
      assert_no_sas(message, info)
    end)
  end)

  describe("the hub's calls", function()
    it("a throttled start (429, Retry-After) is sent again, as any hub call", function()
      local hub, rt = hub_with(function(_, _, kind, count)
        if kind == "start" and count == 1 then
          return hub_error(429, "ThrottlingException", { ["retry-after"] = "5" })
        end
      end)
      assert(hub:upload{ name = "x", data = "abc" })
      assert.are.same({ 5 }, rt.sleeps)
      assert.are.equal(2, #of_kind(rt, "start"))
    end)

    local function linked(script)
      local rt = runtime(script)
      local calls = 0
      local link = connect.link{ client = { stats = function() return {} end, close = function() end },
        provision = function()
          calls = calls + 1
          return { assignedHub = "hub-b.azure-devices.net", deviceId = "dev-moved", registrationId = "dev-1" },
            { source = "service", clock_offset = 0 }
        end }
      return Hub.create({ state = STATE, symmetric_key = KEY }, rt, link), rt, function() return calls end
    end

    it("a device the hub no longer knows (404) provisions again and asks the new hub", function()
      local hub, rt, calls = linked(function(_, _, kind, count)
        if kind == "start" and count == 1 then return hub_error(404, "DeviceNotFound") end
      end)
      assert(hub:upload{ name = "x", data = "abc" })
      assert.are.equal(1, calls())
      local starts = of_kind(rt, "start")
      assert.are.equal("https://hub-b.azure-devices.net/devices/dev-moved/files?api-version=2021-04-12", starts[2].url)
    end)

    it("10 uploads in progress (403 DeviceMaximumActiveFileUploadLimitExceeded) is kind quota, never a refusal",
      function()
        local hub, rt, calls = linked(function(_, _, kind)
          if kind == "start" then return hub_error(403, "DeviceMaximumActiveFileUploadLimitExceeded") end
        end)
        local ok, _, info = hub:upload{ name = "x", data = "abc" }
        assert.is_nil(ok)
        assert.are.equal("quota", info.kind)
        assert.are.equal(0, calls()) -- not provisioned again
        assert.are.equal(1, #rt.sent) -- no storage request, nothing to notify
      end)

    for _, case in ipairs({
      { "no sasToken", { sasToken = false } },
      { "a sasToken without '?'", { sasToken = SAS:sub(2) } },
      { "a sasToken with a space", { sasToken = SAS .. " x" } },
      { "a hostName that is no host", { hostName = "acct.blob/evil" } },
      { "a blobName with a line break", { blobName = "dev/a\nb" } },
      { "an empty containerName", { containerName = "" } },
    }) do
      it("a place with " .. case[1] .. " is kind protocol, no storage request, and the hub is told", function()
        local hub, rt = hub_with(function(_, _, kind)
          if kind == "start" then return place(case[2]) end
        end)
        local ok, message, info = hub:upload{ name = "x", data = "abc" }
        assert.is_nil(ok)
        assert.are.equal("protocol", info.kind)
        assert.are.equal("upload_start", info.step)
        assert.are.equal(0, #of_kind(rt, "put"))
        assert.is_false(notification(rt).isSuccess)
        assert_no_sas(message, info)
      end)
    end

    it("a place without a correlationId cannot be notified, and says so by its absence", function()
      local hub, rt = hub_with(function(_, _, kind)
        if kind == "start" then return place({ correlationId = false }) end
      end)
      local _, _, info = hub:upload{ name = "x", data = "abc" }
      assert.are.equal("protocol", info.kind)
      assert.is_nil(info.notified)
      assert.are.equal(1, #rt.sent)
    end)

    it("an upload that worked but whose notification failed is a failure that says so", function()
      local hub = hub_with(function(_, _, kind)
        if kind == "notify" then return hub_error(400, "ArgumentInvalid") end
      end)
      local ok, message, info = hub:upload{ name = "logs/boot.txt", data = "abc" }
      assert.is_nil(ok)
      assert.are.equal("bad_request", info.kind)
      assert.are.equal("upload_notify", info.step)
      assert.is_true(info.uploaded)
      assert.are.equal("dev(1)!/logs/boot.txt", info.blob_name)
      assert.truthy(message:find("was uploaded, but the hub could not be told", 1, true))
    end)

    it("a failed upload whose notification failed too says both", function()
      local hub = hub_with(function(_, _, kind)
        if kind == "put" then return storage_error(403, "AuthenticationFailed") end
        if kind == "notify" then return hub_error(400, "ArgumentInvalid") end
      end)
      local _, message, info = hub:upload{ name = "x", data = "abc" }
      assert.are.equal("auth", info.kind)
      assert.is_false(info.notified)
      assert.are.equal("bad_request", info.notify_info.kind)
      assert.truthy(message:find("the hub could not be told that the upload failed", 1, true))
    end)

    it("on_progress raising: the hub is told (isSuccess false), then the error goes on to the caller", function()
      local hub, rt = hub_with()
      assert.has_error(function()
        hub:upload{ name = "x", data = "abcdef", block_size = 3, on_progress = function(sent)
          if sent == 3 then error("stop here", 0) end
        end }
      end, "stop here")
      assert.is_false(notification(rt).isSuccess)
    end)
  end)

  describe("the caller's mistakes", function()
    local dir
    setup(function() dir = shell.tmpdir("dps-upload") end)
    teardown(function() shell.succeeds("rm -rf " .. shell.quote(dir)) end)

    it("a missing file is kind config, before any request", function()
      local hub, rt = hub_with()
      local ok, message, info = hub:upload{ name = "x", file = dir .. "/missing.bin" }
      assert.is_nil(ok)
      assert.are.equal("config", info.kind)
      assert.truthy(message:find("missing.bin", 1, true))
      assert.are.equal(0, #rt.sent)
    end)

    it("a folder is no file: kind config", function()
      local hub, rt = hub_with()
      local _, _, info = hub:upload{ name = "x", file = dir }
      assert.are.equal("config", info.kind)
      assert.are.equal(0, #rt.sent)
    end)

    for _, case in ipairs({
      { "no options", nil, "expects a table" },
      { "no name", { data = "x" }, "name must be" },
      { "an empty path segment", { name = "a//b", data = "x" }, "empty, '.' or '..'" },
      { "a '..' segment", { name = "../etc", data = "x" }, "empty, '.' or '..'" },
      { "a control character", { name = "a\nb", data = "x" }, "control characters" },
      { "neither data nor file", { name = "x" }, "give data" },
      { "both data and file", { name = "x", data = "x", file = "/etc/hostname" }, "give data" },
      { "a block size of 0", { name = "x", data = "x", block_size = 0 }, "block_size" },
      { "a fractional block size", { name = "x", data = "x", block_size = 1.5 }, "block_size" },
      { "a block size over 100 MiB", { name = "x", data = "x", block_size = 100 * 1024 * 1024 + 1 }, "block_size" },
      { "more than 50,000 blocks", { name = "x", data = string.rep("x", 50001), block_size = 1 }, "50000 blocks" },
      { "a bad content type", { name = "x", data = "x", content_type = "a\r\nb: c" }, "content_type" },
      { "a negative timeout", { name = "x", data = "x", timeout = -1 }, "timeout" },
      { "an unknown option", { name = "x", data = "x", blocksize = 4 }, "unknown option 'blocksize'" },
      { "a callback that is no function", { name = "x", data = "x", on_progress = 1 }, "on_progress" },
    }) do
      it("raises at the caller's line on " .. case[1], function()
        local hub = hub_with()
        local ok, err = pcall(hub.upload, hub, case[2])
        assert.is_false(ok)
        assert.truthy(err:find(case[3], 1, true), err)
        assert.truthy(err:find("^dps%.hub: ") or err:find("upload_spec"), err)
        local line = debug.getinfo(1, "l").currentline + 1
        local _, err2 = pcall(function() local r = hub:upload(case[2]); return r end) -- no tail call
        assert.truthy(err2:find("upload_spec.lua:" .. line, 1, true), err2)
      end)
    end

    it("raises on a closed client", function()
      local hub = hub_with()
      hub:close()
      assert.has_error(function() hub:upload{ name = "x", data = "x" } end)
    end)

    it("upload.options_problem returns the problem, never raises", function()
      assert.is_nil(upload.options_problem({ name = "a/b.txt", data = "x" }))
      assert.are.equal("string", type(upload.options_problem({ name = 1 })))
    end)
  end)

  describe("dps upload", function()
    local cli = require "dps.cli"
    local hub_cli = require "dps.cli.hub"

    local function sink()
      local b = { text = "" }
      function b.write(_, ...) b.text = b.text .. table.concat({ ... }) end
      return b
    end

    local function run(argv)
      local out, err = sink(), sink()
      local code = cli.main(argv, { DPS_SYMMETRIC_KEY = KEY }, { stdout = out, stderr = err })
      return code, out.text, err.text
    end

    for _, case in ipairs({
      { "no FILE", {}, "give the file" },
      { "--block-size 0", { "--block-size", "0", "f.bin" }, "--block-size must be a whole number of bytes from 1" },
      { "--block-size 1.5", { "--block-size", "1.5", "f.bin" }, "--block-size must be a whole number of bytes" },
      { "--name a//b", { "--name", "a//b", "f.bin" }, "--name must not have an empty" },
      { "--content-type with a line break", { "--content-type", "a\nb", "f.bin" }, "--content-type must be" },
    }) do
      it(case[1] .. " exits 2 before anything goes out", function()
        local argv = { "upload", "--id-scope", "0ne00000001", "--registration-id", "dev-1",
          "--endpoint", "https://dps.example.invalid" }
        for _, a in ipairs(case[2]) do argv[#argv + 1] = a end
        local code, out, err = run(argv)
        assert.are.equal(2, code, err)
        assert.are.equal("", out)
        assert.truthy(err:find(case[3], 1, true), err)
      end)
    end

    it("a FILE that cannot be read exits 3 before anything goes out", function()
      local code, _, err = run({ "upload", "--id-scope", "0ne00000001", "--registration-id", "dev-1",
        "--endpoint", "https://dps.example.invalid", "/nonexistent/f.bin" })
      assert.are.equal(3, code, err)
      assert.truthy(err:find("/nonexistent/f.bin", 1, true), err)
    end)

    it("progress: a line per block; on a terminal, one bar drawn again in place", function()
      local err = sink()
      local term = require("dps.cli.output").terminal({ stdout = sink(), stderr = err })
      local on_progress, done = hub_cli.progress(term, false)
      on_progress(0, 10)
      on_progress(4, 10)
      on_progress(10, 10)
      done()
      assert.are.equal("dps: sent 4 of 10 bytes (40%)\ndps: sent 10 of 10 bytes (100%)\n", err.text)
      err.text = ""
      on_progress, done = hub_cli.progress(term, true)
      on_progress(0, 2097152)
      on_progress(1048576, 2097152)
      on_progress(2097152, 2097152)
      done()
      assert.are.equal("\r[                              ]   0% 0.0 of 2.0 MiB"
        .. "\r[###############               ]  50% 1.0 of 2.0 MiB"
        .. "\r[##############################] 100% 2.0 of 2.0 MiB\n", err.text)
    end)
  end)

  it("the block IDs are base64 of one length for all 50,000 blocks", function()
    local first = core.base64_encode(string.format("block-%06d", 1))
    local last = core.base64_encode(string.format("block-%06d", 50000))
    assert.are.equal(#first, #last)
    assert.is_nil(first:find("=", 1, true))
  end)
end)
