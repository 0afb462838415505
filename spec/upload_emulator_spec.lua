-- hub:upload and dps upload end to end against the emulator's hub and blob
-- store: real HTTPS to both, real tokens, SAS and client certificates. The
-- bytes as the store kept them, one request or blocks and a block list, the
-- peak memory of a 20 MiB upload (in a child process), a block that fails
-- once, a file that gets shorter during the upload, a store that refuses (the hub told with isSuccess false), the
-- storage host verified like the hub, the hub's upload limit, X.509 and
-- group devices, and the command line.
local dps = require "dps"
local dps_session = require "dps.session"
local emulator = require "spec.support.emulator"
local shell = require "spec.support.shell"
local child = require "spec.support.child"
local keys = require "spec.support.keys"
local cjson = require("cjson").new()

local KEY, GROUP_KEY = keys.KEY, keys.GROUP_KEY
local q = shell.quote
local MIB = 1024 * 1024

describe("file upload at the emulator", function()
  local emu, dir, admin

  setup(function()
    emu = emulator.start{ retry_after = "0", enrollments = {
      { type = "individual", registration_id = "up-small", symmetric_key = KEY },
      { type = "individual", registration_id = "up-big", symmetric_key = KEY },
      { type = "individual", registration_id = "up-retry", symmetric_key = KEY },
      { type = "individual", registration_id = "up-shrink", symmetric_key = KEY },
      { type = "individual", registration_id = "up-403", symmetric_key = KEY },
      { type = "individual", registration_id = "up-tls", symmetric_key = KEY },
      { type = "individual", registration_id = "up-sas", symmetric_key = KEY },
      { type = "individual", registration_id = "up-limit", symmetric_key = KEY },
      { type = "individual", registration_id = "up-cli", symmetric_key = KEY },
      { type = "group", group_id = "up-group", symmetric_key = GROUP_KEY },
      { type = "group", attestation = "x509", group_id = "up-x509" },
    }, scenarios = {
      ["up-retry"] = { storage = { { status = 500, on = "block", after = 1 } } },
    } }
    dir = shell.tmpdir("dps-upload")
    admin = dps_session.new{ ca_file = emu.ca_file }
  end)

  teardown(function()
    if admin then admin:close() end
    if emu then emu:stop() end
    shell.succeeds("rm -rf " .. q(dir))
  end)

  local function connect(id, extra)
    local opts = { id_scope = emu.id_scope, registration_id = id, symmetric_key = KEY, endpoint = emu.endpoint,
      ca_file = emu.ca_file, hub_endpoint = emu.endpoint, cache = dir .. "/" .. id .. ".json" }
    for k, v in pairs(extra or {}) do
      if v == false then opts[k] = nil else opts[k] = v end
    end
    return dps.connect(opts)
  end

  local function admin_request(method, path, body, headers)
    local h = headers or {}
    if body and not h["content-type"] then h["content-type"] = "application/json" end
    local status, head, text = admin:request(method, emu.endpoint .. path, h,
      body and (type(body) == "string" and body or cjson.encode(body)) or nil)
    assert(status, head)
    return status, text ~= "" and cjson.decode(text) or nil
  end

  local function files(device_id)
    local _, list = admin_request("GET", "/admin/devices/" .. device_id .. "/files")
    return list
  end

  local function blob(blob_name)
    return shell.read(emu.dir .. "/blobs/device-uploads/" .. blob_name)
  end

  -- The storage requests of a device, by kind.
  local function storage(device_id)
    local out = { storage_put = {}, storage_block = {}, storage_blocklist = {} }
    for _, e in ipairs(emu:log()) do
      if e.event == "request" and out[e.kind] and e.device_id == device_id then
        local list = out[e.kind]
        list[#list + 1] = e
      end
    end
    return out
  end

  -- A file of `size` random bytes.
  local function random_file(name, size)
    local path = dir .. "/" .. name
    assert(shell.succeeds(string.format("head -c %d /dev/urandom >%s", size, q(path))))
    return path
  end

  local function no_sas(text)
    assert.is_nil(text:find("sig=[^<]"), "a SAS signature: " .. text)
    assert.is_nil(text:find("sv=20", 1, true), "a SAS: " .. text)
  end

  it("a 1 KiB string: one request, the same bytes, the hub told of the success", function()
    local hub = assert(connect("up-small"))
    local data = {}
    for i = 1, 1024 do data[i] = string.char((i * 7) % 256) end
    data = table.concat(data)
    local result = assert(hub:upload{ name = "logs/boot.txt", data = data, content_type = "text/plain" })
    hub:close()
    assert.are.equal("up-small/logs/boot.txt", result.blob_name)
    assert.are.equal(1024, result.size)
    assert.are.equal(0, result.blocks)
    assert.are.equal(data, blob("up-small/logs/boot.txt"))
    local reqs = storage("up-small")
    assert.are.equal(1, #reqs.storage_put)
    assert.are.equal(0, #reqs.storage_block + #reqs.storage_blocklist)
    assert.are.equal("sas", reqs.storage_put[1].auth)
    local list = files("up-small")
    assert.are.equal(1, #list)
    assert.are.equal(result.correlation_id, list[1].correlation_id)
    assert.are.same({ isSuccess = true, statusCode = 201, statusDescription = "OK" }, list[1].notification)
    assert.are.equal("text/plain", list[1].content_type)
  end)

  it("a 20 MiB file in 4 MiB blocks: 5 blocks and a block list, the same bytes, progress to the total, "
    .. "and the peak RSS of the process within 16 MiB of what it was", function()
    local path = random_file("big.bin", 20 * MIB)
    local hub = assert(connect("up-big"))
    local host, device_id = hub.host, hub.device_id
    hub:close()
    -- the upload in a process of its own, reading its own VmHWM before and after
    local out, ok = child.run(dir, string.format([[
      local cjson = require "cjson"
      local dps = require "dps"
      local function status()
        local s = assert(io.open("/proc/self/status")):read("*a")
        return tonumber(s:match("VmHWM:%%s*(%%d+)")), tonumber(s:match("VmRSS:%%s*(%%d+)"))
      end
      local hub = dps.hub{ hub = %q, device_id = %q, symmetric_key = %q, endpoint = %q, ca_file = %q }
      collectgarbage()
      local hwm_before, rss_before = status()
      local progress = {}
      local result, message = hub:upload{ name = "backups/big.bin", file = %q, block_size = 4194304,
        on_progress = function(sent, total) progress[#progress + 1] = { sent, total } end }
      local hwm_after, rss_after = status()
      hub:close()
      print(cjson.encode({ result = result or cjson.null, message = message or cjson.null, progress = progress,
        hwm = hwm_after - hwm_before, rss_before = rss_before, rss_after = rss_after }))
    ]], host, device_id, KEY, emu.endpoint, emu.ca_file, path), { prefix = nil })
    assert.is_true(ok, out)
    local doc = cjson.decode(out:match("({.*})%s*$"))
    assert.are.equal(cjson.null, doc.message, out)
    assert.are.equal("up-big/backups/big.bin", doc.result.blob_name)
    assert.are.equal(5, doc.result.blocks)
    assert.are.equal(20 * MIB, doc.result.size)
    -- on_progress: from 0, rising, to the total
    local last = -1
    for _, p in ipairs(doc.progress) do
      assert.is_true(p[1] >= last)
      assert.are.equal(20 * MIB, p[2])
      last = p[1]
    end
    assert.are.equal(0, doc.progress[1][1])
    assert.are.equal(20 * MIB, last)
    local reqs = storage("up-big")
    assert.are.equal(5, #reqs.storage_block)
    assert.are.equal(1, #reqs.storage_blocklist)
    assert.are.equal(0, #reqs.storage_put)
    assert.are.equal(5, reqs.storage_blocklist[1].blocks)
    for _, e in ipairs(reqs.storage_block) do assert.are.equal(4 * MIB, e.bytes) end
    local kept = emu.dir .. "/blobs/device-uploads/up-big/backups/big.bin"
    assert.is_true(shell.succeeds("cmp -s " .. q(path) .. " " .. q(kept)), "the blob differs from the file")
    -- the same bound on every interpreter: the core reads each block from
    -- the file as it sends it (a few MiB of TLS and libcurl buffers grow
    -- meanwhile); no block is ever a string, which PUC Lua 5.1 would build
    -- in several copies (a 4 MiB block took it 22 MiB)
    local limit = 16
    io.stderr:write(string.format("\n[upload of 20 MiB: VmHWM grew by %d kB; VmRSS %d -> %d kB]\n", doc.hwm,
      doc.rss_before, doc.rss_after))
    -- (ASan's allocator keeps freed memory in quarantine, and qemu-user's
    -- RSS is the emulator's too: there it says nothing about what the
    -- upload holds; the native runs check it)
    if not os.getenv("ASAN_OPTIONS") and not os.getenv("DPS_SPEC_EMULATED") then
      assert.is_true(doc.hwm <= limit * 1024, string.format("the peak RSS grew by %d kB", doc.hwm))
    end
  end)

  it("a block that fails once with 500 is sent again; the upload succeeds with the same bytes", function()
    local path = random_file("retry.bin", 3 * MIB + 5)
    local hub = assert(connect("up-retry"))
    local result, message = hub:upload{ name = "retry.bin", file = path, block_size = MIB }
    hub:close()
    assert.is_not_nil(result, message)
    assert.are.equal(4, result.blocks)
    local reqs = storage("up-retry")
    assert.are.equal(5, #reqs.storage_block)
    assert.are.same({ 201, 500, 201, 201, 201 }, { reqs.storage_block[1].status, reqs.storage_block[2].status,
      reqs.storage_block[3].status, reqs.storage_block[4].status, reqs.storage_block[5].status })
    assert.are.equal(reqs.storage_block[2].block_id, reqs.storage_block[3].block_id)
    assert.are.equal(shell.read(path), blob("up-retry/retry.bin"))
    assert.is_true(files("up-retry")[1].notification.isSuccess)
  end)

  it("a file that gets shorter during the upload: kind config at that block, the hub told", function()
    local path = random_file("shrink.bin", 3 * MIB)
    local hub = assert(connect("up-shrink"))
    local result, message, info = hub:upload{ name = "shrink.bin", file = path, block_size = MIB,
      on_progress = function(sent)
        if sent == MIB then assert(shell.succeeds("truncate -s " .. (MIB + 512 * 1024) .. " " .. q(path))) end
      end }
    hub:close()
    assert.is_nil(result)
    assert.are.equal("config", info.kind)
    assert.are.equal("upload_block", info.step)
    assert.are.equal(2, info.block)
    assert.is_false(info.retryable)
    assert.are.equal("upload_block: cannot read the body's file: it ended 524288 bytes into a range of 1048576 "
      .. "(CURLE_ABORTED_BY_CALLBACK 42)", message)
    assert.is_true(info.notified)
    local reqs = storage("up-shrink")
    -- block 1 stored; block 2 cut off mid-body (its request never answered), not sent again
    assert.are.equal(2, #reqs.storage_block)
    assert.are.same({ 201, MIB }, { reqs.storage_block[1].status, reqs.storage_block[1].bytes })
    assert.is_nil(reqs.storage_block[2].status)
    assert.are.equal(0, #reqs.storage_blocklist)
    assert.is_nil(blob("up-shrink/shrink.bin"))
    local n = files("up-shrink")[1].notification
    assert.is_false(n.isSuccess)
    assert.are.equal(500, n.statusCode)
  end)

  it("a store that answers 403: kind auth, nothing kept, and the hub told with isSuccess false", function()
    assert.are.equal(201, (admin_request("POST", "/admin/devices/up-403/storage_faults", { status = 403 })))
    local hub = assert(connect("up-403"))
    local result, message, info = hub:upload{ name = "refused.txt", data = "nobody wants this" }
    hub:close()
    assert.is_nil(result)
    assert.are.equal("auth", info.kind)
    assert.are.equal(403, info.status)
    assert.are.equal("AuthenticationFailed", info.error_code)
    assert.are.equal("upload_blob", info.step)
    assert.is_true(info.notified)
    no_sas(message)
    assert.is_nil(blob("up-403/refused.txt"))
    local n = files("up-403")[1].notification
    assert.is_false(n.isSuccess)
    assert.are.equal(403, n.statusCode)
    no_sas(n.statusDescription)
  end)

  it("the storage host is verified like the hub: an expired certificate, a name not on it", function()
    local hub = assert(connect("up-tls"))
    for _, host in ipairs({ "localhost:" .. emu.ports[2], "127.0.0.1:" .. emu.ports[1] }) do
      assert.are.equal(200, (admin_request("POST", "/admin/storage", { host = host })))
      local result, message, info = hub:upload{ name = "t.txt", data = "x" }
      assert.is_nil(result)
      assert.are.equal("tls", info.kind, message)
      assert.are.equal("upload_blob", info.step)
      assert.is_true(info.notified)
    end
    assert.are.equal(200, (admin_request("POST", "/admin/storage", {})))
    assert(hub:upload{ name = "t.txt", data = "x" })
    hub:close()
  end)

  it("the store takes only the SAS the hub issued for that blob", function()
    local hub = assert(connect("up-sas"))
    local token = hub:token()
    hub:close()
    local status, doc = admin_request("POST", "/devices/up-sas/files?api-version=2021-04-12",
      { blobName = "s.txt" }, { authorization = token })
    assert.are.equal(200, status)
    local url = "https://" .. doc.hostName .. "/" .. doc.containerName .. "/" .. doc.blobName
    local put = { ["x-ms-blob-type"] = "BlockBlob" }
    local function try(target)
      local st = admin:request("PUT", target, put, "bytes")
      return st
    end
    assert.are.equal(403, try(url))
    assert.are.equal(403, try(url .. doc.sasToken:gsub("sig=..", "sig=AA")))
    assert.are.equal(403, try(url:gsub("s%.txt$", "other.txt") .. doc.sasToken))
    assert.are.equal(403, try(url .. doc.sasToken:gsub("se=2", "se=3")))
    assert.are.equal(201, try(url .. doc.sasToken))
    assert.are.equal("bytes", blob("up-sas/s.txt"))
  end)

  it("10 uploads in progress: the hub's limit is kind quota, and the device is not provisioned again", function()
    local hub = assert(connect("up-limit"))
    local token = hub:token()
    for i = 1, 10 do
      assert.are.equal(200, (admin_request("POST", "/devices/up-limit/files?api-version=2021-04-12",
        { blobName = "held-" .. i }, { authorization = token })))
    end
    local result, _, info = hub:upload{ name = "one-more.txt", data = "x" }
    assert.is_nil(result)
    assert.are.equal("quota", info.kind)
    assert.are.equal("DeviceMaximumActiveFileUploadLimitExceeded", info.error_code)
    assert.are.equal(0, hub:stats().reprovisions)
    hub:close()
  end)

  it("a group member and an X.509 device upload too", function()
    local member = assert(connect("up-member-1", { symmetric_key = false, group_key = GROUP_KEY }))
    assert.are.equal("up-member-1/g.txt", assert(member:upload{ name = "g.txt", data = "from a group" }).blob_name)
    member:close()
    assert.are.equal("from a group", blob("up-member-1/g.txt"))
    if not emu.x509 then
      pending("the emulator runs without client certificates (no LuaJIT)")
      return
    end
    local certs = emulator.certs()
    local device = assert(connect("x509-device-01", { symmetric_key = false, registration_id = false,
      cert_file = certs.x509_device_01_chain, key_file = certs.x509_device_01_key }))
    assert(device:upload{ name = "x.txt", data = "over mutual TLS" })
    device:close()
    assert.are.equal("over mutual TLS", blob("x509-device-01/x.txt"))
    for _, e in ipairs(emu:log()) do
      if e.kind == "hub_files" and e.device_id == "x509-device-01" then assert.are.equal("x509", e.auth) end
    end
  end)

  it("dps upload FILE: exit 0, one line of JSON on stdout, a line per block on stderr, no SAS anywhere", function()
    local path = random_file("cli.bin", 2 * MIB + 100)
    local lua, cpath = shell.plain()
    local cmd = string.format("env DPS_SYMMETRIC_KEY=%s LUA_PATH=%s LUA_CPATH=%s %s %s upload --id-scope %s "
      .. "--registration-id up-cli --endpoint %s --hub-endpoint %s --ca-file %s --cache %s --name logs/cli.bin "
      .. "--block-size %d %s >%s 2>%s; echo $? >%s",
      q(KEY), q(package.path), q(cpath), q(lua), q(emulator.root .. "/bin/dps"), q(emu.id_scope), q(emu.endpoint),
      q(emu.endpoint), q(emu.ca_file), q(dir .. "/cli-cache.json"), MIB, q(path), q(dir .. "/out"), q(dir .. "/err"),
      q(dir .. "/rc"))
    shell.succeeds(cmd)
    local out, err = shell.read(dir .. "/out") or "", shell.read(dir .. "/err") or ""
    assert.are.equal("0", (shell.read(dir .. "/rc") or ""):match("%d+"), err)
    local line = out:match("^([^\n]*)\n$")
    assert.is_not_nil(line, out)
    local doc = cjson.decode(line)
    assert.are.equal("up-cli/logs/cli.bin", doc.blob_name)
    assert.are.equal(2 * MIB + 100, doc.size)
    assert.are.equal(3, doc.blocks)
    assert.are.equal("string", type(doc.correlation_id))
    local lines = {}
    for l in err:gmatch("[^\n]+") do lines[#lines + 1] = l end
    assert.are.same({ "dps: sent 1048576 of 2097252 bytes (49%)", "dps: sent 2097152 of 2097252 bytes (99%)",
      "dps: sent 2097252 of 2097252 bytes (100%)" }, lines)
    no_sas(out .. err)
    assert.are.equal(shell.read(path), blob("up-cli/logs/cli.bin"))
    -- a file that is not there: exit 3 before any request
    local before = #emu:requests()
    local i, j = cmd:find(q(path), 1, true)
    shell.succeeds(cmd:sub(1, i - 1) .. q(dir .. "/missing.bin") .. cmd:sub(j + 1))
    err = shell.read(dir .. "/err") or ""
    assert.are.equal("3", (shell.read(dir .. "/rc") or ""):match("%d+"), err)
    assert.truthy(err:find("missing.bin", 1, true), err)
    assert.are.equal(before, #emu:requests())
  end)
end)
