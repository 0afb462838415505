-- Lifecycle of dps.session sessions (one-slot dps.core engines): closing, use after close, garbage
-- collection while other sessions work, many create/close/collect cycles,
-- pcall and coroutines, and `local s <close>` on Lua 5.4.  Every request goes
-- to a real local HTTPS server (`openssl s_server -WWW`, which serves files
-- from a directory and closes after each HTTP/1.0 reply) with a throwaway CA.
-- Run under valgrind by spec/suite.sh, so C-side leaks show there.
--
-- Must parse on Lua 5.1: the <close> chunk is loaded with load() on 5.4 only.

local dps_session = require "dps.session"
local tls = require "spec.support.tls_server"
local timing = require "spec.support.timing"

local BODY = "hello from s_server -WWW\n"

describe("dps.session lifecycle", function()
  local dir, certs, pid, port
  -- The sessions' timeouts (connecting included): no request here should
  -- take them, they only stop a spec that would wait for ever; 5 s on an
  -- idle machine at native speed, times the measured slowness (valgrind
  -- slows the TLS handshake down, other processes take the CPUs).
  local timeout

  local function url(path) return "https://localhost:" .. port .. (path or "/hello.txt") end

  local function session(opts)
    opts = opts or {}
    opts.ca_file = certs.ca
    opts.timeout = opts.timeout or timeout
    opts.connect_timeout = opts.connect_timeout or timeout
    return dps_session.new(opts)
  end

  -- One request that must succeed with the served file.
  local function fetch(s)
    local status, headers, body = s:request("GET", url())
    assert.equal(200, status, tostring(headers))
    assert.equal(BODY, body)
    return headers
  end

  local function collect()
    for _ = 1, 4 do collectgarbage("collect") end
  end

  local function closed(s)
    return tostring(s) == "dps.Session (closed)"
  end

  setup(function()
    dir = tls.tmpdir("dps-lifecycle-spec")
    certs = tls.make_certs(dir)
    assert(tls.run("mkdir " .. tls.quote(dir .. "/www")))
    tls.write_file(dir .. "/www/hello.txt", BODY)
    pid, port = tls.s_server(dir, "www", certs, "-WWW", dir .. "/www")
    timeout = timing.margin(5)
  end)

  teardown(function()
    tls.stop(pid)
    tls.remove_dir(dir)
  end)

  describe("close", function()
    it("can be called twice, before or after use, and by __gc afterwards", function()
      local unused = session()
      assert.is_true(unused:close())
      assert.is_true(unused:close())

      local used = session()
      fetch(used)
      assert.is_true(used:close())
      assert.is_true(used:close())
      assert.is_true(closed(used))
      assert.is_true(getmetatable(used).__gc(used))
      assert.is_true(used:close())
    end)

    it("can follow a failed request", function()
      -- without the spec CA: verification fails
      local s = dps_session.new{ timeout = timeout, connect_timeout = timeout }
      local status, message, info = s:request("GET", url())
      assert.is_nil(status)
      assert.is_string(message)
      assert.equal("tls", info.kind, message)
      assert.is_true(s:close())
      assert.is_true(s:close())
    end)

    it("raises a clear error on any use after close, and stays closed", function()
      local s = session()
      fetch(s)
      s:close()
      for _ = 1, 2 do
        for _, use in ipairs{ function() return s:request("GET", url()) end,
                              function() return s:stats() end,
                              function() return s.request(s, "POST", url(), nil, "x") end } do
          local ok, err = pcall(use)
          assert.is_false(ok)
          assert.is_string(err)
          -- "calling 'request' on bad self (session is closed)" for a method
          -- call, "bad argument #1 to … (session is closed)" otherwise
          assert.matches("%(session is closed%)$", err)
          assert.truthy(err:find(" on bad self ", 1, true) or err:find("bad argument #1 to ", 1, true), err)
        end
      end
      assert.is_true(closed(s))
      assert.is_true(s:close())
    end)
  end)

  describe("garbage collection", function()
    it("collects dropped sessions while other sessions are in use", function()
      local a, b = session(), session()
      local weak = setmetatable({}, { __mode = "k" })
      for i = 1, 30 do
        local tmp = session()
        weak[tmp] = true
        if i % 5 == 0 then fetch(tmp) end
        if i % 3 == 0 then tmp:close() end
        tmp = nil -- luacheck: ignore 311 (the point is dropping it)
        collectgarbage("collect")
        if i % 10 == 0 then
          fetch(a)
          collect()
          fetch(b)
        end
      end
      collect()
      assert.is_nil(next(weak))
      fetch(a)
      fetch(b)
      assert.same({ requests = 4, connects = 4 }, a:stats())
      a:close()
      b:close()
    end)

    it("keeps a response after its session has been collected", function()
      local weak = setmetatable({}, { __mode = "v" })
      local status, headers, body
      do
        local s = session()
        weak[1] = s
        status, headers, body = s:request("GET", url())
      end
      collect()
      assert.is_nil(weak[1])
      assert.equal(200, status)
      assert.equal("text/plain", headers["content-type"])
      assert.equal(BODY, body)
    end)

    it("survives 200 create/close/collect cycles", function()
      local weak = setmetatable({}, { __mode = "k" })
      local made = 0
      for i = 1, 200 do
        local s = session{ user_agent = "cycle/" .. i }
        weak[s] = true
        made = made + 1
        if i % 20 == 0 then fetch(s) end
        if i % 2 == 0 then assert.is_true(s:close()) end
        if i % 10 == 0 then collectgarbage("collect") end
      end
      collect()
      assert.equal(200, made)
      assert.is_nil(next(weak))
    end)
  end)

  describe("pcall and coroutines", function()
    it("works inside pcall, and an error raised there leaves the session usable", function()
      local s = session()
      local ok, status, _, body = pcall(s.request, s, "GET", url())
      assert.is_true(ok)
      assert.equal(200, status)
      assert.equal(BODY, body)
      ok = pcall(s.request, s, "PATCH", url())
      assert.is_false(ok)
      ok = pcall(s.request, s, "GET", url(), { ["bad name"] = "x" })
      assert.is_false(ok)
      fetch(s)
      assert.same({ requests = 2, connects = 2 }, s:stats())
      s:close()
    end)

    it("collects a session made in a pcall that raised", function()
      local weak = setmetatable({}, { __mode = "k" })
      local ok, err = pcall(function()
        local s = session()
        weak[s] = true
        fetch(s)
        error("boom", 0)
      end)
      assert.is_false(ok)
      assert.equal("boom", err)
      collect()
      assert.is_nil(next(weak))
    end)

    it("makes requests from a coroutine, interleaved with the main thread", function()
      local s = session()
      local co = coroutine.create(function(session_in)
        local status, _, body = session_in:request("GET", url())
        local again = coroutine.yield(status, body)
        assert(again == "again")
        status, _, body = session_in:request("GET", url())
        return status, body
      end)
      local ok, status, body = coroutine.resume(co, s)
      assert.is_true(ok, tostring(status))
      assert.equal(200, status)
      assert.equal(BODY, body)
      fetch(s) -- the main thread uses it between the coroutine's requests
      ok, status, body = coroutine.resume(co, "again")
      assert.is_true(ok, tostring(status))
      assert.equal(200, status)
      assert.equal(BODY, body)
      assert.equal("dead", coroutine.status(co))
      assert.same({ requests = 3, connects = 3 }, s:stats())
      s:close()
    end)

    it("hands a session made in a coroutine to the main thread", function()
      local co = coroutine.wrap(function()
        local s = session()
        fetch(s)
        coroutine.yield(s)
        return "done"
      end)
      local s = co()
      fetch(s)
      assert.equal("done", co())
      assert.same({ requests = 2, connects = 2 }, s:stats())
      s:close()
    end)

    it("collects the session of an abandoned coroutine", function()
      local weak = setmetatable({}, { __mode = "k" })
      local co = coroutine.create(function()
        local s = session()
        weak[s] = true
        fetch(s)
        coroutine.yield()
        fetch(s) -- never reached
      end)
      assert.is_true(coroutine.resume(co))
      assert.equal("suspended", coroutine.status(co))
      co = nil -- luacheck: ignore 311 (abandoned while suspended)
      collect()
      assert.is_nil(next(weak))
    end)

    it("collects the session of a coroutine that died with an error", function()
      local weak = setmetatable({}, { __mode = "k" })
      local co = coroutine.create(function()
        local s = session()
        weak[s] = true
        fetch(s)
        s:request("PATCH", url()) -- raises: unknown method
      end)
      local ok, err = coroutine.resume(co)
      assert.is_false(ok)
      assert.matches("invalid option 'PATCH'", err)
      assert.equal("dead", coroutine.status(co))
      co = nil -- luacheck: ignore 311
      collect()
      assert.is_nil(next(weak))
    end)
  end)

  if _VERSION == "Lua 5.4" then
    describe("to-be-closed variables (5.4)", function()
      it("closes a <close> session when its block ends, normally or by an error", function()
        local chunk = assert(load([[
          local session, fetch = ...
          local outer, inner
          do
            local s <close> = session()
            fetch(s)
            outer = s
            assert(tostring(s):match("^dps%.Session: 0x"))
          end
          local ok, err = pcall(function()
            local t <close> = session()
            inner = t
            fetch(t)
            error("inside the block", 0)
          end)
          return outer, inner, ok, err
        ]]))
        local outer, inner, ok, err = chunk(session, fetch)
        assert.is_false(ok)
        assert.equal("inside the block", err)
        for _, s in ipairs{ outer, inner } do
          assert.is_true(closed(s))
          assert.is_true(s:close())
          assert.error_matches(function() s:request("GET", url()) end, "session is closed")
        end
      end)
    end)
  end
end)
