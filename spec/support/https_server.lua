-- The HTTPS test server of spec/core_http_spec.lua, run in its own process
-- by an interpreter that has cqueues and luaossl (tls_server.server_lua()):
--
--   LUA spec/support/https_server.lua https PORTFILE CERT KEY
--     an HTTP/1.1 keep-alive server with the routes below, plus three
--     misbehaving listeners; writes "PORT SILENT RESET EOF" to PORTFILE
--   LUA spec/support/https_server.lua proxy PORTFILE TARGET tunnel|deny LOG
--     an HTTP CONNECT proxy to 127.0.0.1:TARGET that tunnels or refuses,
--     logging each request line to LOG; writes "PORT" to PORTFILE
--
-- Not a spec helper: busted never loads it.
local cqueues = require "cqueues"
local socket = require "cqueues.socket"
local context = require "openssl.ssl.context"
local x509 = require "openssl.x509"
local pkey = require "openssl.pkey"

local mode, portfile = arg[1], arg[2]
local cq = cqueues.new()
-- Socket errors (a client aborting its handshake…) are returned, not raised.
socket.onerror(function(_, _, why) return why end)

local function slurp(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("*a")
  f:close()
  return s
end

local function publish(...)
  local f = assert(io.open(portfile .. ".tmp", "w"))
  f:write(table.concat({ ... }, " "), "\n")
  f:close()
  assert(os.rename(portfile .. ".tmp", portfile))
end

local function listen()
  local srv = assert(socket.listen("127.0.0.1", 0))
  assert(srv:listen())
  local _, _, port = srv:localname()
  return srv, port
end

-- Reads one line without its CR LF; nil when the peer closed or went idle.
local function line_of(con)
  local l = con:read("*l")
  return l and (l:gsub("\r$", ""))
end

local function send(con, data)
  if #data > 0 then
    con:write(data)
    con:flush()
  end
end

local function response(status, headers, body)
  local out = { "HTTP/1.1 " .. status }
  for _, h in ipairs(headers) do out[#out + 1] = h end
  out[#out + 1] = "Content-Length: " .. #body
  return table.concat(out, "\r\n") .. "\r\n\r\n" .. body
end

-- Each route returns the bytes to send and whether to keep the connection;
-- raw is the whole request, n its number on the connection.
local routes = {}
routes["/hello"] = function()
  return response("200 OK", { "Content-Type: text/plain", "X-Multi: a", "X-Mixed-Case: Yes",
                              "X-Multi: b", "X-Folded: one", " two" }, "hello\n"), true
end
routes["/echo"] = function(raw) return response("200 OK", { "Content-Type: application/octet-stream" }, raw), true end
routes["/teapot"] = function() return response("418 I'm a teapot", {}, "short and stout"), true end
routes["/big"] = function(_, _, arg) return response("200 OK", {}, string.rep("x", tonumber(arg))), true end
routes["/bigchunked"] = function(_, _, arg)
  local n, out = tonumber(arg), { "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" }
  while n > 0 do
    local k = n > 4096 and 4096 or n
    out[#out + 1] = string.format("%x\r\n%s\r\n", k, string.rep("y", k))
    n = n - k
  end
  out[#out + 1] = "0\r\n\r\n"
  return table.concat(out), true
end
routes["/headers"] = function(_, _, arg)
  local h = {}
  for i = 1, tonumber(arg) do h[i] = "X-Fill-" .. i .. ": " .. string.rep("f", 100) end
  return response("200 OK", h, "filled"), true
end
routes["/early"] = function()
  return "HTTP/1.1 103 Early Hints\r\nX-Early: 1\r\nLink: </a>; rel=preload\r\n\r\n"
         .. response("200 OK", { "X-Final: 1" }, "ok"), true
end
routes["/close"] = function() return response("200 OK", {}, "bye"), false end
routes["/flaky"] = function(_, n)
  if n > 1 then return "", false end -- drop a request on a reused connection
  return response("200 OK", {}, "fresh"), true
end
routes["/flakyecho"] = function(raw, n) -- /flaky's drop, and an echo on a fresh connection
  if n > 1 then return "", false end
  return response("200 OK", {}, raw), true
end
routes["/nothing"] = function() return "", false end
routes["/partial"] = function() return "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789", false end
routes["/badchunk"] = function()
  return "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nbroken\r\n0\r\n\r\n", false
end
routes["/weird"] = function() return "HTTP/1.1 2x0 What\r\nContent-Length: 0\r\n\r\n", false end
routes["/ancient"] = function() return "this is not HTTP\r\n\r\n", false end

local function serve_http(con)
  local n = 0
  while true do
    con:settimeout(30)
    local line = line_of(con)
    if not line then return end
    n = n + 1
    local path = line:match("^%u+ (%S+) HTTP/1%.1$") or "/"
    local head, length = { line }, 0
    while true do
      local h = line_of(con)
      if not h then return end
      if h == "" then break end
      head[#head + 1] = h
      local v = h:match("^[Cc]ontent%-[Ll]ength:%s*(%d+)")
      if v then length = tonumber(v) end
    end
    local body = length > 0 and con:read(length) or ""
    local raw = table.concat(head, "\r\n") .. "\r\n\r\n" .. body
    -- endless headers of a kind that is not kept (chunked trailers, 103
    -- responses), 8 MiB of them unless the client gives up first, then a
    -- proper end
    local stream = path == "/trailers" or path == "/hints"
    if stream then
      local unit = path == "/trailers" and "X-Trailer: " .. string.rep("t", 1000) .. "\r\n"
        or "HTTP/1.1 103 Early Hints\r\nLink: </" .. string.rep("h", 1000) .. ">\r\n\r\n"
      local block = string.rep(unit, 64)
      if path == "/trailers" then
        send(con, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n")
      end
      for _ = 1, 8 * 1024 * 1024 / #block do
        local ok = con:write(block)
        if not ok or not con:flush() then return end
      end
      send(con, path == "/trailers" and "\r\n" or response("200 OK", {}, "ok"))
      return
    end
    if path == "/mute" then
      con:read("*l") -- until the client gives up and closes
      return
    end
    local base, arg = path:match("^(/[%a]+)/?(%d*)$")
    local route = routes[base or ""]
    local out, keep
    if route then
      out, keep = route(raw, n, arg)
    else
      out, keep = response("404 Not Found", {}, "no route"), true
    end
    send(con, out)
    if not keep then return end
  end
end

-- Copies from one socket to the other until EOF, then half-closes.
local function pump(from, to)
  while true do
    local data = from:read(-8192)
    if not data or #data == 0 then break end
    to:write(data)
    to:flush()
  end
  to:shutdown("w")
end

local srv, port = listen()
if mode == "https" then
  local ctx = context.new("TLS", true)
  assert(ctx:setCertificate(x509.new(slurp(arg[3]))))
  assert(ctx:setPrivateKey(pkey.new(slurp(arg[4]))))
  local silent, silent_port = listen() -- accepts TCP (backlog), never answers
  local reset, reset_port = listen() -- resets every connection during the handshake
  local eof, eof_port = listen() -- reads the ClientHello, then closes
  publish(port, silent_port, reset_port, eof_port)
  cq:wrap(function() cqueues.sleep(900) silent:close() end) -- keeps it referenced
  cq:wrap(function()
    for con in reset:clients() do
      cqueues.sleep(0.2) -- the ClientHello arrives and stays unread:
      con:close() -- closing with unread data sends a TCP RST
    end
  end)
  cq:wrap(function()
    for con in eof:clients() do
      con:setmode("b", "b")
      con:settimeout(5)
      con:read(-4096)
      con:close()
    end
  end)
  cq:wrap(function()
    for con in srv:clients() do
      cq:wrap(function()
        con:setmode("b", "b")
        if con:starttls(ctx, 5) then serve_http(con) end
        con:close()
      end)
    end
  end)
elseif mode == "proxy" then
  local target, behaviour, log = tonumber(arg[3]), arg[4], arg[5]
  publish(port)
  cq:wrap(function()
    for con in srv:clients() do
      cq:wrap(function()
        con:setmode("b", "b")
        con:settimeout(10)
        local line = line_of(con)
        repeat local h = line_of(con) until not h or h == ""
        local f = io.open(log, "a")
        if f then f:write(tostring(line), "\n") f:close() end
        local up = behaviour == "tunnel" and socket.connect("127.0.0.1", target)
        if up and up:connect(5) then
          up:setmode("b", "b")
          up:settimeout(10)
          send(con, "HTTP/1.1 200 Connection established\r\nX-Proxy: yes\r\n\r\n")
          local done = cqueues.new()
          done:wrap(pump, con, up)
          done:wrap(pump, up, con)
          done:loop()
          up:close()
        else
          send(con, "HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
        end
        con:close()
      end)
    end
  end)
end
-- Never outlive a forgotten spec run by much.
cq:wrap(function() cqueues.sleep(900) os.exit(0) end)
assert(cq:loop())
