-- core.engine: many transfers at once, driven by step() (sockets and timer
-- handed out) or run(); the session's failure kinds; misuse raises; close
-- mid-flight is clean.
local core = require "dps.core"
local emulator = require "spec.support.emulator"
local shell = require "spec.support.shell"
local timing = require "spec.support.timing"

describe("core.engine", function()
  local emu
  -- A transfer's timeout, connecting included: no request here should take
  -- it, it only stops a spec that would wait for ever; measured slowness
  -- (timing.margin), so that a busy machine or valgrind does not time out
  -- what works.
  local timeout

  setup(function()
    emu = emulator.start{ scenarios = { hang = { register = { { fault = "hang", seconds = 600 } } } } }
    timeout = timing.margin(5)
  end)

  teardown(function()
    if emu then emu:stop() end
  end)

  local function engine(slots)
    return core.engine({ ca_file = emu.ca_file, timeout = timeout, connect_timeout = timeout }, slots)
  end

  it("step() never blocks, hands out sockets and a timer, and reports finished transfers", function()
    local e = engine(4)
    -- a request the server never answers: step must not wait for it (its
    -- own timeout outlasts the loop below, which may take all of `timeout`
    -- on a busy machine under valgrind)
    local hung = e:request("PUT", emu.endpoint .. "/0ne00000001/registrations/hang/register?api-version=1",
      { ["content-type"] = "application/json" }, "{}", 4 * timeout)
    local ids = {}
    for i = 1, 3 do ids[i] = assert(e:request("GET", emu.endpoint .. "/nowhere/" .. i)) end
    -- blocking is waiting: a step may compute for a second (a TLS
    -- handshake under qemu-user), it must not wait for the network.  What
    -- waiting is left in a step that does not block (another thread of
    -- libcurl's to hand over to, a page to read in) grows with how busy the
    -- machine is: 0.1 s on an idle one, far below the transfer timeout a
    -- blocking step would wait for.
    local limit = timing.margin(0.1)
    local seen_fd, finished, t0 = false, {}, core.monotime()
    while #finished < 3 and core.monotime() - t0 < timeout do
      local waited, wait, fds, done = timing.waited(e.step, e)
      assert.is_true(waited < limit, "step blocked for " .. waited .. " s (limit " .. limit .. " s)")
      assert.is_true(wait == nil or (type(wait) == "number" and wait >= 0))
      for fd, mode in pairs(fds) do
        assert.is_number(fd)
        assert.truthy(mode == "r" or mode == "w" or mode == "rw")
        seen_fd = true
      end
      for _, id in ipairs(done) do finished[#finished + 1] = id end
      core.sleep(math.min(wait or 0.005, 0.005))
    end
    assert.equal(1, e:stats().running) -- the hung one
    -- only the hung request is left, nothing can happen: step returns at once
    for _ = 1, 3 do
      local waited = timing.waited(e.step, e)
      assert.is_true(waited < limit, "step blocked for " .. waited .. " s on a hung request alone")
    end
    assert.is_true(e:cancel(hung))
    assert.is_true(seen_fd)
    table.sort(finished)
    assert.same(ids, finished)
    for _, id in ipairs(finished) do
      local status, headers, body = e:take(id)
      assert.equal(404, status, headers) -- on a failure, headers is its message
      assert.is_string(headers) -- the block of header lines, as received
      assert.matches("\n$", headers)
      assert.truthy(body:find("404001", 1, true))
    end
    local stats = e:stats()
    assert.equal(3, stats.requests - 1) -- the cancelled one counts too
    assert.equal(4, stats.free)
    assert.equal(0, stats.running)
    e:close()
  end)

  it("run() blocks until a transfer finishes, reuses kept connections", function()
    local e = engine(2)
    for round = 1, 3 do
      local a = e:request("GET", emu.endpoint .. "/a")
      local b = e:request("POST", emu.endpoint .. "/b", { ["content-type"] = "application/json" }, "{}")
      local got = {}
      while #got < 2 do
        for _, id in ipairs(e:run(5)) do got[#got + 1] = id end
      end
      table.sort(got)
      assert.same({ math.min(a, b), math.max(a, b) }, got, "round " .. round)
      assert.equal(404, (e:take(a)))
      assert.equal(404, (e:take(b)))
    end
    local stats = e:stats()
    assert.equal(6, stats.requests)
    assert.is_true(stats.connects <= 2, "connects: " .. stats.connects)
    e:close()
  end)

  it("run(timeout) returns when the time is up, with nothing finished", function()
    local e = engine(1)
    -- nothing in flight: at once, not at the end of its timeout (twenty
    -- times the waiting a busy machine may add to a call that never waits)
    local limit = timing.margin(0.05)
    local waited, done = timing.waited(e.run, e, 20 * limit)
    assert.same({}, done)
    assert.is_true(waited < limit, "waited " .. waited .. " s, limit " .. limit .. " s")
    e:close()
  end)

  it("fails a transfer with the session's kinds, others unharmed", function()
    local e = engine(2)
    local bad = e:request("GET", "https://127.0.0.1:1/")
    local good = e:request("GET", emu.endpoint .. "/x")
    local got = {}
    while #got < 2 do
      for _, id in ipairs(e:run(5)) do got[#got + 1] = id end
    end
    local ok, message, info = e:take(bad)
    assert.is_nil(ok)
    assert.equal("connect", info.kind)
    assert.truthy(message:find("CURLE_COULDNT_CONNECT", 1, true))
    assert.equal(404, (e:take(good)))
    -- the expired certificate of the second listener: a TLS failure
    local tls = e:request("GET", emu.expired_endpoint .. "/x")
    while #e:run(5) == 0 do end
    ok, message, info = e:take(tls)
    assert.is_nil(ok)
    assert.equal("tls", info.kind, message)
    e:close()
  end)

  it("raises on misuse", function()
    local e = engine(1)
    assert.has_error(function() core.engine({ timout = 1 }) end,
      "bad argument #1 to 'engine' (unknown option 'timout')")
    assert.has_error(function() core.engine({}, 0) end)
    assert.has_error(function() core.engine({}, 1025) end)
    assert.has_error(function() e:request("PATCH", emu.endpoint) end)
    assert.has_error(function() e:request("GET", emu.endpoint, nil, "body") end)
    assert.has_error(function() e:take(1) end)   -- no such transfer
    local id = e:request("GET", emu.endpoint .. "/x")
    assert.has_error(function() e:request("GET", emu.endpoint .. "/y") end) -- no free slot
    assert.has_error(function() e:take(id) end)  -- still running
    assert.has_error(function() e:take(2) end)
    assert.is_true(e:cancel(id))
    assert.equal(1, e:stats().free)
    e:close()
    assert.is_true(e:close())
    assert.has_error(function() e:step() end)
    assert.truthy(tostring(e):find("closed", 1, true))
  end)

  it("a file's range as the body: a descriptor of the transfer's own, closed when it ends, is cancelled or "
    .. "the engine closes", function()
    local path = os.tmpname()
    local f = assert(io.open(path, "wb"))
    f:write(("r"):rep(65536))
    f:close()
    f = assert(io.open(path, "rb"))
    -- this process's descriptors of the file, counted by a shell
    local pid = assert(io.open("/proc/self/stat")):read("*l"):match("^%d+")
    local function open_on_file()
      local p = io.popen("ls -l /proc/" .. pid .. "/fd")
      local n = 0
      for line in p:lines() do
        if line:sub(-#path - 4) == " -> " .. path then n = n + 1 end
      end
      p:close()
      return n
    end
    assert.equal(1, open_on_file()) -- the Lua file's
    local e = engine(3)
    local body = { file = f, offset = 0, length = 65536 }
    local ids = {}
    for i = 1, 3 do ids[i] = e:request("PUT", emu.endpoint .. "/f/" .. i, nil, body) end
    assert.equal(4, open_on_file())
    e:cancel(ids[1])
    assert.equal(3, open_on_file())
    local done = {}
    while #done < 2 do
      for _, id in ipairs(e:run(5)) do done[#done + 1] = id end
    end
    assert.equal(1, open_on_file()) -- ended: closed before the result is taken
    assert.equal(404, (e:take(ids[2])))
    assert.equal(404, (e:take(ids[3])))
    e:request("POST", emu.endpoint .. "/g", nil, body) -- in flight when the engine closes
    assert.equal(2, open_on_file())
    e:close()
    assert.equal(1, open_on_file())
    f:close()
    assert.equal(0, open_on_file())
    os.remove(path)
  end)

  it("closes mid-flight: transfers dropped, slots, connections and buffers freed", function()
    local e = engine(8)
    for i = 1, 8 do
      e:request("POST", emu.endpoint .. "/p/" .. i, { ["content-type"] = "application/json" }, ("x"):rep(1000))
    end
    e:step()
    e:step()
    assert.is_true(e:close())
    assert.is_true(e:close())
    collectgarbage()
    collectgarbage()
    -- a fresh engine still works after the other was torn down mid-flight
    local f = engine(1)
    f:request("GET", emu.endpoint .. "/after")
    while #f:run(5) == 0 do end
    assert.equal(404, (f:take(1)))
    f = nil -- luacheck: ignore
    collectgarbage() -- __gc of an open engine with a finished transfer
  end)

  -- (src/dps_http_options.c, default_bundle_alone)
  it("without ca_file or ca_path, reads libcurl's default CA bundle once per engine, not once per connection",
    function()
      local v = core.version()
      local major, minor = v.curl:match("^(%d+)%.(%d+)")
      local bundle = shell.run("curl-config --ca 2>/dev/null"):match("^(%S+)")
      if not v.ssl:match("^OpenSSL/") or tonumber(major) * 100 + tonumber(minor) < 787 then
        pending("libcurl keeps a CA store between connections on OpenSSL from 7.87.0: here " .. v.curl
          .. " on " .. v.ssl)
        return
      elseif not bundle or not shell.read(bundle) or not shell.succeeds("strace -o /dev/null true 2>/dev/null") then
        pending("needs curl-config naming a readable default bundle, and strace")
        return
      end
      local dir = shell.tmpdir()
      local lua, cpath = shell.plain()
      -- four connections, one after the other: each handshake fails (the
      -- emulator's CA is not among the system's roots), so none is kept
      local script = shell.write(dir .. "/connect.lua", string.format([[
        package.path, package.cpath = %q, %q
        local e = require("dps.core").engine({ timeout = %g }, 1)
        for _ = 1, 4 do
          local id = e:request("GET", %q)
          while #e:run(1) == 0 do end
          assert(select(3, e:take(id)).kind == "tls")
        end]], package.path, cpath, timeout, emu.endpoint .. "/x"))
      local trace = dir .. "/trace"
      assert.is_true(shell.succeeds(string.format("strace -f -o %s -e trace=open,openat %s %s",
        shell.quote(trace), shell.quote(lua), shell.quote(script))))
      local opened = select(2, shell.read(trace):gsub('"' .. bundle:gsub("%p", "%%%0") .. '"', ""))
      shell.succeeds("rm -rf " .. shell.quote(dir))
      assert.are.equal(1, opened)
    end)
end)
