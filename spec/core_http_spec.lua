-- Specs for the HTTPS session (dps.session: a one-slot dps.core engine) and
-- the C transfer code under it.
--
-- Everything runs against real local TLS servers started here: `openssl
-- s_server` (a third-party HTTP/1.0 server that closes after each reply) and
-- a small HTTP/1.1 keep-alive server in Lua (spec/support/https_server.lua:
-- cqueues + luaossl, run by whichever interpreter has them), plus an HTTP
-- CONNECT proxy of the same kind.  The CA, server and client certificates are made in a temporary
-- directory with the openssl CLI.  No network beyond 127.0.0.1 is used.
--
-- Must parse on Lua 5.1, 5.3, 5.4 and LuaJIT: no goto, no <close> (loaded
-- with load() on 5.4 only), no integer division or bit operators.

local core = require "dps.core"
local dps_session = require "dps.session"
local tls = require "spec.support.tls_server"

local read_file, now = tls.read_file, tls.now

local function failure(status, message, info)
  assert.is_nil(status)
  assert.is_string(message)
  assert.is_table(info)
  return message, info
end

-- Misuse of the session's options (core.engine's): each row's options raise with a message matching
-- its pattern (and never echo a secret).
local BAD_OPTIONS = {
  { "an unknown option, naming it", { timout = 5 }, "bad argument #1 to '[%w.]*engine' %(unknown option 'timout'%)" },
  { "an option the session never has", { verify = false }, "unknown option 'verify'" },
  { "an insecure switch", { insecure = true }, "unknown option 'insecure'" },
  { "a name that is not a string", { [1] = "x" }, "option names must be strings" },
  { "a name with NUL", { ["timeout\0x"] = 1 }, "unknown option 'timeout'" },
  { "options that are a string", "timeout=5", "table expected" },
  { "options that are a number", 5, "table expected" },
  { "a string timeout", { timeout = "5" }, "option 'timeout' must be a number, got string" },
  { "a boolean connect_timeout", { connect_timeout = true }, "option 'connect_timeout' must be a number, got boolean" },
  { "a table max_body", { max_body = {} }, "option 'max_body' must be a number" },
  { "a ca_file with NUL", { ca_file = "ca\0.pem" }, "option 'ca_file' must not contain NUL bytes" },
  { "a user_agent with NUL", { user_agent = "ua\0" }, "option 'user_agent' must not contain NUL bytes" },
  { "an empty proxy", { proxy = "" }, "option 'proxy' must not be empty" },
  { "cert with cert_file", { cert = "x", cert_file = "y" }, "exclude each other" },
  { "key with key_file", { cert = "x", key = "k", key_file = "y" }, "exclude each other" },
  { "a key_file without a certificate", { key_file = "k.pem" }, "need 'cert' or 'cert_file'" },
  { "a key_password without a certificate", { key_password = "hunter2-secret" }, "need 'cert' or 'cert_file'" },
  { "a socks proxy", { proxy = "socks5://127.0.0.1:1080" }, "must be an http:// URL" },
  { "a proxy without a host", { proxy = "http://" }, "must be an http:// URL" },
}
for _, name in ipairs{ "ca_file", "ca_path", "proxy", "user_agent", "cert_file", "key_file", "key_password",
                       "cert", "key" } do
  BAD_OPTIONS[#BAD_OPTIONS + 1] = { "a number as " .. name, { [name] = 1 },
                                    "option '" .. name .. "' must be a string, got number" }
end
for _, name in ipairs{ "timeout", "connect_timeout", "max_body" } do
  for _, v in ipairs{ 0, -1, -0.5, 0 / 0 } do
    BAD_OPTIONS[#BAD_OPTIONS + 1] = { name .. " = " .. tostring(v), { [name] = v },
                                      "option '" .. name .. "' must be greater than 0" }
  end
end

-- Misuse of Session:request: each row's arguments (method, url, headers,
-- body, timeout) raise with a message matching its pattern.
local URL = "https://127.0.0.1:1/"
-- what a body that is not a string must be
local RANGE = "body must be a string or { file = an open file, offset = n, length = n < 2%^31 } "
  .. "%(whole numbers of bytes%)"
local BAD_REQUESTS = {
  { "an unknown method", { "PATCH", URL }, "invalid option 'PATCH'" },
  { "a lower-case method", { "get", URL }, "invalid option 'get'" },
  { "no method", { nil, URL }, "string expected, got nil" },
  { "no URL", { "GET" }, "string expected, got no value" },
  { "a table as URL", { "GET", {} }, "string expected, got table" },
  { "an empty URL", { "GET", "" }, "URL must not be empty" },
  { "headers that are a string", { "GET", URL, "x: y" }, "table expected" },
  { "a header name that is not a string", { "GET", URL, { [1] = "x" } }, "header names must be strings" },
  { "an empty header name", { "GET", URL, { [""] = "x" } }, "must not be empty" },
  { "a header value that is a number", { "GET", URL, { ["x-n"] = 5 } }, "header 'x%-n' must be a string, got number" },
  { "a number as body", { "POST", URL, nil, 42 }, RANGE .. ", got number" },
  { "a table without a file as body", { "PUT", URL, nil, {} }, RANGE .. "%)$" },
  { "a path as a body's file", { "PUT", URL, nil, { file = "/etc/hostname", offset = 0, length = 1 } },
    RANGE .. "%)$" },
  { "a body on GET", { "GET", URL, nil, "x" }, "a GET request has no body" },
  { "a file's range on DELETE", { "DELETE", URL, nil, { file = io.stdin, offset = 0, length = 0 } },
    "a DELETE request has no body" },
  { "a zero timeout", { "GET", URL, nil, nil, 0 }, "timeout must be greater than 0" },
  { "a negative timeout", { "GET", URL, nil, nil, -2 }, "timeout must be greater than 0" },
  { "a string timeout", { "GET", URL, nil, nil, "1" }, "timeout must be a number" },
}
-- a file's range that is not one
local CLOSED = io.tmpfile()
CLOSED:close()
for _, row in ipairs{
  { "a closed file", { file = CLOSED, offset = 0, length = 1 }, RANGE .. "%)$" },
  { "a range without an offset", { file = io.stdin, length = 1 }, RANGE .. "%)$" },
  { "a fractional offset", { file = io.stdin, offset = 0.5, length = 1 }, RANGE .. "%)$" },
  { "a negative length", { file = io.stdin, offset = 0, length = -1 }, RANGE .. "%)$" },
  { "a length as a string", { file = io.stdin, offset = 0, length = "1" }, RANGE .. "%)$" },
  { "a NaN length", { file = io.stdin, offset = 0, length = 0 / 0 }, RANGE .. "%)$" },
  { "a length of 2^31", { file = io.stdin, offset = 0, length = 2 ^ 31 }, RANGE .. "%)$" },
  { "an offset past 2^62", { file = io.stdin, offset = 2 ^ 63, length = 1 }, RANGE .. "%)$" },
} do
  BAD_REQUESTS[#BAD_REQUESTS + 1] = { row[1] .. " as body", { "PUT", URL, nil, row[2] }, row[3] }
end
for _, u in ipairs{ "https://a\0b/", "https://a/ b", "https://a/\r\nX-Injected: 1", "https://a/\t" } do
  BAD_REQUESTS[#BAD_REQUESTS + 1] = { ("URL %q"):format(u), { "GET", u },
                                      "URL must not contain spaces or control characters" }
end
for _, name in ipairs{ "x y", "x:y", "x\r\ny", "x\0", "x\n", "é" } do
  BAD_REQUESTS[#BAD_REQUESTS + 1] = { ("header name %q"):format(name), { "GET", URL, { [name] = "v" } },
                                      "header names must be tokens" }
end
for _, value in ipairs{ "a\rb", "a\nb", "a\0b", "a\r\nX-Injected: 1" } do
  BAD_REQUESTS[#BAD_REQUESTS + 1] = { ("header value %q"):format(value), { "GET", URL, { ["x-v"] = value } },
                                      "header 'x%-v' must not contain CR, LF or NUL" }
end
for _, name in ipairs{ "Content-Length", "transfer-encoding", "EXPECT" } do
  BAD_REQUESTS[#BAD_REQUESTS + 1] = { "the session's own header " .. name, { "POST", URL, { [name] = "1" }, "x" },
                                      "is set by the session" }
end

describe("dps.session", function()
  describe("options", function()
    it("creates a session with no options, an empty table, or fractions", function()
      local a, b = dps_session.new(), dps_session.new{}
      local c = dps_session.new{ connect_timeout = 0.25, timeout = 1.5, max_body = 10.5,
                              user_agent = "x/1", ca_path = "/nonexistent" }
      for _, s in ipairs{ a, b, c } do
        assert.equal("table", type(s))
        assert.is_true(s:close())
      end
    end)

    for _, row in ipairs(BAD_OPTIONS) do
      it("raises on " .. row[1], function()
        local ok, err = pcall(function() local s = dps_session.new(row[2]); return s end)
        assert.is_false(ok)
        assert.matches(row[3], err)
        assert.is_nil(tostring(err):find("hunter2", 1, true)) -- never a key password
      end)
    end
  end)

  describe("request arguments", function()
    local s
    before_each(function() s = dps_session.new() end)
    after_each(function() s:close() end)

    -- a row's arguments up to the last one given, holes included
    local unpack = rawget(table, "unpack") or rawget(_G, "unpack")
    local function arguments(a)
      local n = 0
      for i in pairs(a) do n = math.max(n, i) end
      return unpack(a, 1, n)
    end

    for _, row in ipairs(BAD_REQUESTS) do
      it("raises on " .. row[1], function()
        assert.error_matches(function() s:request(arguments(row[2])) end, row[3])
      end)
    end

    it("never echoes a header value in an error", function()
      local ok, err = pcall(s.request, s, "GET", URL,
                            { Authorization = "SharedAccessSignature sr=x&sig=TOPSECRET\r\n" })
      assert.is_false(ok)
      assert.is_nil(tostring(err):find("TOPSECRET", 1, true))
    end)

    it("does not count rejected calls as requests", function()
      pcall(s.request, s, "PATCH", URL)
      assert.same({ requests = 0, connects = 0 }, s:stats())
    end)
  end)

  describe("lifecycle", function()
    it("has __name and __tostring", function()
      local s = dps_session.new()
      assert.equal("dps.Session", getmetatable(s).__name)
      assert.matches("^dps%.Session: 0x%x+$", tostring(s))
      s:close()
      assert.equal("dps.Session (closed)", tostring(s))
    end)

    it("closes idempotently", function()
      local s = dps_session.new()
      assert.is_true(s:close())
      assert.is_true(s:close())
      assert.is_true(getmetatable(s).__gc(s))
    end)

    it("raises on use after close", function()
      local s = dps_session.new()
      s:close()
      assert.error_matches(function() s:request("GET", "https://127.0.0.1:1/") end, "session is closed")
      assert.error_matches(function() s:stats() end, "session is closed")
    end)

    it("rejects other values as self", function()
      local request = getmetatable(dps_session.new()).__index.request
      assert.error_matches(function() request({}, "GET", "https://x/") end, "dps.Session expected")
    end)

    it("is collected without leaking or crashing", function()
      local weak = setmetatable({}, { __mode = "k" })
      for i = 1, 200 do
        local s = dps_session.new{ timeout = i }
        weak[s] = true
        if i % 2 == 0 then s:close() end
      end
      collectgarbage()
      collectgarbage()
      assert.is_nil(next(weak))
    end)

    if _VERSION == "Lua 5.4" then
      it("closes as a to-be-closed variable (5.4)", function()
        local chunk = assert(load([[
          local dps_session = ...
          local kept
          do
            local s <close> = dps_session.new()
            kept = s
            assert(tostring(s):match("^dps%.Session: "))
          end
          return kept
        ]]))
        local kept = chunk(dps_session)
        assert.equal("dps.Session (closed)", tostring(kept))
        assert.is_true(kept:close())
      end)
    end
  end)

  describe("over TLS to local servers", function()
    local dir, ca
    local pids = {}
    local https_port, silent_port, reset_port, eof_port, www_port, mtls_port
    local tunnel_port, deny_port, proxy_log
    local client_cert, client_key, client_key_enc
    local KEY_PASSWORD = "correct horse battery"

    local function url(path) return "https://localhost:" .. https_port .. path end

    local function session(opts)
      opts = opts or {}
      if opts.ca_file == nil then opts.ca_file = ca end
      if opts.ca_file == false then opts.ca_file = nil end
      return dps_session.new(opts)
    end

    setup(function()
      dir = tls.tmpdir("dps-http-spec")
      local certs = tls.make_certs(dir, KEY_PASSWORD)
      ca = certs.ca
      client_cert, client_key, client_key_enc = certs.client, certs.client_key, certs.client_key_enc

      local ports
      pids[#pids + 1], ports = tls.https_server(dir, certs)
      https_port, silent_port, reset_port, eof_port = ports.https, ports.silent, ports.reset, ports.eof
      proxy_log = dir .. "/proxy-requests.log"
      pids[#pids + 1], tunnel_port = tls.connect_proxy(dir, https_port, "tunnel", proxy_log)
      pids[#pids + 1], deny_port = tls.connect_proxy(dir, https_port, "deny", proxy_log)

      pids[#pids + 1], www_port = tls.s_server(dir, "www", certs, "-www")
      pids[#pids + 1], mtls_port = tls.s_server(dir, "mtls", certs, "-www -Verify 1 -CAfile " .. tls.quote(ca))
    end)

    teardown(function()
      for _, pid in ipairs(pids) do tls.stop(pid) end
      tls.remove_dir(dir)
    end)

    describe("responses", function()
      it("GETs from openssl s_server: status, lower-cased headers, body", function()
        local s = session()
        finally(function() s:close() end)
        local status, headers, body = s:request("GET", "https://localhost:" .. www_port .. "/")
        assert.equal(200, status)
        assert.equal("text/html", headers["content-type"]) -- sent as "Content-type"
        assert.is_nil(headers["Content-type"])
        assert.matches("s_server", body)
        assert.matches("New, TLSv1%.[23], Cipher is ", body)
      end)

      it("reconnects by itself after the server closed the connection", function()
        local s = session()
        finally(function() s:close() end)
        -- s_server -www answers HTTP/1.0 and closes after each response.
        for _ = 1, 2 do
          assert.equal(200, (s:request("GET", "https://localhost:" .. www_port .. "/")))
        end
        -- The keep-alive server says nothing, then closes.
        assert.equal(200, (s:request("GET", url("/close"))))
        assert.equal(200, (s:request("GET", url("/close"))))
        assert.same({ requests = 4, connects = 4 }, s:stats())
      end)

      it("retries on a fresh connection when a kept one dies under a request", function()
        local s = session()
        finally(function() s:close() end)
        local status, _, body = s:request("GET", url("/flaky"))
        assert.equal(200, status)
        assert.equal("fresh", body)
        -- The server drops the second request on the kept connection.
        status, _, body = s:request("GET", url("/flaky"))
        assert.equal(200, status)
        assert.equal("fresh", body)
        assert.same({ requests = 2, connects = 2 }, s:stats())
      end)

      it("keeps one connection alive across requests", function()
        local s = session()
        finally(function() s:close() end)
        assert.equal(200, (s:request("GET", url("/hello"))))
        assert.equal(200, (s:request("PUT", url("/echo"), nil, "a")))
        assert.equal(200, (s:request("POST", url("/echo"), nil, "b")))
        assert.equal(418, (s:request("GET", url("/teapot"))))
        assert.same({ requests = 4, connects = 1 }, s:stats())
      end)

      it("lower-cases header names, joins repeats, unfolds folded lines", function()
        local s = session()
        finally(function() s:close() end)
        local status, headers, body = s:request("GET", url("/hello"))
        assert.equal(200, status)
        assert.equal("hello\n", body)
        assert.equal("a, b", headers["x-multi"])
        assert.equal("Yes", headers["x-mixed-case"])
        assert.equal("one two", headers["x-folded"])
        assert.equal("text/plain", headers["content-type"])
        assert.equal("6", headers["content-length"])
        for name in pairs(headers) do
          assert.equal(name:lower(), name)
        end
      end)

      it("returns 4xx statuses as responses", function()
        local s = session()
        finally(function() s:close() end)
        local status, headers, body = s:request("GET", url("/teapot"))
        assert.equal(418, status)
        assert.equal("15", headers["content-length"])
        assert.equal("short and stout", body)
        status = s:request("GET", url("/no-such-route"))
        assert.equal(404, status)
      end)

      it("keeps only the headers of the final response after a 1xx", function()
        local s = session()
        finally(function() s:close() end)
        local status, headers, body = s:request("GET", url("/early"))
        assert.equal(200, status)
        assert.equal("ok", body)
        assert.equal("1", headers["x-final"])
        assert.is_nil(headers["x-early"])
        assert.is_nil(headers["link"])
      end)
    end)

    describe("requests", function()
      local function parse(raw)
        local head, body = raw:match("^(.-)\r\n\r\n(.*)$")
        local lines = {}
        for line in (head .. "\r\n"):gmatch("(.-)\r\n") do lines[#lines + 1] = line end
        return lines, body
      end

      local function has_line(lines, pattern)
        for _, l in ipairs(lines) do
          if l:match(pattern) then return true end
        end
        return false
      end

      it("sends a binary body with its exact length, no Expect, no default type", function()
        local s = session()
        finally(function() s:close() end)
        local payload = "a\0b\r\n\0\255" .. string.rep("z", 3000)
        local status, _, raw = s:request("PUT", url("/echo"), { ["X-Custom"] = "42" }, payload)
        assert.equal(200, status)
        local lines, body = parse(raw)
        assert.equal("PUT /echo HTTP/1.1", lines[1])
        assert.equal(payload, body)
        assert.is_true(has_line(lines, "^Content%-Length: " .. #payload .. "$"))
        assert.is_true(has_line(lines, "^X%-Custom: 42$"))
        assert.is_false(has_line(lines, "^[Ee]xpect:"))
        assert.is_false(has_line(lines, "^[Cc]ontent%-[Tt]ype:"))
        assert.is_true(has_line(lines, "^User%-Agent: lua%-azure%-dps/%d"))
      end)

      it("never waits for 100-continue, even with a large body", function()
        local s = session{ max_body = 4 * 1048576 }
        finally(function() s:close() end)
        local payload = string.rep("0123456789abcdef", 131072) .. "!" -- 2 MiB + 1: libcurl would send Expect
        local status, _, raw = s:request("POST", url("/echo"), nil, payload)
        assert.equal(200, status)
        -- the server saw no Expect header, so nothing could wait for 100-continue
        local lines, body = parse(raw)
        assert.is_false(has_line(lines, "^[Ee]xpect:"))
        assert.equal(#payload, #body)
        assert.is_true(body == payload)
      end)

      it("sends the caller's content type, empty values and user agent", function()
        local s = session{ user_agent = "spec-agent/1.0" }
        finally(function() s:close() end)
        local _, _, raw = s:request("POST", url("/echo"),
                                    { ["Content-Type"] = "application/json", ["X-Empty"] = "" }, "{}")
        local lines, body = parse(raw)
        assert.equal("POST /echo HTTP/1.1", lines[1])
        assert.equal("{}", body)
        assert.is_true(has_line(lines, "^Content%-Type: application/json$"))
        assert.is_true(has_line(lines, "^X%-Empty:%s*$"))
        assert.is_true(has_line(lines, "^User%-Agent: spec%-agent/1%.0$"))
      end)

      -- bytes 0-255 over and over, n of them, in a file of the spec's folder
      local function file_of(name, n)
        local parts = {}
        for i = 1, n do parts[i] = string.char((i - 1) % 256) end
        local data = table.concat(parts)
        tls.write_file(dir .. "/" .. name, data)
        return dir .. "/" .. name, data
      end

      it("sends a file's range as the body: its exact bytes and length, the file's own position untouched",
         function()
        local path, data = file_of("range.bin", 300000)
        local f = assert(io.open(path, "rb"))
        finally(function() f:close() end)
        assert.equal("\0\1", f:read(2)) -- the Lua file's position: 2
        local s = session()
        finally(function() s:close() end)
        for _, case in ipairs{ { "PUT", 1000, 250000 }, { "POST", 0, 300000 }, { "PUT", 299999, 1 } } do
          local status, _, raw = s:request(case[1], url("/echo"), { ["Content-Type"] = "application/octet-stream" },
                                           { file = f, offset = case[2], length = case[3] })
          assert.equal(200, status)
          local lines, body = parse(raw)
          assert.equal(case[1] .. " /echo HTTP/1.1", lines[1])
          assert.is_true(has_line(lines, "^Content%-Length: " .. case[3] .. "$"))
          assert.is_false(has_line(lines, "^[Ee]xpect:"))
          assert.is_false(has_line(lines, "^Transfer%-Encoding:"))
          assert.equal(case[3], #body)
          assert.is_true(body == data:sub(case[2] + 1, case[2] + case[3]))
        end
        assert.equal(2, f:seek())
        assert.equal("\2\3", f:read(2))
        -- an empty range, then a string body again on the same handle
        local _, _, raw = s:request("PUT", url("/echo"), nil, { file = f, offset = 0, length = 0 })
        local lines, body = parse(raw)
        assert.is_true(has_line(lines, "^Content%-Length: 0$"))
        assert.equal("", body)
        _, _, raw = s:request("POST", url("/echo"), nil, "after")
        lines, body = parse(raw)
        assert.equal("POST /echo HTTP/1.1", lines[1])
        assert.equal("after", body)
        assert.same({ requests = 5, connects = 1 }, s:stats())
      end)

      it("reads the range through a descriptor of its own: the file may be closed once the request started",
         function()
        local path, data = file_of("closed.bin", 70000)
        local f = assert(io.open(path, "rb"))
        local e = core.engine({ ca_file = ca }, 1)
        finally(function() e:close() end)
        local id = e:request("PUT", url("/echo"), nil, { file = f, offset = 5, length = 65536 })
        f:close()
        collectgarbage()
        local done = {}
        while #done == 0 do done = e:run(10) end
        local status, _, raw = e:take(id)
        assert.equal(200, status)
        local _, body = parse(raw)
        assert.is_true(body == data:sub(6, 5 + 65536))
      end)

      it("sends the range again on a fresh connection when a kept one dies under it", function()
        local path, data = file_of("again.bin", 200000)
        local f = assert(io.open(path, "rb"))
        finally(function() f:close() end)
        local s = session()
        finally(function() s:close() end)
        assert.equal(200, (s:request("GET", url("/flakyecho"))))
        -- the server reads this request on the kept connection, then drops it:
        -- libcurl rewinds the range (CURLOPT_SEEKFUNCTION) and sends it again
        local status, _, raw = s:request("PUT", url("/flakyecho"), nil, { file = f, offset = 100, length = 150000 })
        assert.equal(200, status)
        local _, body = parse(raw)
        assert.is_true(body == data:sub(101, 150100))
        assert.same({ requests = 2, connects = 2 }, s:stats())
      end)

      it("switches methods on one handle: POST, then GET, then an empty PUT", function()
        local s = session()
        finally(function() s:close() end)
        local _, _, raw = s:request("POST", url("/echo"), nil, "first")
        assert.equal("POST /echo HTTP/1.1", parse(raw)[1])
        _, _, raw = s:request("GET", url("/echo"))
        local lines, body = parse(raw)
        assert.equal("GET /echo HTTP/1.1", lines[1])
        assert.equal("", body)
        assert.is_false(has_line(lines, "^Content%-Length:"))
        _, _, raw = s:request("PUT", url("/echo"))
        lines, body = parse(raw)
        assert.equal("PUT /echo HTTP/1.1", lines[1])
        assert.is_true(has_line(lines, "^Content%-Length: 0$"))
        assert.equal("", body)
      end)
    end)

    describe("failures", function()
      it("fails with tls on a certificate from an unknown CA", function()
        local s = session{ ca_file = false }
        finally(function() s:close() end)
        local message, info = failure(s:request("GET", url("/hello")))
        assert.equal("tls", info.kind)
        assert.equal(60, info.curl_code)
        assert.matches("^TLS failed: .*%(CURLE_PEER_FAILED_VERIFICATION 60%)$", message)
      end)

      it("fails with tls on a host-name mismatch", function()
        local s = session()
        finally(function() s:close() end)
        local message, info = failure(s:request("GET", "https://127.0.0.1:" .. https_port .. "/hello"))
        assert.equal("tls", info.kind)
        assert.equal(60, info.curl_code)
        assert.matches("127%.0%.0%.1", message)
        -- the same server by its certified name works
        assert.equal(200, (s:request("GET", url("/hello"))))
      end)

      it("fails with tls on an unreadable ca_file", function()
        local s = session{ ca_file = dir .. "/missing-ca.pem" }
        finally(function() s:close() end)
        local _, info = failure(s:request("GET", url("/hello")))
        assert.equal("tls", info.kind)
        assert.equal(77, info.curl_code)
      end)

      it("fails with connect on a closed port", function()
        local s = session()
        finally(function() s:close() end)
        local message, info = failure(s:request("GET", "https://127.0.0.1:1/"))
        assert.equal("connect", info.kind)
        assert.equal(7, info.curl_code)
        assert.matches("%(CURLE_COULDNT_CONNECT 7%)$", message)
      end)

      it("fails with resolve on an unknown host", function()
        local s = session{ timeout = 10 }
        finally(function() s:close() end)
        local _, info = failure(s:request("GET", "https://no-such-host.invalid/"))
        assert.equal("resolve", info.kind)
        assert.equal(6, info.curl_code)
      end)

      it("fails with config on http:// and malformed URLs", function()
        local s = session()
        finally(function() s:close() end)
        local message, info = failure(s:request("GET", "http://localhost:" .. https_port .. "/hello"))
        assert.equal("config", info.kind)
        assert.equal(1, info.curl_code)
        assert.matches("CURLE_UNSUPPORTED_PROTOCOL 1", message)
        message, info = failure(s:request("GET", "ftp://localhost/x"))
        assert.equal("config", info.kind)
        assert.matches("^request rejected: ", message)
        message, info = failure(s:request("GET", "https://"))
        assert.equal("config", info.kind)
        assert.equal(3, info.curl_code)
        assert.matches("%(CURLE_URL_MALFORMAT 3%)$", message)
        assert.equal(0, s:stats().connects)
      end)

      it("fails with timeout when the server never answers", function()
        local s = session()
        finally(function() s:close() end)
        local t0 = now()
        local message, info = failure(s:request("GET", url("/mute"), nil, nil, 0.5))
        local elapsed = now() - t0
        assert.equal("timeout", info.kind)
        assert.equal(28, info.curl_code)
        assert.matches("^request timed out: ", message)
        assert.is_true(elapsed >= 0.45 and elapsed < 1.5, "took " .. elapsed .. " s")
      end)

      it("fails with timeout when the TLS handshake never completes", function()
        local s = session{ timeout = 0.5 }
        finally(function() s:close() end)
        local t0 = now()
        local _, info = failure(s:request("GET", "https://localhost:" .. silent_port .. "/"))
        local elapsed = now() - t0
        assert.equal("timeout", info.kind)
        assert.is_true(elapsed >= 0.45 and elapsed < 1.5, "took " .. elapsed .. " s")
      end)

      it("applies connect_timeout when it is shorter than the request timeout", function()
        local s = session{ connect_timeout = 0.3, timeout = 20 }
        finally(function() s:close() end)
        local t0 = now()
        local _, info = failure(s:request("GET", "https://localhost:" .. silent_port .. "/"))
        local elapsed = now() - t0
        assert.equal("timeout", info.kind)
        assert.is_true(elapsed < 1.2, "took " .. elapsed .. " s")
      end)

      it("fails with too_large on a body over max_body, by Content-Length or by count", function()
        local s = session{ max_body = 1000 }
        finally(function() s:close() end)
        local status, _, body = s:request("GET", url("/big/1000"))
        assert.equal(200, status)
        assert.equal(1000, #body)
        local message, info = failure(s:request("GET", url("/big/5000")))
        assert.equal("too_large", info.kind)
        assert.equal(63, info.curl_code)
        assert.matches("^response too large: ", message)
        -- No Content-Length: the write callback stops the transfer (libcurl
        -- 8.x may stop it first with CURLE_FILESIZE_EXCEEDED).
        message, info = failure(s:request("GET", url("/bigchunked/5000")))
        assert.equal("too_large", info.kind)
        if info.curl_code == 23 then
          assert.matches("max_body %(1000 bytes%) %(CURLE_WRITE_ERROR 23%)$", message)
        else
          assert.equal(63, info.curl_code)
        end
        -- the session is still usable
        status, _, body = s:request("GET", url("/hello"))
        assert.equal(200, status)
        assert.equal("hello\n", body)
      end)

      it("accepts a body over the default limit only when max_body allows it", function()
        local s = session()
        finally(function() s:close() end)
        local _, info = failure(s:request("GET", url("/bigchunked/1048577")))
        assert.equal("too_large", info.kind)
        local t = session{ max_body = 2 * 1048576 }
        finally(function() t:close() end)
        local status, _, body = t:request("GET", url("/bigchunked/1048577"))
        assert.equal(200, status)
        assert.equal(1048577, #body)
      end)

      it("fails with too_large when the response headers exceed 64 KiB", function()
        local s = session()
        finally(function() s:close() end)
        assert.equal(200, (s:request("GET", url("/headers/100"))))
        local message, info = failure(s:request("GET", url("/headers/1000")))
        assert.equal("too_large", info.kind)
        assert.matches("headers exceed 65536 bytes", message)
      end)

      it("fails with protocol on truncated, badly chunked or weird replies", function()
        local s = session()
        finally(function() s:close() end)
        local _, info = failure(s:request("GET", url("/partial")))
        assert.equal("protocol", info.kind)
        -- libcurl on mbedTLS reports the cut as a receive error
        assert.equal(core.version().ssl:find("^mbedTLS") and 56 or 18, info.curl_code)
        _, info = failure(s:request("GET", url("/badchunk")))
        assert.equal("protocol", info.kind)
        _, info = failure(s:request("GET", url("/weird")))
        assert.equal("protocol", info.kind)
        _, info = failure(s:request("GET", url("/ancient")))
        assert.equal("protocol", info.kind)
      end)

      it("fails with network on an empty reply", function()
        local s = session()
        finally(function() s:close() end)
        local message, info = failure(s:request("GET", url("/nothing")))
        assert.equal("network", info.kind)
        if core.version().ssl:find("^mbedTLS") then -- (the EOF without close_notify is a receive error)
          assert.matches("%(CURLE_RECV_ERROR 56%)$", message)
        else
          assert.equal(52, info.curl_code)
          assert.matches("%(CURLE_GOT_NOTHING 52%)$", message)
        end
      end)

      it("fails with network when the connection is reset or closed during the handshake", function()
        local s = session()
        finally(function() s:close() end)
        local message, info = failure(s:request("GET", "https://localhost:" .. reset_port .. "/"))
        assert.equal("network", info.kind, message)
        message, info = failure(s:request("GET", "https://localhost:" .. eof_port .. "/"))
        assert.equal("network", info.kind, message)
      end)

      it("fails with config when the body's file ends before its range, or cannot be read", function()
        local path = dir .. "/short.bin"
        tls.write_file(path, string.rep("s", 1000))
        local f = assert(io.open(path, "rb"))
        finally(function() f:close() end)
        local s = session()
        finally(function() s:close() end)
        local message, info = failure(s:request("PUT", url("/echo"), nil, { file = f, offset = 500, length = 1000 }))
        assert.equal("config", info.kind)
        assert.equal("cannot read the body's file: it ended 500 bytes into a range of 1000 "
                     .. "(CURLE_ABORTED_BY_CALLBACK 42)", message)
        -- a folder opens, but reads fail: the system's reason
        local folder = assert(io.open(dir, "rb"))
        finally(function() folder:close() end)
        message, info = failure(s:request("POST", url("/echo"), nil, { file = folder, offset = 0, length = 10 }))
        assert.equal("config", info.kind)
        assert.matches("^cannot read the body's file: Is a directory %(CURLE_ABORTED_BY_CALLBACK 42%)$", message)
        -- and the session goes on
        local status, _, raw = s:request("PUT", url("/echo"), nil, { file = f, offset = 990, length = 10 })
        assert.equal(200, status)
        assert.matches("\r\n\r\nssssssssss$", raw)
      end)

      it("counts failed transfers as requests", function()
        local s = session()
        finally(function() s:close() end)
        failure(s:request("GET", "https://127.0.0.1:1/"))
        failure(s:request("GET", url("/nothing")))
        assert.equal(2, s:stats().requests)
      end)
    end)

    describe("client certificates", function()
      local function mtls() return "https://localhost:" .. mtls_port .. "/" end

      it("authenticates with cert_file and key_file", function()
        local s = session{ cert_file = client_cert, key_file = client_key }
        finally(function() s:close() end)
        local status, _, body = s:request("GET", mtls())
        assert.equal(200, status)
        assert.matches("dps%-spec%-device", body)
      end)

      it("authenticates with PEM strings in memory", function()
        local s = session{ cert = read_file(client_cert), key = read_file(client_key) }
        finally(function() s:close() end)
        local status, _, body = s:request("GET", mtls())
        assert.equal(200, status)
        assert.matches("dps%-spec%-device", body)
      end)

      it("decrypts an encrypted key with key_password, file or memory", function()
        local s = session{ cert_file = client_cert, key_file = client_key_enc, key_password = KEY_PASSWORD }
        finally(function() s:close() end)
        assert.equal(200, (s:request("GET", mtls())))
        local t = session{ cert = read_file(client_cert), key = read_file(client_key_enc),
                           key_password = KEY_PASSWORD }
        finally(function() t:close() end)
        assert.equal(200, (t:request("GET", mtls())))
      end)

      it("fails with credentials on a missing certificate file", function()
        local s = session{ cert_file = dir .. "/no-such-cert.pem", key_file = client_key }
        finally(function() s:close() end)
        local message, info = failure(s:request("GET", mtls()))
        assert.equal("credentials", info.kind)
        assert.equal(58, info.curl_code)
        assert.matches("%(CURLE_SSL_CERTPROBLEM 58%)$", message)
      end)

      it("fails with credentials on a wrong pass phrase, without echoing it", function()
        local s = session{ cert_file = client_cert, key_file = client_key_enc, key_password = "wrong-pass-phrase" }
        finally(function() s:close() end)
        local message, info = failure(s:request("GET", mtls()))
        assert.equal("credentials", info.kind)
        assert.is_nil(message:find("wrong-pass-phrase", 1, true))
      end)

      it("fails with credentials on garbage PEM in memory", function()
        local s = session{ cert = "-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n",
                           key = read_file(client_key) }
        finally(function() s:close() end)
        local _, info = failure(s:request("GET", mtls()))
        assert.equal("credentials", info.kind)
      end)

      it("fails with credentials when the server requires a certificate we lack", function()
        local s = session()
        finally(function() s:close() end)
        local _, info = failure(s:request("GET", mtls()))
        -- libcurl on mbedTLS 2.28 speaks TLS 1.2 only, where the server's
        -- refusal is a bare handshake alert: no way to tell it from other
        -- handshake failures (the README's "crypto backend" notes say so)
        local bare_alert = tostring(core.version().ssl):find("mbedTLS/2%.") ~= nil
        assert.equal(bare_alert and "tls" or "credentials", info.kind)
      end)
    end)

    describe("through an HTTP CONNECT proxy", function()
      it("tunnels TLS and hides the proxy's CONNECT response headers", function()
        local s = session{ proxy = "http://127.0.0.1:" .. tunnel_port }
        finally(function() s:close() end)
        local status, headers, body = s:request("GET", url("/hello"))
        assert.equal(200, status)
        assert.equal("hello\n", body)
        assert.is_nil(headers["x-proxy"])
        assert.equal("a, b", headers["x-multi"])
        assert.equal(200, (s:request("GET", url("/hello"))))
        assert.equal(1, s:stats().connects)
        assert.matches("CONNECT localhost:" .. https_port .. " HTTP/1%.1", read_file(proxy_log))
      end)

      it("fails with proxy when the proxy refuses the tunnel", function()
        local s = session{ proxy = "http://127.0.0.1:" .. deny_port }
        finally(function() s:close() end)
        local _, info = failure(s:request("GET", url("/hello")))
        assert.equal("proxy", info.kind)
      end)

      it("fails with proxy when the proxy is unreachable", function()
        local s = session{ proxy = "http://127.0.0.1:1" }
        finally(function() s:close() end)
        local _, info = failure(s:request("GET", url("/hello")))
        assert.equal("proxy", info.kind)
        assert.equal(7, info.curl_code)
        local t = session{ proxy = "http://no-such-proxy.invalid:3128" }
        finally(function() t:close() end)
        _, info = failure(t:request("GET", url("/hello")))
        assert.equal("proxy", info.kind)
        assert.equal(5, info.curl_code)
      end)
    end)
  end)
end)
