-- Device life (issue #12): provision once and keep the assignment through
-- reboots, power cuts (kill -9 in the middle of a rewrite) and key rotation.
-- The rules of the cache are pure functions, checked in milliseconds; the
-- file writes are real (dps.core.write_atomic); the end-to-end rows run
-- against the local emulator, the reboots as real `bin/dps` processes.
-- The wrong clock is in spec/clock_spec.lua.
local dps = require "dps"
local core = require "dps.core"
local cache = require "dps.cache"
local emulator = require "spec.support.emulator"
local shell = require "spec.support.shell"
local writer = require "spec.support.cache_writer"
local keys = require "spec.support.keys"
local timing = require "spec.support.timing"
local cjson = require("cjson").new()

local KEY, KEY_32 = keys.KEY, keys.KEY_32
local q, read, write = shell.quote, shell.read, shell.write

local ID = { id_scope = "0ne00000001", registration_id = "dev-01", endpoint = "https://localhost:1",
  credential = cache.key_fingerprint(KEY) }
local STATE = { assignedHub = "hub.azure-devices.net", deviceId = "dev-01", status = "assigned",
  substatus = "initialAssignment", etag = "e1", lastUpdatedDateTimeUtc = "2026-01-01T00:00:00Z" }

local function copy(t)
  local out = {}
  for k, v in pairs(t) do out[k] = type(v) == "table" and copy(v) or v end
  return out
end

-- Temporary files write_atomic leaves beside PATH (".NAME.XXXXXX").
local function temporaries(path)
  local dir, name = path:match("^(.*)/([^/]*)$")
  local out = shell.run("ls -a " .. q(dir))
  local n = 0
  for entry in out:gmatch("[^\n]+") do
    if entry:sub(1, #name + 2) == "." .. name .. "." and #entry == #name + 8 then n = n + 1 end
  end
  return n
end

describe("the assignment cache's rules (pure)", function()
  it("a cache it wrote answers for the same device", function()
    local doc = assert(cache.decode(cache.encode(ID, STATE, 1700000000), ID))
    assert.are.equal("hub.azure-devices.net", doc.state.assignedHub)
    assert.are.equal(1, doc.format)
    assert.are.equal("2023-11-14T22:13:20Z", doc.written_at)
  end)

  it("ignores, with the reason, a cache that is truncated, not JSON, of another format or for another device",
    function()
      local text = cache.encode(ID, STATE, 1700000000)
      local function problem(t, identity)
        local doc, why = cache.decode(t, identity or ID)
        assert.is_nil(doc)
        return why
      end
      assert.matches("truncated", problem(text:sub(1, math.floor(#text / 2))))
      assert.matches("empty", problem(""))
      assert.matches("not JSON", problem("\0\0\0\0"))
      assert.matches("not a JSON object", problem("42"))
      assert.matches("format 0; this library reads format 1", problem((text:gsub('"format":1', '"format":0'))))
      local formatless = cjson.decode(text)
      formatless.format = nil
      assert.matches("format missing", problem(cjson.encode(formatless)))
      for _, field in ipairs({ "id_scope", "registration_id", "endpoint" }) do
        local other = copy(ID)
        other[field] = other[field] .. "x"
        assert.matches("for another device: " .. field .. " differs", problem(text, other))
      end
      local rotated = copy(ID)
      rotated.credential = cache.key_fingerprint(KEY_32)
      assert.matches("another credential", problem(text, rotated))
      local unassigned = copy(STATE)
      unassigned.assignedHub = nil
      assert.matches("no assignment", problem(cache.encode(ID, unassigned, 0)))
    end)

  it("fingerprints a key with an HMAC, never the key: stable, and different for another key", function()
    local f = cache.key_fingerprint(KEY)
    assert.are.equal(f, cache.key_fingerprint(KEY))
    assert.are_not.equal(f, cache.key_fingerprint(KEY_32))
    assert.matches("^sas:[%w+/]+=*$", f)
    assert.is_nil(f:find(KEY:sub(1, 12), 1, true))
    assert.is_nil(cache.encode(ID, STATE, 0):find(KEY:sub(1, 12), 1, true))
  end)

  it("fingerprints the leaf certificate, whatever the line breaks", function()
    local certs = emulator.certs()
    local one, two = read(certs.x509_device_01_chain), read(certs.x509_device_02_chain)
    assert.are.equal(cache.cert_fingerprint(one), cache.cert_fingerprint((one:gsub("\n", "\r\n"))))
    assert.are.equal(cache.cert_fingerprint(one), cache.cert_fingerprint(read(certs.x509_device_01)))
    assert.are_not.equal(cache.cert_fingerprint(one), cache.cert_fingerprint(two))
    assert.matches("^x509:", cache.cert_fingerprint(one))
  end)

  it("counts the same assignment as unchanged: timestamps, etag and substatus aside", function()
    local a = cjson.decode(cache.encode(ID, STATE, 1))
    local later = copy(STATE)
    later.etag, later.lastUpdatedDateTimeUtc, later.substatus = "e2", "2026-02-02T00:00:00Z", "deviceDataMigrated"
    assert.is_true(cache.same(a, cjson.decode(cache.encode(ID, later, 99999))))
    local moved = copy(STATE)
    moved.assignedHub = "other-hub.azure-devices.net"
    assert.is_false(cache.same(a, cjson.decode(cache.encode(ID, moved, 1))))
    local rotated = copy(ID)
    rotated.credential = "sas:other"
    assert.is_false(cache.same(a, cjson.decode(cache.encode(rotated, STATE, 1))))
  end)
end)

describe("dps.core.write_atomic", function()
  local dir
  setup(function() dir = shell.tmpdir("dps-life") end)
  teardown(function() shell.succeeds("rm -rf " .. q(dir)) end)

  it("replaces a file with mode 0600, whatever the old one was, and leaves no temporary file", function()
    local path = write(dir .. "/a.json", "old", "644")
    assert.is_true(core.write_atomic(path, "new contents"))
    assert.are.equal("new contents", read(path))
    assert.are.equal(384, core.stat(path).mode)
    assert.are.equal(0, temporaries(path))
  end)

  it("removes the temporary files an interrupted write of the same path left, and no others", function()
    local path = dir .. "/b.json"
    write(dir .. "/.b.json.AbC123", "half")
    write(dir .. "/.b.json.keep", "not ours")
    write(dir .. "/.c.json.AbC123", "another file's")
    assert.is_true(core.write_atomic(path, "x"))
    assert.are.equal(0, temporaries(path))
    assert.truthy(read(dir .. "/.b.json.keep"))
    assert.truthy(read(dir .. "/.c.json.AbC123"))
  end)

  it("fails as nil, message, info{kind = config} where it cannot write, and leaves the old file", function()
    local ok, message, info = core.write_atomic(dir .. "/missing/x.json", "x")
    assert.is_nil(ok)
    assert.are.equal("config", info.kind)
    assert.matches("missing/x.json: No such file or directory", message)
    local path = write(dir .. "/d.json", "old")
    shell.succeeds("chmod 555 " .. q(dir))
    local ok2, _, info2 = core.write_atomic(path, "new")
    shell.succeeds("chmod 755 " .. q(dir))
    if shell.run("id -u"):match("^0") then
      assert.is_true(ok2) -- root writes anyway
    else
      assert.is_nil(ok2)
      assert.are.equal("config", info2.kind)
      assert.are.equal("old", read(path))
    end
  end)

  it("raises on misuse, naming itself", function()
    for _, bad in ipairs({ { nil, "x" }, { "", "x" }, { dir .. "/", "x" }, { "a\0b", "x" }, { "p", 1 },
      { string.rep("a", 5000), "x" } }) do
      local ok, err = pcall(core.write_atomic, bad[1], bad[2])
      assert.is_false(ok)
      assert.matches("dps.core.write_atomic: ", err)
    end
  end)

  -- RUNS writers, each killed (kill -9) at a random instant among its
  -- rewrites: every snapshot is one whole assignment, both assignments are
  -- seen, temporary files never pile up.
  local function kill_loop(runs)
    local path = dir .. "/assignment.json"
    local lua, cpath = shell.plain()
    local started_file = dir .. "/started"
    local lines = { string.format("export LUA_PATH=%s LUA_CPATH=%s DPS_SPEC_STARTED=%s", q(package.path),
      q(cpath), q(started_file)) }
    local seed = os.time()
    math.randomseed(seed)
    for i = 1, runs do
      -- once the writer has written (it then makes the "started" file), a
      -- rewrite takes ~10 ms (two fsyncs): kill it 0-20 ms later
      lines[#lines + 1] = string.format("rm -f %s; %s spec/support/cache_writer.lua %s & p=$!; "
        .. "while [ ! -e %s ] && kill -0 $p 2>/dev/null; do sleep 0.001; done; sleep %.3f; "
        .. "kill -9 $p; wait $p 2>/dev/null; cp %s %s/snap.%d 2>/dev/null; ls -a %s | grep -c '^\\.assignment' "
        .. ">%s/temps.%d", q(started_file), lua, q(path), q(started_file), math.random() * 0.02, q(path), q(dir),
        i, q(dir), q(dir), i)
    end
    local script = write(dir .. "/kill.sh", table.concat(lines, "\n") .. "\ntrue\n")
    local started = core.monotime()
    assert.is_true(shell.succeeds("sh " .. q(script) .. " >/dev/null 2>&1"))
    local took = core.monotime() - started
    local seen, piled = { 0, 0 }, 0
    assert.truthy(read(started_file), "the writer never wrote")
    for i = 1, runs do
      local text = read(dir .. "/snap." .. i)
      if text then
        local doc, why = cache.decode(text, writer.IDENTITY)
        assert.truthy(doc, string.format("run %d of %d (seed %d): the cache is %s", i, runs, seed, tostring(why)))
        local n = tonumber(doc.state.assignedHub:match("^hub%-(%d)"))
        assert.are.same(writer.state(n), doc.state)
        seen[n] = seen[n] + 1
      end
      piled = math.max(piled, tonumber(read(dir .. "/temps." .. i)) or 0)
    end
    -- both assignments seen: the kills did land among rewrites
    assert.is_true(seen[1] > 0 and seen[2] > 0, string.format("seen %d / %d", seen[1], seen[2]))
    assert.is_true(piled <= 1, "temporary files piled up: " .. piled)
    assert(cache.store(path, writer.IDENTITY, writer.state(1), 0))
    assert.are.equal(0, temporaries(path))
    print(string.format("\n# kill -9: %d runs in %.1f s, snapshots hub-1 %d / hub-2 %d, at most %d temporary file(s)",
      runs, took, seen[1], seen[2], piled))
  end

  it("survives kill -9 at random instants: the file is always one whole assignment, temporaries never pile up",
    function() kill_loop(20) end)

  -- the same, 200 times (make soak)
  it("survives kill -9 at 200 random instants #soak", function() kill_loop(200) end)
end)

describe("the assignment cache at the emulator", function()
  local emu, dir
  -- dps.provision's timeout (connecting included): none should take it, it
  -- only stops a spec that would wait for ever; measured slowness.
  local timeout

  setup(function()
    emu = emulator.start{ retry_after = "0", enrollments = {
      { type = "individual", registration_id = "life-reboot", symmetric_key = KEY },
      { type = "individual", registration_id = "life-soak", symmetric_key = KEY },
      { type = "individual", registration_id = "life-bad", symmetric_key = KEY },
      { type = "individual", registration_id = "life-rotate", symmetric_key = KEY, secondary_key = KEY_32 },
      { type = "individual", registration_id = "life-force", symmetric_key = KEY },
    } }
    dir = shell.tmpdir("dps-life")
    timeout = timing.margin(10)
  end)

  teardown(function()
    if emu then emu:stop() end
    shell.succeeds("rm -rf " .. q(dir))
  end)

  -- Registrations (PUT …/register) of one device so far; the emulator logs
  -- a request just after answering it, so wait a little for the last one
  -- (2 s on an idle machine, times how busy it is: the emulator is a
  -- process of its own).
  local function registrations(id, at_least)
    local deadline
    while true do
      local n = 0
      for _, e in ipairs(emu:requests(id)) do
        if e.method == "PUT" then n = n + 1 end
      end
      if n >= (at_least or 0) then return n end
      deadline = deadline or core.monotime() + timing.child_margin(2)
      if core.monotime() > deadline then return n end
      os.execute("sleep 0.05")
    end
  end

  local function provision(id, path, extra)
    local o = { id_scope = emu.id_scope, registration_id = id, symmetric_key = KEY, endpoint = emu.endpoint,
      ca_file = emu.ca_file, timeout = timeout, connect_timeout = timeout, cache = path }
    for k, v in pairs(extra or {}) do o[k] = v end
    return dps.provision(o)
  end

  -- BOOTS runs of the dps command with --cache, as BOOTS reboots of a
  -- device (registration ID ID, its cache in its own folder): the first
  -- registers, every later one answers from the cache with the same state.
  local function reboots(id, boots)
    local path = dir .. "/" .. id .. "/assignment.json"
    shell.succeeds("mkdir -p " .. q(dir .. "/" .. id))
    local env = write(dir .. "/env.sh", string.format("export LUA_PATH=%s LUA_CPATH=%s DPS_SYMMETRIC_KEY=%s\n",
      q(package.path), q(package.cpath), q(KEY)))
    local cmd = string.format("%s %s provision --id-scope %s --registration-id %s --endpoint %s "
      .. "--ca-file %s --cache %s", shell.interpreter(), q(emulator.root .. "/bin/dps"), emu.id_scope, id,
      q(emu.endpoint), q(emu.ca_file), q(path))
    local out = dir .. "/" .. id .. "/out."
    local script = write(dir .. "/reboot.sh", table.concat({
      ". " .. q(env),
      "i=0",
      "while [ $i -lt " .. boots .. " ]; do",
      "  " .. cmd .. " >" .. q(out) .. "$i 2>>" .. q(dir .. "/err") .. " || exit 1",
      "  i=$((i + 1))",
      "done",
    }, "\n") .. "\n")
    local started = core.monotime()
    assert.is_true(shell.succeeds("sh " .. q(script)), read(dir .. "/err") or "no stderr")
    local took = core.monotime() - started
    local first = cjson.decode(read(out .. "0"))
    assert.are.equal(id, first.deviceId)
    for i = 1, boots - 1 do -- every boot prints the same state
      assert.are.same(first, cjson.decode(read(out .. i)))
    end
    assert.are.equal(1, registrations(id, 1))
    assert.are.equal(2, #emu:requests(id)) -- the register and one poll, on the first boot only
    assert.are.equal(384, core.stat(path).mode)
    assert.is_nil(read(path):find(KEY:sub(1, 12), 1, true))
    print(string.format("\n# %d reboots: %d registration(s), %d request(s) in all, %.1f s",
      boots, registrations(id), #emu:requests(id), took))
  end

  it("5 reboots of the dps command with --cache: one registration", function()
    reboots("life-reboot", 5)
  end)

  -- the same, 100 times (make soak)
  it("100 reboots of the dps command with --cache: one registration #soak", function()
    reboots("life-soak", 100)
  end)

  it("says on -v where the state came from", function()
    local path = dir .. "/life-reboot/assignment.json" -- the reboots' cache
    local cli = require "dps.cli"
    local err = {}
    local sink = { write = function(_, ...) for i = 1, select("#", ...) do err[#err + 1] = select(i, ...) end end }
    local code = cli.main({ "provision", "--id-scope", emu.id_scope, "--registration-id", "life-reboot",
      "--endpoint", emu.endpoint, "--ca-file", emu.ca_file, "--cache", path, "-v" }, { DPS_SYMMETRIC_KEY = KEY },
      { stdout = { write = function() end }, stderr = sink })
    assert.are.equal(0, code)
    assert.matches("from the cache .* no request", table.concat(err))
    write(path, "{ not json")
    err = {}
    code = cli.main({ "provision", "--id-scope", emu.id_scope, "--registration-id", "life-reboot",
      "--endpoint", emu.endpoint, "--ca-file", emu.ca_file, "--cache", path, "-v" }, { DPS_SYMMETRIC_KEY = KEY },
      { stdout = { write = function() end }, stderr = sink })
    assert.are.equal(0, code)
    assert.matches("ignoring the cache .*: not JSON", table.concat(err))
    assert.matches("cache written", table.concat(err))
    assert.is_nil(table.concat(err):find(KEY:sub(1, 12), 1, true))
  end)

  it("a corrupt, truncated, foreign or older-format cache: one new registration each, file rewritten", function()
    local path = dir .. "/bad.json"
    local _, info = provision("life-bad", path)
    assert.are.equal("service", info.source)
    local good = read(path)
    local foreign = good:gsub('"registration_id":"life%-bad"', '"registration_id":"someone-else"')
    local cases = {
      { "corrupt", "\1\2\3 garbage \255", "not JSON" },
      { "truncated", good:sub(1, 40), "truncated" },
      { "foreign", foreign, "for another device: registration_id differs" },
      { "older format", (good:gsub('"format":1', '"format":0')), "format 0" },
    }
    assert.are.equal(1, registrations("life-bad", 1))
    for i, case in ipairs(cases) do
      write(path, case[2])
      local state
      state, info = provision("life-bad", path)
      assert.truthy(state, case[1])
      assert.are.equal("service", info.source, case[1])
      assert.truthy(tostring(info.cache_ignored):find(case[3], 1, true),
        case[1] .. ": " .. tostring(info.cache_ignored))
      assert.is_true(info.cache_written, case[1])
      assert.are.equal(i + 1, registrations("life-bad", i + 1), case[1])
      assert.truthy(cache.load(path, { id_scope = emu.id_scope, registration_id = "life-bad",
        endpoint = emu.endpoint, credential = cache.key_fingerprint(KEY) }), case[1])
      -- and the next boot answers from it
      local _, again = provision("life-bad", path)
      assert.are.equal("cache", again.source, case[1])
    end
    assert.are.equal(#cases + 1, registrations("life-bad"))
  end)

  it("a rotated key: one new registration, then the cache again", function()
    local path = dir .. "/rotate.json"
    local _, info = provision("life-rotate", path)
    assert.are.equal("service", info.source)
    _, info = provision("life-rotate", path)
    assert.are.equal("cache", info.source)
    assert.are.equal(1, registrations("life-rotate", 1))
    local state
    state, info = provision("life-rotate", path, { symmetric_key = KEY_32 })
    assert.truthy(state)
    assert.are.equal("service", info.source)
    assert.matches("another credential", info.cache_ignored)
    assert.are.equal(2, registrations("life-rotate", 2))
    _, info = provision("life-rotate", path, { symmetric_key = KEY_32 })
    assert.are.equal("cache", info.source)
    assert.are.equal(2, registrations("life-rotate"))
  end)

  it("force registers even so, and rewrites the file only when the assignment changed", function()
    local path = dir .. "/force.json"
    local _, info = provision("life-force", path)
    assert.is_true(info.cache_written)
    local before = read(path)
    _, info = provision("life-force", path, { force = true })
    assert.are.equal("service", info.source)
    assert.is_false(info.cache_written) -- the same hub and device: the flash is spared
    assert.are.equal(before, read(path))
    assert.are.equal(2, registrations("life-force", 2))
    -- a cache of another assignment is replaced
    write(path, (before:gsub('"assignedHub":"[^"]*"', '"assignedHub":"old-hub.example"')))
    _, info = provision("life-force", path, { force = true })
    assert.is_true(info.cache_written)
    assert.is_nil(read(path):find("old-hub", 1, true))
  end)

  it("provisions even when the cache cannot be written, and says why", function()
    local state, info = provision("life-force", dir .. "/no/such/folder/a.json")
    assert.truthy(state)
    assert.are.equal("service", info.source)
    assert.is_false(info.cache_written)
    assert.matches("No such file or directory", info.cache_error)
  end)

  it("refuses cache and force of the wrong type", function()
    assert.has_error(function() provision("life-force", 42) end)
    assert.has_error(function() provision("life-force", dir .. "/x", { force = "yes" }) end)
    assert.has_error(function() provision("life-force", "") end)
  end)
end)
